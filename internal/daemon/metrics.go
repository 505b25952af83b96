package daemon

import (
	"time"

	"github.com/outpost-edge/outpost/outbox"
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
	total := func(f func(st outboxStats) int64) func() float64 {
		return func() float64 {
			st, err := d.dev.Outbox().Stats()
			if err != nil {
				return 0
			}
			return float64(f(st))
		}
	}
	queue := func(f func(count, bytes float64) float64) func() float64 {
		return func() float64 {
			st, err := d.dev.Outbox().Stats()
			if err != nil {
				return 0
			}
			return f(float64(st.Count), float64(st.Bytes))
		}
	}
	m.reg.MustRegister(m.infer, m.latency, m.watchOut, m.stored,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_queue_refused_total",
			Help: "Results the outbox refused (cap reached, disk full), since the outbox was created."}, total(func(st outboxStats) int64 { return st.Refused })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_queue_evicted_total",
			Help: "Records evicted under queue_policy drop-lowest, since the outbox was created."}, total(func(st outboxStats) int64 { return st.Evicted })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_queue_expired_total",
			Help: "Records deleted past their TTL, since the outbox was created."}, total(func(st outboxStats) int64 { return st.Expired })),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_queue_records", Help: "Records waiting in the outbox."},
			queue(func(c, _ float64) float64 { return c })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_queue_bytes", Help: "Encoded bytes waiting in the outbox."},
			queue(func(_, b float64) float64 { return b })),
	)
	if d.dev.Uplink() != nil {
		stat := func(f func() int64) func() float64 { return func() float64 { return float64(f()) } }
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_sync_batches_acked_total", Help: "Batches the collector acknowledged."},
				stat(func() int64 { return d.dev.Uplink().Stats().Batches })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_sync_records_acked_total", Help: "Records deleted after the collector's ack."},
				stat(func() int64 { return d.dev.Uplink().Stats().Records })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_sync_resent_total", Help: "Batches resent after no ack."},
				stat(func() int64 { return d.dev.Uplink().Stats().Resent })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_sync_rejected_total", Help: "Records the hub rejected for good (dropped)."},
				stat(func() int64 { return d.dev.Uplink().Stats().Rejected })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_sync_refused_batches_total", Help: "Batches the hub refused (records kept, resent after a backoff)."},
				stat(func() int64 { return d.dev.Uplink().Stats().Refused })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_sync_stray_acks_total", Help: "Acks naming batches or records this device did not send; ignored."},
				stat(func() int64 { return d.dev.Uplink().Stats().StrayAcks })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_sync_forged_acks_total", Help: "Acks not signed by a pinned hub key; nothing deleted."},
				stat(func() int64 { return d.dev.Uplink().Stats().ForgedAcks })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_sync_mismatched_acks_total", Help: "Records an ack named with other bytes than those sent (substituted on the way); kept."},
				stat(func() int64 { return d.dev.Uplink().Stats().Mismatched })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_sync_connect_failures_total", Help: "Failed broker connections."},
				stat(func() int64 { return d.dev.Uplink().Stats().ConnectFails })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_sync_wire_bytes_total", Help: "Estimated bytes on the wire, both directions."},
				stat(func() int64 { return d.dev.Uplink().Stats().WireBytes })),
		)
		if f := d.dev.Fetcher(); f != nil {
			m.reg.MustRegister(
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_update_chunks_total", Help: "Model package chunks downloaded and stored."},
					stat(func() int64 { return f.Stats().Chunks })),
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_update_resent_chunks_total", Help: "Model package chunks asked for again (lost link, timeout)."},
					stat(func() int64 { return f.Stats().Resent })),
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_update_refused_total", Help: "Model updates refused (signature, digest, downgrade, size, health check, crash loop)."},
					stat(func() int64 { return f.Stats().Refused })),
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_update_installed_total", Help: "Model updates installed by this process."},
					stat(func() int64 { return f.Stats().Installed })),
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_update_wire_bytes_total", Help: "Estimated bytes on the wire for model updates, both directions."},
					stat(func() int64 { return f.Stats().WireBytes })),
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
			for _, tier := range []string{osync.TierNameLabels, osync.TierNameEvidence, osync.TierNameUpdates} {
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

type outboxStats = outbox.Stats
