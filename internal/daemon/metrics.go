package daemon

import (
	"time"

	osync "github.com/outpost-edge/outpost/sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics is the daemon's own Prometheus registry (no global state).
type metrics struct {
	reg      *prometheus.Registry
	infer    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	watchOut *prometheus.CounterVec
	stored   *prometheus.CounterVec
}

func newMetrics(d *Daemon) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.infer = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_inferences_total",
		Help: "Inferences by model and outcome (ok, error)."}, []string{"model", "outcome"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "outpost_inference_seconds",
		Help: "Inference latency (decode to answer) by model.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"model"})
	m.watchOut = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_watch_files_total",
		Help: "Files taken from the watch folder, by outcome (done, failed, refused unread)."}, []string{"outcome"})
	m.stored = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_results_total",
		Help: "Results after inference, by outcome: stored in the outbox, or refused (queue or disk full) this process."}, []string{"outcome"})
	m.reg.MustRegister(m.infer, m.latency, m.watchOut, m.stored, queueCollector{d},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if up := d.dev.Uplink(); up != nil {
		// The counters as the sync engine declares them (one place: their
		// JSON names, metric names and help text), read in place.
		m.reg.MustRegister(up.Counters()...)
		if f := d.dev.Fetcher(); f != nil {
			m.reg.MustRegister(f.Counters(),
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_update_progress_ratio", Help: "Chunks stored of the latest model update (1 when installed)."},
					func() float64 {
						if u := f.Status(); u != nil && u.Chunks > 0 {
							return float64(u.Have) / float64(u.Chunks)
						}
						return 0
					}),
			)
		}
		if b := d.dev.Budget(); b != nil {
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_sync_budget_used_bytes", Help: "Bytes on the wire today (what the daily budget counts)."},
				func() float64 { return float64(b.Spent(time.Now())) }))
			for _, tier := range []string{osync.TierNameLabels, osync.TierNameEvidence, osync.TierNameUpdates, osync.TierNameSession} {
				m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_sync_tier_bytes_today",
					Help: "Bytes on the wire today, by tier.", ConstLabels: prometheus.Labels{"tier": tier}},
					func() float64 { return float64(b.ByTier(time.Now())[tier]) }))
			}
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_sync_days_to_drain",
				Help: "Estimated days to send the backlog at the daily budget (or the recent daily average); -1 unknown."},
				func() float64 {
					st, err := d.dev.Outbox().Stats()
					if err != nil {
						return -1
					}
					return b.DaysToDrain(time.Now(), st.Bytes+st.EvidenceBytes)
				}))
		}
	}
	return m
}

func (m *metrics) observe(model string, took time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.infer.WithLabelValues(model, outcome).Inc()
	if err == nil {
		m.latency.WithLabelValues(model).Observe(took.Seconds())
	}
}

// queueCollector exports the outbox's figures from one Stats read per
// scrape (it was one read per metric).
type queueCollector struct{ d *Daemon }

var queueDescs = struct{ refused, evicted, expired, records, bytes *prometheus.Desc }{
	prometheus.NewDesc("outpost_queue_refused_total", "Results the outbox refused (cap reached, disk full), since the outbox was created.", nil, nil),
	prometheus.NewDesc("outpost_queue_evicted_total", "Records evicted under queue_policy drop-lowest, since the outbox was created.", nil, nil),
	prometheus.NewDesc("outpost_queue_expired_total", "Records deleted past their TTL, since the outbox was created.", nil, nil),
	prometheus.NewDesc("outpost_queue_records", "Records waiting in the outbox.", nil, nil),
	prometheus.NewDesc("outpost_queue_bytes", "Encoded bytes waiting in the outbox.", nil, nil),
}

func (queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueDescs.refused, queueDescs.evicted, queueDescs.expired, queueDescs.records, queueDescs.bytes} {
		ch <- d
	}
}

func (q queueCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := q.d.dev.Outbox().Stats()
	if err != nil {
		return // the scrape says nothing rather than zeros
	}
	for _, v := range []struct {
		d *prometheus.Desc
		t prometheus.ValueType
		n int64
	}{{queueDescs.refused, prometheus.CounterValue, st.Refused}, {queueDescs.evicted, prometheus.CounterValue, st.Evicted},
		{queueDescs.expired, prometheus.CounterValue, st.Expired}, {queueDescs.records, prometheus.GaugeValue, st.Count},
		{queueDescs.bytes, prometheus.GaugeValue, st.Bytes}} {
		ch <- prometheus.MustNewConstMetric(v.d, v.t, float64(v.n))
	}
}
