// Package device is the one place a Config becomes a running device: the
// ONNX Runtime environment, the model registry, pipelines opened on first
// use (one per model and language), the outbox and the uplink. `outpost
// serve`, `infer --data-dir`, `sync --once`, the watch folder and --demo
// all go through Open; none assembles these parts itself. It knows no
// HTTP (litestream's Store: Open, use, Close).
package device

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/outbox"
	"github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/runtime/onnx"
	osync "github.com/outpost-edge/outpost/sync"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

// OutboxFile is the outbox's file name in the data dir.
const OutboxFile = "outbox.db"

// Options are how a caller uses the device; Config is what it is.
type Options struct {
	Version string
	Logger  *slog.Logger
	// NoOutbox: only infer (`outpost infer` without --data-dir).
	NoOutbox bool
	// NoUplink: do not set up the uplink even if a broker is configured.
	NoUplink bool
	// NoModels: no registry (sync and queue commands run no models).
	NoModels bool
	// VAD overrides the manifest's VAD settings (CLI flags).
	VAD models.VADOptions
	// DecodeBudget bounds decoded image memory across concurrent requests;
	// 0: unbounded (one request at a time, as in the CLI).
	DecodeBudget int64
	// Observe, if set, is told of every inference (metrics).
	Observe func(model string, took time.Duration, err error)
	// Guard: this is the daemon. At Open, repair an interrupted model
	// swap and count the start against a recent update (crash-loop
	// rollback); record activations.
	Guard bool
}

// Device is one configured device. Safe for concurrent use.
type Device struct {
	cfg Config
	o   Options
	log *slog.Logger

	reg    *models.Registry
	ob     *outbox.Outbox
	up     *osync.Uplink
	budget *osync.Budget
	decode *models.DecodeBudget

	fetch      *osync.Fetcher
	reviews    *reviewStore
	warnings   *warningStore
	key        ed25519.PrivateKey // signs batches and bundles (DeviceKeyFile)
	clock      *clockWatch
	rolledBack *osync.UpdateStatus // set by guard when it rolled a model back
	guarded    bool                // this process runs under an activation (guard or install)
	installMu  gosync.Mutex

	mu   gosync.Mutex
	env  *onnx.Env          // opened with the first pipeline
	open map[string]*opened // model name -> sessions
	// broken names models whose files could not be loaded, with why: shown
	// as broken in /v1/models and refused with 503, not offered.
	broken map[string]string
	pipes  map[[2]string]pipeEntry // (model, lang) -> pipeline
	// variants: the variant each model runs on this device (VariantsFile).
	variants map[string]VariantChoice
	swaps    int64
	once     gosync.Once
}

type pipeEntry struct {
	p  models.Pipeline
	op *opened
}

type opened struct {
	m    *models.Model
	sess []runtime.Session // the model's, then its VAD's for keyword spotting
	seg  *models.VAD
	emb  *models.SpeechEmbedding // a keyword head's feature models
	refs gosync.WaitGroup        // requests running on these sessions
}

func (op *opened) close() {
	for _, s := range op.sess {
		s.Close()
	}
	if op.emb != nil {
		op.emb.Close()
	}
}

// Open validates cfg and opens the registry, the outbox and the uplink.
// ONNX Runtime and models are opened lazily, on first use.
func Open(cfg Config, o Options) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !o.NoOutbox {
		id, err := deviceID(cfg.DataDir, cfg.DeviceID)
		if err != nil {
			return nil, err
		}
		cfg.DeviceID = id
	}
	if cfg.DeviceID == "" {
		h, _ := os.Hostname()
		cfg.DeviceID = h
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Device{cfg: cfg, o: o, log: o.Logger, open: map[string]*opened{}, pipes: map[[2]string]pipeEntry{}}
	if o.DecodeBudget > 0 {
		d.decode = models.NewDecodeBudget(o.DecodeBudget)
	}
	var err error
	if !o.NoModels {
		if o.Guard {
			d.guard()
		}
		if d.reg, err = models.LoadDir(cfg.ModelsDir); err != nil {
			return nil, err
		}
		for _, p := range d.reg.Problems() {
			d.log.Error("model refused", "dir", p.Dir, "err", p.Err)
		}
		d.loadVariants()
	}
	if !o.NoOutbox {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		d.ob, err = outbox.Open(filepath.Join(cfg.DataDir, OutboxFile), outbox.Options{MaxBytes: cfg.QueueMaxBytes,
			MaxRecords: cfg.QueueMaxItems, Policy: outbox.Policy(cfg.QueuePolicy), Logger: d.log})
		if err != nil {
			if strings.Contains(err.Error(), "timeout") {
				return nil, fmt.Errorf("%w (another outpost process — the daemon? — has it open)", err)
			}
			return nil, err
		}
		d.clock = newClockWatch(cfg.DataDir, outbox.BootClock, time.Now)
		if j := d.clock.st.LastJump; j != nil && time.Since(j.At) < time.Minute {
			d.log.Warn("the wall clock jumped; record times from before are corrected by the hub from the boot clock",
				"by", j.By.Round(time.Second), "across_reboot", j.Reboot)
		}
		if d.reviews, err = openReviews(cfg.DataDir); err != nil {
			d.log.Error("reviews received earlier are lost: their file was damaged (moved aside); starting with none", "err", err)
		}
		if d.warnings, err = openWarnings(cfg.DataDir); err != nil {
			d.log.Error("regional warnings received earlier are lost: their file was damaged (moved aside); the hub sends those in force again", "err", err)
		}
		// The device's own identity: made on first start, kept with its
		// data (0600); it signs every batch and bundle.
		var made bool
		if d.key, made, err = osync.LoadOrCreateKey(filepath.Join(cfg.DataDir, DeviceKeyFile)); err != nil {
			d.Close()
			return nil, fmt.Errorf("device key: %w", err)
		}
		if made {
			d.log.Info("made this device's key; the hub enrols it on first contact", "file", filepath.Join(cfg.DataDir, DeviceKeyFile),
				"fingerprint", osync.Fingerprint(d.key.Public().(ed25519.PublicKey)))
		}
		if cfg.Broker != "" && !o.NoUplink {
			if err := d.setupUplink(); err != nil {
				d.Close()
				return nil, err
			}
		}
	}
	return d, nil
}

func (d *Device) setupUplink() error {
	c := d.cfg
	if len(c.HubKeys) == 0 {
		d.log.Warn("sync: " + NoHubKeyWarning)
	}
	if err := d.setupFetcher(); err != nil {
		return err
	}
	dial, err := mqtt.Dialer(mqtt.Options{Broker: c.Broker, Username: c.MQTTUsername, Password: c.MQTTPassword,
		CAFile: c.MQTTCA, CertFile: c.MQTTCert, KeyFile: c.MQTTKey, CleanSession: true})
	if err != nil {
		return err
	}
	daily, err := osync.ParseBytes(c.DailyBudget)
	if err != nil {
		return fmt.Errorf("config: daily_budget: %w", err)
	}
	// Kept even without a daily limit: it is also the record of bytes sent
	// per day and per tier (the bandwidth report).
	if d.budget, err = osync.LoadBudget(daily, filepath.Join(c.DataDir, "budget.json")); err != nil {
		return err
	}
	probe, err := mqtt.Prober(c.Broker)
	if err != nil {
		return err
	}
	d.up, err = osync.NewUplink(d.ob, dial, osync.UplinkOptions{Device: c.DeviceID, Budget: d.budget,
		Version: d.o.Version, Logger: d.log, Probe: probe, AckTimeout: c.AckTimeout(), BatchRecords: c.SyncBatch,
		HubKeys: c.PinnedHubKeys(), DeviceKey: d.key, Fetcher: d.fetch, Models: d.InstalledModels,
		// Checked again as each piece leaves: a policy tightened since
		// the photo was kept still holds.
		MayShare: func(r *outbox.Record) bool { return c.Policy(r.Model).Evidence != ShareNever },
		ClockJumps: func() int {
			if d.clock == nil {
				return 0
			}
			return d.clock.Check().Jumps
		},
		OnReview: func(r *osync.Review) error {
			err := d.reviews.add(r)
			if err == nil {
				d.log.Info("review received", "of", r.Of.String(), "label", r.Label, "reviewer", r.Reviewer)
			}
			return err
		},
		OnWarning: d.storeWarning})
	return err
}

// setupFetcher prepares model-update downloads (a device with models).
func (d *Device) setupFetcher() error {
	if d.reg == nil {
		return nil
	}
	var err error
	d.fetch, err = osync.OpenFetcher(osync.FetcherOptions{Dir: filepath.Join(d.cfg.DataDir, UpdatesDir), Device: d.cfg.DeviceID,
		HubKeys: d.cfg.PinnedHubKeys(), MaxBytes: d.cfg.UpdateMaxBytes, Accept: d.acceptOffer, Logger: d.log,
		Context: d.decisionContext(),
		Install: func(path string, o *osync.Offer) error {
			_, err := d.InstallFile(context.Background(), path, o)
			return err
		}})
	if err != nil {
		return err
	}
	if d.rolledBack != nil {
		d.fetch.Note(*d.rolledBack)
	}
	return nil
}

// Config is the validated configuration (device ID filled in).
func (d *Device) Config() Config { return d.cfg }

// Registry is the model registry.
func (d *Device) Registry() *models.Registry { return d.reg }

// Outbox is the device's queue; nil with Options.NoOutbox.
func (d *Device) Outbox() *outbox.Outbox { return d.ob }

// Uplink is nil when no broker is configured.
func (d *Device) Uplink() *osync.Uplink { return d.up }

// Budget is nil when no daily budget is configured.
func (d *Device) Budget() *osync.Budget { return d.budget }

// Close releases sessions, the outbox and ONNX Runtime. Safe to call twice
// and after a failed Open.
func (d *Device) Close() error {
	var err error
	d.once.Do(func() {
		d.stoppedCleanly()
		d.fetch.Close()
		d.mu.Lock()
		for _, o := range d.open {
			o.close()
		}
		d.open, d.pipes = map[string]*opened{}, map[[2]string]pipeEntry{}
		if d.env != nil {
			d.env.Close()
		}
		d.mu.Unlock()
		if d.ob != nil {
			err = d.ob.Close()
		}
	})
	return err
}

// Model returns a registered model, naming a refused model folder of that
// name when there is one.
func (d *Device) Model(name string) (*models.Model, error) {
	if d.reg == nil {
		return nil, errors.New("device: opened without models")
	}
	m, err := d.reg.Get(name)
	if err != nil {
		for _, p := range d.reg.Problems() {
			if filepath.Base(p.Dir) == name {
				return nil, fmt.Errorf("%w; %s", err, p)
			}
		}
	}
	return m, err
}

// Pipeline returns the pipeline for model and advice language (the
// configured one when lang is ""), opening the model on first use and
// keeping one pipeline per (model, language): a request in Swahili does
// not rebuild anything.
func (d *Device) Pipeline(model, lang string) (models.Pipeline, *models.Model, error) {
	e, err := d.pipeline(model, lang, false)
	if err != nil {
		return nil, nil, err
	}
	return e.p, e.op.m, nil
}

// pipeline finds or makes the pipeline; hold takes a reference on its
// sessions (released by the caller) so a model swap closes them only
// after the request.
func (d *Device) pipeline(model, lang string, hold bool) (pipeEntry, error) {
	if lang == "" {
		lang = d.cfg.Lang
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	model = d.routedLocked(model)
	e, ok := d.pipes[[2]string{model, lang}]
	if !ok {
		op, err := d.openModel(model)
		if err != nil {
			return e, err
		}
		p, err := models.NewPipeline(op.m, op.sess[0], models.PipelineOptions{VAD: d.o.VAD, Lang: lang, Segmenter: op.seg, Embedding: op.emb, Decode: d.decode})
		if err != nil {
			return e, err
		}
		e = pipeEntry{p: p, op: op}
		d.pipes[[2]string{model, lang}] = e
	}
	if hold {
		e.op.refs.Add(1)
	}
	return e, nil
}

// openModel opens a model's sessions (mu held).
func (d *Device) openModel(name string) (*opened, error) {
	if op, ok := d.open[name]; ok {
		return op, nil
	}
	m, err := d.Model(name)
	if err != nil {
		return nil, err
	}
	op, err := d.openLocked(m)
	if err != nil {
		if d.broken == nil {
			d.broken = map[string]string{}
		}
		d.broken[name] = err.Error()
		return nil, fmt.Errorf("%w: %s: %v", ErrModelBroken, name, err)
	}
	delete(d.broken, name)
	d.open[name] = op
	return op, nil
}

// ErrModelBroken: the model's files are there but do not load (a broken
// .onnx, a missing runtime). Answered 503 and shown as broken.
var ErrModelBroken = errors.New("model does not load")

// CheckModels opens every model once (at start), so one that does not load
// is known as broken before anyone asks it. It returns the broken ones.
func (d *Device) CheckModels() map[string]string {
	if d.reg == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.reg.Models() {
		_, wasOpen := d.open[m.Name]
		op, err := d.openModel(m.Name)
		if err != nil {
			d.log.Error("model does not load; it is shown as broken and refused until fixed", "model", m.Name, "err", err)
			continue
		}
		if !wasOpen {
			// Loading proved it works; its sessions wait for a first
			// request. Kept open, every model of the folder (variants
			// nobody calls included) held ~90 MB at idle.
			op.close()
			delete(d.open, m.Name)
		}
	}
	onnx.TrimMemory()
	out := map[string]string{}
	for k, v := range d.broken {
		out[k] = v
	}
	return out
}

// Broken says why a model does not load ("" when it does, or has not
// been tried).
func (d *Device) Broken(name string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.broken[name]
}

// openFrom opens m's sessions without holding mu for the load (an update
// being checked beside the running model).
func (d *Device) openFrom(m *models.Model) (*opened, error) {
	d.mu.Lock()
	if err := d.envLocked(); err != nil {
		d.mu.Unlock()
		return nil, err
	}
	d.mu.Unlock()
	return d.openLocked(m)
}

func (d *Device) envLocked() error {
	if d.env != nil {
		return nil
	}
	lib, err := onnx.FindLibrary(d.cfg.ORTLib)
	if err != nil {
		return err
	}
	d.env, err = onnx.NewEnv(onnx.Options{LibraryPath: lib})
	return err
}

// openLocked opens m's session and, for keyword spotting, the VAD model
// that finds speech for it, or an error naming it — never keyword
// spotting on the whole input by accident.
func (d *Device) openLocked(m *models.Model) (*opened, error) {
	if err := d.envLocked(); err != nil {
		return nil, err
	}
	load := d.env.Loader(onnx.SessionOptions{IntraOpThreads: d.cfg.Threads})
	sess, err := m.Open(load)
	if err != nil {
		return nil, err
	}
	op := &opened{m: m, sess: []runtime.Session{sess}}
	if m.Preprocessing.Features == models.FeaturesEmbedding {
		// Beside the model folders (the shipped set, or the writable copy).
		if op.emb, err = models.OpenSpeechEmbedding(filepath.Join(filepath.Dir(m.Dir), models.EmbeddingDir), load); err != nil {
			sess.Close()
			return nil, fmt.Errorf("%s: %w", m.Name, err)
		}
	}
	if spec, _ := models.Spec(m.Task); spec.NeedsSegmenter && d.cfg.VADModel != "" {
		vm, err := d.Model(d.cfg.VADModel)
		if err != nil {
			sess.Close()
			return nil, fmt.Errorf("%s needs the VAD model to find speech: %w (set vad_model to \"\" to search the whole input)", m.Name, err)
		}
		vs, err := vm.Open(load)
		if err != nil {
			sess.Close()
			return nil, err
		}
		op.sess = append(op.sess, vs)
		// Keywords are short: keep segments down to 100 ms.
		if op.seg, err = models.NewVAD(vs, &vm.Manifest, models.VADOptions{MinSpeech: models.Duration(100 * time.Millisecond), SpeechPad: models.Duration(50 * time.Millisecond)}); err != nil {
			op.close()
			return nil, err
		}
	}
	return op, nil
}

// Infer runs a model on one input (lang: advice language, "" = configured).
func (d *Device) Infer(ctx context.Context, model string, in models.Input, lang string) (*models.Result, error) {
	e, err := d.pipeline(model, lang, true)
	if err != nil {
		return nil, err
	}
	defer e.op.refs.Done()
	t0 := time.Now()
	res, err := e.p.Infer(ctx, in)
	if d.o.Observe != nil {
		d.o.Observe(model, time.Since(t0), err)
	}
	if res != nil && res.Model != model && e.op.m.Variant {
		// A variant chosen on this device answered: the result is the
		// model's (its sharing policy, its series at the hub).
		res.Variant, res.Model = res.Model, model
	}
	return res, err
}

// Store appends a result durably and returns once it is on disk; res.ID is
// set then. At normal priority, a confident blight diagnosis goes up as an
// alert, and a retake or not-a-leaf answer as bulk. raw is the input: kept
// as evidence (a second record in the evidence tier, sent after every
// label) only when the model's sharing policy allows it for this answer.
func (d *Device) Store(ctx context.Context, res *models.Result, prio outbox.Priority, raw []byte) (*outbox.Record, error) {
	return d.StoreKeyed(ctx, res, prio, raw, "")
}

// StoreKeyed is Store keeping an idempotency key with the result, in the
// same commit (Keyed finds it after a restart).
func (d *Device) StoreKeyed(ctx context.Context, res *models.Result, prio outbox.Priority, raw []byte, key string) (*outbox.Record, error) {
	if d.ob == nil {
		return nil, errors.New("device: no outbox (set a data dir)")
	}
	out, err := json.Marshal(res.Output)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	// What the answer means is the task table's to say (models.MeaningOf),
	// and it travels with the record: the hub counts its label as is.
	mean := models.MeaningOf(res.Task, res.Output)
	if prio == outbox.Normal {
		switch mean.Urgency {
		case models.Urgent:
			prio = outbox.Alert
		case models.Bulk:
			prio = outbox.Bulk
		}
	}
	rec := &outbox.Record{Device: d.cfg.DeviceID, Model: res.Model, Version: res.Version, Task: string(res.Task), Priority: prio, Output: out,
		Outcome: mean.Outcome, Label: mean.Label}
	ev, err := d.evidence(res, mean, raw)
	if err != nil {
		// The answer matters more than its photo: stored without it.
		d.log.Warn("evidence not kept", "model", res.Model, "err", err)
	}
	var att *outbox.Attachment
	if ev != nil {
		rec.Evidence = ev.ref
		// The evidence record names the answer by its ID and is committed
		// with it, one fsync for both (two appends in a row took ~300 µs
		// more per shared photo, and a crash between them kept the answer
		// without its photo).
		att = &outbox.Attachment{Evidence: ev.data,
			Record: &outbox.Record{Device: d.cfg.DeviceID, Model: res.Model, Version: res.Version, Task: EvidenceTask,
				Priority: outbox.Bulk, Tier: outbox.TierEvidence, Evidence: ev.ref},
			Output: func(of outbox.ID) []byte {
				b, _ := json.Marshal(map[string]string{"of": of.String()})
				return b
			}}
	}
	id, attErr, err := d.ob.AppendWith(ctx, rec, nil, key, att)
	if err != nil {
		return nil, fmt.Errorf("%s: result not stored: %w", res.Input, err)
	}
	res.ID = id.String()
	if attErr != nil {
		d.log.Warn("evidence not kept", "model", res.Model, "id", res.ID, "err", attErr)
	}
	if d.up != nil {
		d.up.Notify()
	}
	return rec, nil
}

// EvidenceTask is the task of an evidence record: its output names the
// result it belongs to ({"of": ID}); its blob is the photo or recording.
const EvidenceTask = "evidence"

type keptEvidence struct {
	ref  *outbox.Evidence
	data []byte
}

// evidence applies the model's sharing policy to one answer: nil when
// nothing may leave, else what may, in the form the policy says.
func (d *Device) evidence(res *models.Result, mean models.Meaning, raw []byte) (*keptEvidence, error) {
	p := d.cfg.Policy(res.Model)
	if len(raw) == 0 || !Shares(p, mean) {
		return nil, nil
	}
	data, ctype := raw, models.ContentType(raw)
	if strings.HasPrefix(ctype, "image/") && p.Form == FormDownscaled {
		var err error
		if data, err = models.Downscale(raw, p.MaxSide); err != nil {
			return nil, err
		}
		ctype = "image/jpeg"
	}
	if len(data) > osync.MaxEvidenceBytes {
		return nil, fmt.Errorf("%s of %d bytes is over the %d the hub takes: not kept", ctype, len(data), osync.MaxEvidenceBytes)
	}
	sum := sha256.Sum256(data)
	return &keptEvidence{ref: &outbox.Evidence{ContentType: ctype, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}, data: data}, nil
}

// Shares says whether policy p lets an answer's evidence leave: always,
// or when uncertain — an answer the model was not sure of (not a retake:
// the photo itself was the problem; the task table says which), never a
// confident answer.
func Shares(p SharePolicy, m models.Meaning) bool {
	switch p.Evidence {
	case ShareAlways:
		return true
	case ShareUncertain:
		return m.Uncertain
	}
	return false
}

// decisionContext names what accepting and installing an update depends
// on: the configuration and whether the models folder is writable. When it
// changes, offers refused before are considered again.
func (d *Device) decisionContext() string {
	b, _ := json.Marshal(d.cfg)
	writable := unix.Access(d.cfg.ModelsDir, unix.W_OK) == nil
	h := sha256.Sum256(append(b, fmt.Sprint(writable)...))
	return hex.EncodeToString(h[:8])
}

// DeviceIDFile (in the data dir) keeps the device ID its data was made
// under: a command run without the daemon's config (a bundle export from
// an operator's shell) used the host name, and the hub stored the same
// results twice under two devices.
const DeviceIDFile = "device-id"

// deviceID is the ID for the data in dataDir: the one kept there, or
// asked (asked, else the host name) and then kept. Asking for another
// than the one kept is an error naming both.
func deviceID(dataDir, asked string) (string, error) {
	path := filepath.Join(dataDir, DeviceIDFile)
	b, err := safefile.ReadFile(path, 256)
	if err == nil {
		kept := strings.TrimSpace(string(b))
		if !osync.ValidDeviceID(kept) {
			return "", fmt.Errorf("device id: %s holds %q, not a device ID", path, kept)
		}
		if asked != "" && asked != kept {
			return "", fmt.Errorf("device id: the data in %s belongs to device %q, but %q was asked for (set device_id %q, or use another data dir)", dataDir, kept, asked, kept)
		}
		return kept, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("device id: %w", err)
	}
	if asked == "" {
		asked, _ = os.Hostname()
	}
	if !osync.ValidDeviceID(asked) {
		return "", fmt.Errorf("device id %q: use 1-64 of A-Z a-z 0-9 . _ - (set device_id)", asked)
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	if err := atomicfile.WriteBytes(path, []byte(asked+"\n"), 0o640); err != nil {
		return "", fmt.Errorf("device id: %w", err)
	}
	return asked, nil
}

// DeviceKeyFile (in the data dir) is the device's ed25519 key.
const DeviceKeyFile = "device.key"

// TrustStatus says whom this device believes: /v1/status "trust",
// outpost status and the kiosk show it.
type TrustStatus struct {
	HubKeyPinned bool   `json:"hub_key_pinned"`
	HubKeys      int    `json:"hub_keys"`
	DeviceKey    string `json:"device_key,omitempty"` // signs batches and bundles
	Fingerprint  string `json:"device_key_fingerprint,omitempty"`
	Warning      string `json:"warning,omitempty"`
}

// NoHubKeyWarning is said wherever a device syncs without a pinned hub key.
const NoHubKeyWarning = "no hub key pinned (hub_keys): anyone on the broker could make this device delete results the hub never stored; reviews are not shown. Pin the key `outpost collect provision` prints."

// Trust reports whether the hub's key is pinned.
func (d *Device) Trust() TrustStatus {
	t := TrustStatus{HubKeys: len(d.cfg.HubKeys), HubKeyPinned: len(d.cfg.HubKeys) > 0}
	if d.key != nil {
		pub := d.key.Public().(ed25519.PublicKey)
		t.DeviceKey, t.Fingerprint = osync.FormatPublicKey(pub), osync.Fingerprint(pub)
	}
	if d.cfg.Broker != "" && !t.HubKeyPinned {
		t.Warning = NoHubKeyWarning
	}
	return t
}
