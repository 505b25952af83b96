package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	gosync "sync"
	"time"

	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/outbox"
	"github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/runtime/onnx"
	osync "github.com/outpost-edge/outpost/sync"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

// Daemon is one running outpost serve.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	version string
	started time.Time

	env  *onnx.Env
	reg  *models.Registry
	mu   gosync.Mutex
	pipe map[string]*loaded // model name -> opened pipeline, opened on first use

	ob      *outbox.Outbox
	up      *osync.Uplink
	budget  *osync.Budget
	sem     chan struct{} // inferences running
	uploads chan struct{} // request bodies being received
	decode  *models.DecodeBudget

	recentMu gosync.Mutex
	recent   []stored // newest last, bounded

	metrics *metrics
	watchSt *watchState
	// watchRetry: how long a file refused for lack of room waits in the inbox.
	watchRetry time.Duration
	idem       *idempotency
	// Set once Run starts listening.
	addr chan string
}

type loaded struct {
	m    *models.Model
	p    models.Pipeline
	sess []runtime.Session
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
}

const recentMax = 100

// decodeBudget bounds decoded image memory across concurrent requests.
// With the unit's MemoryMax=256M: this, max_concurrent+1 request bodies of
// at most max_body_bytes, ONNX Runtime and the Go runtime must fit
// (TestServe_LargePhotosMemory measures the peak).
const decodeBudget = 64 << 20

// watchEvery is the watch folder's poll period.
const watchEvery = 500 * time.Millisecond

// New opens everything the daemon needs; Close releases it.
func New(cfg Config, version string, log *slog.Logger) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DeviceID == "" {
		h, _ := os.Hostname()
		cfg.DeviceID = h
	}
	d := &Daemon{cfg: cfg, log: log, version: version, started: time.Now(), pipe: map[string]*loaded{},
		sem: make(chan struct{}, cfg.MaxConcurrent), uploads: make(chan struct{}, cfg.MaxConcurrent+1), addr: make(chan string, 1), watchSt: &watchState{}, watchRetry: 30 * time.Second,
		idem: newIdempotency(idemMax, idemTTL), decode: models.NewDecodeBudget(decodeBudget)}
	var err error
	lib, err := onnx.FindLibrary(cfg.ORTLib)
	if err != nil {
		return nil, err
	}
	if d.env, err = onnx.NewEnv(onnx.Options{LibraryPath: lib}); err != nil {
		return nil, err
	}
	if d.reg, err = models.LoadDir(cfg.ModelsDir); err != nil {
		d.Close()
		return nil, err
	}
	for _, p := range d.reg.Problems() {
		log.Error("model refused", "dir", p.Dir, "err", p.Err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		d.Close()
		return nil, fmt.Errorf("data dir: %w", err)
	}
	d.ob, err = outbox.Open(filepath.Join(cfg.DataDir, "outbox.db"), outbox.Options{MaxBytes: cfg.QueueMaxBytes,
		MaxRecords: cfg.QueueMaxItems, Policy: outbox.Policy(cfg.QueuePolicy), Logger: log})
	if err != nil {
		d.Close()
		return nil, err
	}
	if cfg.Broker != "" {
		if err := d.setupUplink(); err != nil {
			d.Close()
			return nil, err
		}
	}
	d.metrics = newMetrics(d)
	return d, nil
}

func (d *Daemon) setupUplink() error {
	dial, err := mqtt.Dialer(mqtt.Options{Broker: d.cfg.Broker, Username: d.cfg.MQTTUsername, Password: d.cfg.MQTTPassword,
		CAFile: d.cfg.MQTTCA, CertFile: d.cfg.MQTTCert, KeyFile: d.cfg.MQTTKey, CleanSession: true})
	if err != nil {
		return err
	}
	daily, err := osync.ParseBytes(d.cfg.DailyBudget)
	if err != nil {
		return fmt.Errorf("config: daily_budget: %w", err)
	}
	if daily > 0 {
		if d.budget, err = osync.LoadBudget(daily, filepath.Join(d.cfg.DataDir, "budget.json")); err != nil {
			return err
		}
	}
	probe, err := mqtt.Prober(d.cfg.Broker)
	if err != nil {
		return err
	}
	d.up, err = osync.NewUplink(d.ob, dial, osync.UplinkOptions{Device: d.cfg.DeviceID, Budget: d.budget,
		Version: d.version, Logger: d.log, Probe: probe})
	return err
}

// Close releases models, the outbox and ONNX Runtime. Safe after a failed New.
func (d *Daemon) Close() error {
	d.mu.Lock()
	for _, l := range d.pipe {
		for _, s := range l.sess {
			s.Close()
		}
	}
	d.pipe = map[string]*loaded{}
	d.mu.Unlock()
	var err error
	if d.ob != nil {
		err = d.ob.Close()
	}
	if d.env != nil {
		d.env.Close()
	}
	return err
}

// Addr is the address the HTTP server listens on, once it does.
func (d *Daemon) Addr() <-chan string { return d.addr }

// pipeline opens a model's pipeline on first use (a Pi need not hold every
// model in memory if the kiosk only uses one).
func (d *Daemon) pipeline(name string) (*loaded, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l, ok := d.pipe[name]; ok {
		return l, nil
	}
	m, err := d.reg.Get(name)
	if err != nil {
		return nil, err
	}
	load := d.env.Loader(onnx.SessionOptions{IntraOpThreads: d.cfg.Threads})
	sess, err := m.Open(load)
	if err != nil {
		return nil, err
	}
	l := &loaded{m: m, sess: []runtime.Session{sess}}
	opts := models.PipelineOptions{Lang: d.cfg.Lang, Decode: d.decode}
	if m.Task == models.TaskKeywordSpotting {
		if vm, err := d.reg.Get("silero-vad"); err == nil {
			vs, err := vm.Open(load)
			if err != nil {
				sess.Close()
				return nil, err
			}
			l.sess = append(l.sess, vs)
			opts.Segmenter, err = models.NewVAD(vs, &vm.Manifest, models.VADOptions{MinSpeech: models.Duration(100 * time.Millisecond), SpeechPad: models.Duration(50 * time.Millisecond)})
			if err != nil {
				return nil, err
			}
		}
	}
	if l.p, err = models.NewPipeline(m, sess, opts); err != nil {
		for _, s := range l.sess {
			s.Close()
		}
		return nil, err
	}
	d.pipe[name] = l
	return l, nil
}

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
		res, err = d.inferAndStore(ctx, model, name, data, lang, prio)
		return res, err
	}
	return d.inferAndStore(ctx, model, name, data, lang, prio)
}

func (d *Daemon) inferAndStore(ctx context.Context, model, name string, data []byte, lang string, prio outbox.Priority) (*stored, error) {
	l, err := d.pipeline(model)
	if err != nil {
		return nil, err
	}
	p := l.p
	if lang != "" && lang != d.cfg.Lang && l.m.Task == models.TaskImageClassification {
		// Advice language per request: a light wrapper, the session is shared.
		p, err = models.NewPipeline(l.m, l.sess[0], models.PipelineOptions{Lang: lang, Decode: d.decode})
		if err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	res, err := p.Infer(ctx, models.Input{Name: name, Data: data})
	d.metrics.observe(model, time.Since(t0), err)
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(res.Output)
	if err != nil {
		return nil, err
	}
	if cr, ok := res.Output.(*models.ClassResult); ok && prio == outbox.Normal && cr.Label == "blight" {
		prio = outbox.Alert // spreads in days: goes first and may spend the budget
	}
	rec := &outbox.Record{Device: d.cfg.DeviceID, Model: res.Model, Version: res.Version, Task: string(res.Task), Priority: prio, Output: out}
	id, err := d.ob.Append(ctx, rec, nil)
	if err != nil {
		d.metrics.stored.WithLabelValues("refused").Inc()
		return nil, err
	}
	d.metrics.stored.WithLabelValues("stored").Inc()
	if d.up != nil {
		d.up.Notify()
	}
	s := &stored{ID: id.String(), Created: rec.Created.UTC(), Model: res.Model, Version: res.Version, Task: res.Task,
		Input: name, Result: res.Output, Timings: res.Timings}
	d.recentMu.Lock()
	d.recent = append(d.recent, *s)
	if len(d.recent) > recentMax {
		d.recent = d.recent[len(d.recent)-recentMax:]
	}
	d.recentMu.Unlock()
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
	if d.up != nil {
		wg.Add(1)
		go func() { defer wg.Done(); d.up.Run(bg) }()
	}
	if d.cfg.Inbox != "" {
		wg.Add(1)
		go func() { defer wg.Done(); d.watch(bg, d.cfg.Inbox, watchEvery) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); d.expireLoop(bg) }()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	d.log.Info("outpost serving", "addr", ln.Addr().String(), "device", d.cfg.DeviceID, "models", len(d.reg.Models()), "broker", d.cfg.Broker)
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

func (d *Daemon) expireLoop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.ob.Expire(now)
		}
	}
}

// statusBody is GET /v1/status.
func (d *Daemon) statusBody() map[string]any {
	st, _ := d.ob.Stats()
	var ms []string
	for _, m := range d.reg.Models() {
		ms = append(ms, m.Name)
	}
	s := map[string]any{"device": d.cfg.DeviceID, "version": d.version, "uptime_s": int(time.Since(d.started).Seconds()),
		"models": ms, "queue": map[string]any{"count": st.Count, "bytes": st.Bytes, "oldest_age_s": int(st.OldestAge.Seconds()),
			// Lost by policy or never stored: totals that survive restarts.
			"refused_total": st.Refused, "evicted_total": st.Evicted, "expired_total": st.Expired},
		"sync": map[string]any{"broker": d.cfg.Broker != "", "last_sync": nil}}
	if !st.LastAck.IsZero() {
		s["sync"].(map[string]any)["last_sync"] = st.LastAck
	}
	if d.cfg.Inbox != "" {
		w := d.watchSt.snapshot()
		if why := d.watchSt.stalled(time.Now(), watchEvery); why != "" {
			w["stuck"] = why
		}
		s["watch"] = w
	}
	if d.up != nil {
		us := d.up.Stats()
		sy := map[string]any{"broker": true, "records_synced": us.Records, "connects": us.Connects,
			"rejected_by_hub": us.Rejected, "refused_batches": us.Refused, "stray_acks": us.StrayAcks, "last_sync": nil}
		if !st.LastAck.IsZero() {
			sy["last_sync"] = st.LastAck
		}
		if d.budget != nil {
			sy["budget_left_bytes"] = d.budget.Remaining(time.Now())
		}
		s["sync"] = sy
	}
	return s
}
