package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/models/pkg"
	osync "github.com/outpost-edge/outpost/sync"
)

// Model updates on a running device (docs/UPDATES.md): every package,
// from MQTT, the watch folder or `outpost models install`, goes through
// InstallFile — verify, unpack beside the installed model, open it in
// fresh sessions, run its golden inputs, swap it in under running
// requests, remember the activation so a crash loop rolls it back.

// UpdatesDir is where downloads and the activation record live, in the
// data dir.
const UpdatesDir = "updates"

// activation is updates/activation.json: a model swapped in whose
// daemon has not yet run update_crash_window without crashing.
type activation struct {
	Model   string    `json:"model"` // its folder in the models dir
	Offer   string    `json:"offer,omitempty"`
	Version string    `json:"version"`
	Seq     int64     `json:"seq"`
	At      time.Time `json:"activated"`
	// Running is true while a daemon runs with this activation; a start
	// that finds it still true follows a crash (no clean stop cleared
	// it). Only those count: three clean restarts rolled back a healthy,
	// golden-checked model before (the rule counted starts).
	Running bool        `json:"running"`
	Crashes []time.Time `json:"crashes,omitempty"`
}

func (d *Device) activationPath() string {
	return filepath.Join(d.cfg.DataDir, UpdatesDir, "activation.json")
}

// guard runs when the daemon starts (Options.Guard), before the models
// are loaded: it repairs an interrupted swap, then counts this start
// against a recent activation and rolls the model back when the daemon
// has restarted update_crash_restarts times within update_crash_window of
// it.
func (d *Device) guard() {
	if back, err := pkg.Recover(d.cfg.ModelsDir); err != nil {
		d.log.Error("updates: repairing the models dir failed", "dir", d.cfg.ModelsDir, "err", err)
	} else if len(back) > 0 {
		d.log.Warn("updates: a model swap was interrupted; the previous version is back (the update is installed again)", "models", back)
	}
	if d.cfg.DataDir == "" {
		return
	}
	b, err := safefile.ReadFile(d.activationPath(), 64<<10)
	if err != nil {
		return
	}
	var a activation
	if err := json.Unmarshal(b, &a); err != nil {
		os.Remove(d.activationPath())
		return
	}
	now := time.Now()
	window := d.cfg.CrashWindow()
	if now.Sub(a.At) > window {
		os.Remove(d.activationPath()) // it ran long enough: confirmed
		return
	}
	if a.Running {
		a.Crashes = append(a.Crashes, now)
	}
	if len(a.Crashes) < d.cfg.UpdateCrashRestarts {
		a.Running = true
		if b, err := json.Marshal(a); err == nil {
			atomicfile.WriteBytes(d.activationPath(), b, 0o640)
		}
		d.guarded = true
		return
	}
	reason := fmt.Sprintf("crash loop: %d crashes within %s of activating %s %s; rolled back", len(a.Crashes), window, a.Model, a.Version)
	prev, err := pkg.Rollback(d.cfg.ModelsDir, a.Model)
	if err != nil {
		d.log.Error("updates: "+reason+" failed", "err", err)
		reason += " failed: " + err.Error()
	} else {
		pv := "(not from a package)"
		if prev != nil {
			pv = fmt.Sprintf("%s (seq %d)", prev.Version, prev.Seq)
		}
		d.log.Error("updates: "+reason, "now", pv)
	}
	os.Remove(d.activationPath())
	d.rolledBack = &osync.UpdateStatus{Offer: a.Offer, Model: a.Model, Version: a.Version, Seq: a.Seq,
		State: osync.UpdateRolledBack, Reason: reason, Time: now.UTC()}
}

// stoppedCleanly marks the activation as not running (Close): the next
// start is not a crash.
func (d *Device) stoppedCleanly() {
	if !d.guarded || d.cfg.DataDir == "" {
		return
	}
	b, err := safefile.ReadFile(d.activationPath(), 64<<10)
	if err != nil {
		return
	}
	var a activation
	if json.Unmarshal(b, &a) != nil || !a.Running {
		return
	}
	a.Running = false
	if b, err := json.Marshal(a); err == nil {
		atomicfile.WriteBytes(d.activationPath(), b, 0o640)
	}
}

// WatchActivation confirms a recent activation once the daemon has run
// update_crash_window since it; until ctx ends.
func (d *Device) WatchActivation(ctx context.Context) {
	t := time.NewTicker(min(time.Minute, d.cfg.CrashWindow()/4+time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := safefile.ReadFile(d.activationPath(), 64<<10)
		if err != nil {
			continue
		}
		var a activation
		if json.Unmarshal(b, &a) == nil && time.Since(a.At) > d.cfg.CrashWindow() {
			os.Remove(d.activationPath())
			d.log.Info("updates: model update confirmed (no crash loop)", "model", a.Model, "version", a.Version)
		}
	}
}

// acceptOffer decides, before any download, whether to take an offer:
// signed by a model key, for a model this device has, newer than the
// installed one (or a signed rollback).
func (d *Device) acceptOffer(o *osync.Offer) error {
	keys := d.cfg.PinnedModelKeys()
	if len(keys) == 0 {
		return errors.New("no model_keys configured: this device installs no packages")
	}
	m, err := pkg.VerifyMeta(o.Meta, o.Sig, keys)
	if err != nil {
		return err
	}
	if m.Name != o.Model || m.Seq != o.Seq || m.Version != o.Version {
		return fmt.Errorf("offer says %s %s seq %d but its signed metadata %s %s seq %d", o.Model, o.Version, o.Seq, m.Name, m.Version, m.Seq)
	}
	dir := filepath.Join(d.cfg.ModelsDir, m.Name)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("unknown model %q: no such folder in %s", m.Name, d.cfg.ModelsDir)
	}
	cur := int64(0)
	if im, err := pkg.Installed(dir); err == nil {
		cur = im.Seq
	}
	switch floor := pkg.Floor(d.cfg.ModelsDir, m.Name); {
	case m.Seq == cur:
		return osync.ErrAlreadyInstalled
	case m.Seq <= floor:
		// Floors only rise: a rollback is signed under a new, higher seq.
		return fmt.Errorf("%w: %s seq %d, the model has had seq %d", pkg.ErrDowngrade, m.Name, m.Seq, floor)
	}
	return nil
}

// InstalledModels maps each model folder to its package sequence number
// (0: not installed from a package).
func (d *Device) InstalledModels() map[string]int64 {
	if d.reg == nil {
		return nil
	}
	out := map[string]int64{}
	for _, m := range d.reg.Models() {
		name := filepath.Base(m.Dir)
		if im, err := pkg.Installed(m.Dir); err == nil {
			out[name] = im.Seq
		} else if _, ok := out[name]; !ok {
			out[name] = 0
		}
	}
	return out
}

// InstallFile installs a package file: verified under model_keys,
// unpacked beside the installed version, opened in fresh sessions and run
// on its golden inputs, then swapped in without failing a request in
// flight (they finish on the old sessions). offer is nil for a USB
// install. On any error the running model is untouched.
func (d *Device) InstallFile(ctx context.Context, path string, offer *osync.Offer) (*pkg.Meta, error) {
	keys := d.cfg.PinnedModelKeys()
	if len(keys) == 0 {
		return nil, errors.New("no model_keys configured: this device installs no packages")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d.installMu.Lock() // one install at a time (MQTT and the watch folder)
	defer d.installMu.Unlock()
	fresh := map[string]*opened{}
	closeFresh := func() {
		for _, op := range fresh {
			op.close()
		}
	}
	checked := 0
	meta, err := pkg.Install(f, d.cfg.ModelsDir, keys, func(tmp string) error {
		ms, err := models.LoadFolder(tmp)
		if err != nil {
			return err
		}
		for _, m := range ms {
			op, err := d.openFrom(m)
			if err != nil {
				return fmt.Errorf("%s does not load: %w", m.Name, err)
			}
			fresh[m.Name] = op
		}
		g, err := models.ReadGolden(tmp)
		if err != nil || g == nil {
			return err
		}
		for _, op := range fresh {
			n, err := g.Check(ctx, tmp, op.m.Name, func(lang string) (models.Pipeline, error) {
				return models.NewPipeline(op.m, op.sess[0], models.PipelineOptions{VAD: d.o.VAD, Lang: lang, Segmenter: op.seg, Embedding: op.emb, Decode: d.decode})
			})
			checked += n
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		closeFresh()
		return nil, err
	}
	target := filepath.Join(d.cfg.ModelsDir, meta.Name)
	ms, err := models.LoadFolder(target)
	if err != nil {
		closeFresh()
		return nil, fmt.Errorf("installed %s does not load from %s: %w", meta.Name, target, err)
	}
	for _, m := range ms {
		if op, ok := fresh[m.Name]; ok {
			op.m = m // same bytes, now at their installed path
		}
	}
	if checked == 0 {
		d.log.Warn("updates: the package has no golden inputs; installed without a health check", "model", meta.Name)
	}
	if d.reg != nil {
		d.swapIn(target, ms, fresh)
	} else {
		closeFresh()
	}
	if d.o.Guard && d.cfg.DataDir != "" {
		a := activation{Model: meta.Name, Version: meta.Version, Seq: meta.Seq, At: time.Now(), Running: true}
		d.guarded = true
		if offer != nil {
			a.Offer = offer.ID
		}
		b, _ := json.Marshal(a)
		os.MkdirAll(filepath.Dir(d.activationPath()), 0o750)
		if err := atomicfile.WriteBytes(d.activationPath(), b, 0o640); err != nil {
			d.log.Warn("updates: cannot record the activation; no crash-loop rollback for it", "err", err)
		}
	}
	d.log.Info("updates: model swapped in", "model", meta.Name, "version", meta.Version, "seq", meta.Seq, "golden_checks", checked)
	return meta, nil
}

// swapIn replaces the models of one folder in the registry and the open
// sessions with fresh ones. Requests already running keep the old
// sessions, which close once the last of them finishes.
func (d *Device) swapIn(dir string, ms []*models.Model, fresh map[string]*opened) {
	d.mu.Lock()
	drop := map[string]bool{}
	for _, n := range d.reg.Replace(dir, ms) {
		drop[n] = true
	}
	for _, m := range ms {
		drop[m.Name] = true
	}
	if drop[d.cfg.VADModel] {
		// Keyword spotting holds a session of the VAD model: it reopens.
		for name, op := range d.open {
			if op.seg != nil {
				drop[name] = true
			}
		}
	}
	var old []*opened
	for name := range drop {
		if op, ok := d.open[name]; ok {
			old = append(old, op)
			delete(d.open, name)
		}
		if op, ok := fresh[name]; ok {
			d.open[name] = op
			delete(fresh, name)
		}
	}
	for k := range d.pipes {
		if drop[k[0]] {
			delete(d.pipes, k)
		}
	}
	d.swaps++
	d.mu.Unlock()
	for _, op := range fresh {
		op.close() // opened for a model the swap did not keep
	}
	for _, op := range old {
		go func() {
			op.refs.Wait()
			op.close()
		}()
	}
}

// Swaps is how many model swaps this device made while running.
func (d *Device) Swaps() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.swaps
}

// Fetcher is the model-update downloader; nil without an uplink.
func (d *Device) Fetcher() *osync.Fetcher { return d.fetch }
