// Package daemon is `outpost serve`: a local HTTP API, the kiosk page, a
// watch folder and Prometheus metrics around one device (internal/device).
// Library packages never import it.
package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	gosync "sync"
	"time"

	"github.com/outpost-edge/outpost/internal/device"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// Config is the device's configuration (internal/device).
type Config = device.Config

// Defaults returns a Config with every default filled in.
func Defaults() Config { return device.Defaults() }

// Daemon is one running outpost serve.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	version string
	started time.Time
	dev     *device.Device

	sem     chan struct{} // inferences running
	uploads chan struct{} // request bodies being received

	speech       *speech
	recentMu     gosync.Mutex
	recent       []stored // newest last, bounded; kept in HistoryFile
	historyDirty bool     // recent changed since it was saved (recentMu)

	metrics *metrics
	watchSt *watchState
	// watchRetry: how long a file refused for lack of room waits in the inbox.
	watchRetry time.Duration
	idem       *idempotency
	// Set once Run starts listening.
	addr chan string
}

// stored is a result as the kiosk sees it.
type stored struct {
	ID      string         `json:"id"`
	Created time.Time      `json:"created"`
	Model   string         `json:"model"`
	Version string         `json:"version"`
	Task    models.Task    `json:"task"`
	Input   string         `json:"input,omitempty"`
	Result  any            `json:"result"`
	Timings models.Timings `json:"timings_ms"`
	// EvidenceShared: the photo or recording will go to the hub for an
	// expert (the sharing policy allowed it for this answer).
	EvidenceShared bool          `json:"evidence_shared,omitempty"`
	Review         *osync.Review `json:"review,omitempty"` // an expert's answer, once received
}

const recentMax = 100

// decodeBudget bounds decoded image memory across concurrent requests.
// With the unit's MemoryMax=256M: this, max_concurrent+1 request bodies of
// at most max_body_bytes, ONNX Runtime and the Go runtime must fit
// (TestServe_LargePhotosMemory measures the peak).
const decodeBudget = 64 << 20

// watchEvery is the watch folder's poll period.
const watchEvery = 500 * time.Millisecond

// New opens the device and everything serve adds; Close releases it.
func New(cfg Config, version string, log *slog.Logger) (*Daemon, error) {
	d := &Daemon{log: log, version: version, started: time.Now(),
		sem: make(chan struct{}, cfg.MaxConcurrent), uploads: make(chan struct{}, cfg.MaxConcurrent+1),
		addr: make(chan string, 1), watchSt: &watchState{}, watchRetry: 30 * time.Second,
		idem: newIdempotency(idemMax, idemTTL)}
	dev, err := device.Open(cfg, device.Options{Version: version, Logger: log, DecodeBudget: decodeBudget, Guard: true,
		Observe: func(model string, took time.Duration, err error) { d.metrics.observe(model, took, err) }})
	if err != nil {
		return nil, err
	}
	d.dev, d.cfg = dev, dev.Config()
	// Every model is opened once now: one that does not load is shown as
	// broken in /v1/models and refused with 503, not offered and failing
	// with a 500 on first use.
	dev.CheckModels()
	d.speech = newSpeech(d)
	d.metrics = newMetrics(d)
	d.loadHistory()
	return d, nil
}

// Device is the device the daemon serves.
func (d *Daemon) Device() *device.Device { return d.dev }

// Close releases the device. Safe after a failed New.
func (d *Daemon) Close() error {
	if d.dev == nil {
		return nil
	}
	return d.dev.Close()
}

// Addr is the address the HTTP server listens on, once it does.
func (d *Daemon) Addr() <-chan string { return d.addr }

// InferAndStore runs a model and appends the result durably; it returns
// only after the append is on disk.
//
// A non-empty key (the HTTP Idempotency-Key) makes a retry of the same
// request answer with the first result instead of storing a second one.
func (d *Daemon) InferAndStore(ctx context.Context, model, name string, data []byte, lang string, prio outbox.Priority, key string) (*stored, error) {
	if key != "" {
		done, first, err := d.idem.begin(ctx, model+"\x00"+key)
		if err != nil {
			return nil, err
		}
		if first != nil {
			return first, nil
		}
		var res *stored
		defer func() { done(res) }()
		// Kept in the outbox beside the record: a retry after a restart
		// finds it (it stored a second record before: 5 records for 3 keys).
		if id, ok := d.dev.Outbox().Keyed(model+"\x00"+key, idemTTL); ok {
			res = d.storedFor(id)
			return res, nil
		}
		res, err = d.inferAndStore(ctx, model, name, data, lang, prio, model+"\x00"+key)
		return res, err
	}
	return d.inferAndStore(ctx, model, name, data, lang, prio, "")
}

// storedFor answers a retried request with the result stored the first
// time: in full while it waits on the device, else its ID (it has reached
// the hub and left the device).
func (d *Daemon) storedFor(id outbox.ID) *stored {
	s := &stored{ID: id.String()}
	if rec, err := d.dev.Outbox().Get(id); err == nil && rec != nil {
		s.Created, s.Model, s.Version, s.Task = rec.Created.UTC(), rec.Model, rec.Version, models.Task(rec.Task)
		s.Result = json.RawMessage(rec.Output)
	}
	return s
}

func (d *Daemon) inferAndStore(ctx context.Context, model, name string, data []byte, lang string, prio outbox.Priority, key string) (*stored, error) {
	res, err := d.dev.Infer(ctx, model, models.Input{Name: name, Data: data}, lang)
	if err != nil {
		return nil, err
	}
	rec, err := d.dev.StoreKeyed(ctx, res, prio, data, key)
	if err != nil {
		d.metrics.stored.WithLabelValues("refused").Inc()
		return nil, err
	}
	d.metrics.stored.WithLabelValues("stored").Inc()
	s := &stored{ID: res.ID, Created: rec.Created.UTC(), Model: res.Model, Version: res.Version, Task: res.Task,
		Input: name, Result: res.Output, Timings: res.Timings, EvidenceShared: rec.Evidence != nil}
	d.recentMu.Lock()
	d.recent = append(d.recent, *s)
	if len(d.recent) > recentMax {
		d.recent = d.recent[len(d.recent)-recentMax:]
	}
	d.historyDirty = true
	d.recentMu.Unlock()
	// The answer as the record holds it, already JSON: the response need
	// not encode it a second time (the kiosk's list keeps the object).
	s.Result = json.RawMessage(rec.Output)
	return s, nil
}

// Run serves until ctx ends, then shuts down in order: stop accepting,
// finish in-flight requests (their appends complete), stop the watcher,
// let the uplink publish its offline status. The outbox stays open for
// Close.
func (d *Daemon) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", d.cfg.Listen, err)
	}
	d.addr <- ln.Addr().String()
	srv := &http.Server{Handler: d.routes(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: bodyTimeout + 10*time.Second,
		WriteTimeout: 2 * time.Minute, IdleTimeout: time.Minute}
	var wg gosync.WaitGroup
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	if d.cfg.Inbox != "" {
		wg.Add(1)
		go func() { defer wg.Done(); d.watch(bg, d.cfg.Inbox, watchEvery) }()
	}
	wg.Add(3)
	go func() { defer wg.Done(); d.dev.Run(bg) }() // the device's own work: sync, updates, housekeeping
	go func() { defer wg.Done(); d.historyLoop(bg) }()
	go func() { defer wg.Done(); d.expireKeys(bg) }()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	d.log.Info("outpost serving", "addr", ln.Addr().String(), "device", d.cfg.DeviceID, "models", len(d.dev.Registry().Models()), "broker", device.RedactURL(d.cfg.Broker))
	select {
	case err := <-errc:
		stopBG()
		wg.Wait()
		return err
	case <-ctx.Done():
	}
	d.log.Info("shutting down: intake stopped, finishing in-flight work (signal again to exit now)")
	sctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	stopBG()
	wg.Wait()
	d.log.Info("stopped cleanly")
	return err
}

// expireKeys forgets the HTTP API's idempotency keys after idemTTL: they
// are the daemon's, so their housekeeping is too (the device's own runs in
// device.Run).
func (d *Daemon) expireKeys(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.dev.Outbox().ExpireKeys(idemTTL)
		}
	}
}

// statusBody is GET /v1/status.
func (d *Daemon) statusBody() device.Status {
	st, _ := d.dev.Outbox().Stats()
	s := device.Status{Device: d.cfg.DeviceID, Version: d.version, UptimeS: int(time.Since(d.started).Seconds()),
		Queue: device.QueueStatus{Count: st.Count, Bytes: st.Bytes, OldestAgeS: int(st.OldestAge.Seconds()),
			Refused: st.Refused, Evicted: st.Evicted, Expired: st.Expired},
		Sync:      device.SyncStatus{Broker: d.cfg.Broker != ""},
		Installed: d.dev.InstalledModels(), Variants: d.dev.Variants(), Clock: d.dev.Clock(), Sharing: d.sharing(), Trust: d.dev.Trust(),
		Speech:   device.SpeechStatus{Requests: d.speech.requests.Load(), CacheHits: d.speech.hits.Load(), Unavailable: d.speech.unavailable.Load()},
		Evidence: st.EvidenceBytes}
	for _, m := range d.dev.Registry().Models() {
		s.Models = append(s.Models, m.Name)
	}
	if !st.LastAck.IsZero() {
		s.Sync.LastSync = &st.LastAck
	}
	if d.cfg.Inbox != "" {
		w := d.watchSt.snapshot()
		w.Stuck = d.watchSt.stalled(time.Now(), watchEvery)
		s.Watch = &w
	}
	if up := d.dev.Uplink(); up != nil {
		us, ev := up.Stats(), up.EvidenceStats()
		y := &s.Sync
		y.Connected, y.RecordsSynced, y.Connects, y.RejectedByHub, y.RefusedBatches = up.Connected(), us.Records, us.Connects, us.Rejected, us.Refused
		y.StrayAcks, y.MismatchedAcks, y.ForgedAcks, y.Evidence = us.StrayAcks, us.Mismatched, us.ForgedAcks, &ev
		if b := d.dev.Budget(); b != nil {
			if b.Daily > 0 {
				left := b.Remaining(time.Now())
				y.BudgetLeft = &left
			}
			y.BudgetByTier = b.ByTier(time.Now())
			y.Bandwidth = d.bandwidth(st)
		}
		// Bytes on the wire this process, per tier.
		y.WireByTier = map[string]int64{osync.TierNameLabels: us.WireBytes, osync.TierNameEvidence: ev.WireBytes,
			osync.TierNameUpdates: d.dev.Fetcher().Stats().WireBytes}
	}
	if f := d.dev.Fetcher(); f != nil {
		s.Update = &device.UpdateReport{Latest: f.Status(), Stats: f.Stats()}
	}
	return s
}

// sharing is what /v1/status says this device shares: the policy per
// model and the same in plain words, in the configured language and in
// every kiosk language (the kiosk shows the user's).
func (d *Daemon) sharing() device.SharingStatus {
	var names []string
	policies := map[string]device.SharePolicy{}
	tasks := map[string]string{}
	for _, m := range d.dev.Registry().Models() {
		names = append(names, m.Name)
		policies[m.Name] = d.cfg.Policy(m.Name)
		tasks[m.Name] = string(m.Task)
	}
	text := map[string][]string{}
	for _, l := range models.Languages {
		text[l] = d.cfg.SharingText(names, tasks, l)
	}
	return device.SharingStatus{Policies: policies, Text: text[d.cfg.Lang], TextByLang: text}
}

// bandwidth is the report of /v1/status and `outpost status --bandwidth`:
// bytes on the wire per day and per tier (30 days), the daily budget and
// what is left of it, the backlog, and the days it takes to send it.
func (d *Daemon) bandwidth(st outbox.Stats) *device.BandwidthReport {
	b, now := d.dev.Budget(), time.Now()
	out := &device.BandwidthReport{Days: b.Days(now), DailyBudget: b.Daily, Backlog: st.Bytes + st.EvidenceBytes}
	if b.Daily > 0 {
		left := b.Remaining(now)
		out.LeftToday = &left
	}
	if days := b.DaysToDrain(now, out.Backlog); days >= 0 {
		r := math.Round(days*10) / 10
		out.DaysToDrain = &r
	}
	return out
}
