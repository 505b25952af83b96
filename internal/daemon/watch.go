package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/device"
	"github.com/outpost-edge/outpost/internal/safefile"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/outbox"
)

// The watch folder is an attack surface: anyone who can write to a USB
// stick or a shared folder can put symlinks, FIFOs, device nodes, huge
// files or clashing names in it. So it takes regular files only, opened
// without following links and without blocking, up to the upload size cap;
// it never follows a symlinked done/ or failed/; and it never takes the
// same file twice, even when it cannot move it away.

// watchState is what /v1/status and /healthz report about the watcher.
type watchState struct {
	mu        gosync.Mutex
	dir       string
	lastPoll  time.Time // end of the last completed poll
	busySince time.Time // start of the file being taken now (zero when idle)
	busyFile  string
	taken     int64 // stored and moved to done/
	failed    int64 // moved to failed/
	refused   int64 // not regular files, too large, hard links: moved to failed/ unread
	stuck     int   // taken but could not be moved away: remembered, never taken again
	retrying  int   // waiting for room in the queue
	lastErr   string
}

func (w *watchState) snapshot() device.WatchStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := device.WatchStatus{Dir: w.dir, Taken: w.taken, Failed: w.failed, Refused: w.refused, Unmovable: w.stuck,
		WaitingForRoom: w.retrying, Error: w.lastErr}
	if !w.lastPoll.IsZero() {
		t := w.lastPoll.UTC()
		s.LastPoll = &t
	}
	if w.busyFile != "" {
		s.BusyFile, s.BusyS = w.busyFile, int(time.Since(w.busySince).Seconds())
	}
	return s
}

// stalled says why the watcher looks stuck, or "" when it is fine: no poll
// has finished for much longer than a poll and a file's inference take.
func (w *watchState) stalled(now time.Time, every time.Duration) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lastErr != "" {
		// A file named done where the folder belongs stopped the watch
		// folder while /healthz said ok.
		return "watch folder unusable: " + w.lastErr
	}
	limit := 10*every + 2*time.Minute
	if !w.busySince.IsZero() && now.Sub(w.busySince) > limit {
		return fmt.Sprintf("watch folder stuck on %s for %s", w.busyFile, now.Sub(w.busySince).Round(time.Second))
	}
	if !w.lastPoll.IsZero() && w.busySince.IsZero() && now.Sub(w.lastPoll) > limit {
		return fmt.Sprintf("watch folder has not polled for %s", now.Sub(w.lastPoll).Round(time.Second))
	}
	return ""
}

func (w *watchState) set(f func(*watchState)) {
	w.mu.Lock()
	f(w)
	w.mu.Unlock()
}

// fileSig identifies one version of one file: a new photo under an old
// name is a new file.
type fileSig struct {
	size  int64
	mtime int64
	ino   uint64
}

func sigOf(info os.FileInfo) fileSig {
	s := fileSig{size: info.Size(), mtime: info.ModTime().UnixNano()}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		s.ino = st.Ino
	}
	return s
}

// watch polls an inbox folder. A file is taken only once its size and
// modification time have not changed between two polls (a camera app or a
// USB copy still writing it is left alone), and never if its name starts
// with "." or ends in .part/.tmp/.crdownload. Each file is inferred,
// stored, then moved to done/ — or to failed/ with a NAME.reason.txt.
// A file refused because the queue is full stays in place and is tried
// again once there may be room.
func (d *Daemon) watch(ctx context.Context, dir string, every time.Duration) {
	w := d.watchSt
	w.set(func(w *watchState) { w.dir, w.lastPoll = dir, time.Now() })
	seen := map[string]fileSig{}    // name -> signature at the last poll
	taken := d.loadTaken()          // stored but not movable: never again, also after a restart
	later := map[string]time.Time{} // queue full: not before
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := d.poll(ctx, dir, seen, taken, later)
		w.set(func(w *watchState) {
			w.lastPoll, w.stuck, w.retrying = time.Now(), len(taken), len(later)
			w.lastErr = ""
			if err != nil {
				w.lastErr = err.Error()
			}
		})
	}
}

func (d *Daemon) poll(ctx context.Context, dir string, seen, taken map[string]fileSig, later map[string]time.Time) error {
	for _, sub := range []string{"done", "failed"} {
		if err := ensureDir(filepath.Join(dir, sub)); err != nil {
			d.log.Error("watch folder unusable", "dir", dir, "err", err)
			return err
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		d.log.Warn("watch folder", "dir", dir, "err", err)
		return err
	}
	next := map[string]fileSig{}
	present := map[string]bool{}
	for _, e := range ents {
		if ctx.Err() != nil {
			return nil
		}
		name := e.Name()
		if strings.HasPrefix(name, ".") || hasSuffix(name, ".part", ".tmp", ".crdownload", ".reason.txt") {
			continue
		}
		if e.IsDir() && (name == "done" || name == "failed") {
			continue
		}
		present[name] = true
		info, err := e.Info() // lstat: a symlink is a symlink here
		if err != nil {
			continue
		}
		sig := sigOf(info)
		if old, ok := taken[name]; ok && old == sig {
			continue // stored already; could not be moved away
		}
		if until, ok := later[name]; ok && time.Now().Before(until) {
			continue
		}
		if seen[name] != sig {
			next[name] = sig // new or still changing: look again next time
			continue
		}
		if !info.Mode().IsRegular() {
			d.refuseFile(dir, name, fmt.Errorf("not a regular file (%s): symlinks, folders, FIFOs and devices are never read", safefile.Kind(info.Mode())))
			continue
		}
		d.takeFile(ctx, dir, name, sig, taken, later)
	}
	before := len(taken)
	for name := range taken {
		if !present[name] {
			delete(taken, name)
		}
	}
	if len(taken) != before {
		d.saveTaken(taken)
	}
	for name := range later {
		if !present[name] {
			delete(later, name)
		}
	}
	for name, sig := range seen {
		// Files left for a retry keep their signature, so they are taken
		// on the next eligible poll without waiting two more.
		if _, ok := later[name]; ok {
			next[name] = sig
		}
	}
	clear(seen)
	for k, v := range next {
		seen[k] = v
	}
	return nil
}

// ensureDir makes dir if missing and refuses a symlink in its place (it
// would let the watch folder move files anywhere the daemon can write).
func ensureDir(dir string) error {
	info, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		info, err = os.Lstat(dir)
	}
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return fmt.Errorf("%s is a %s, not a folder: refusing to move files into it", dir, safefile.Kind(info.Mode()))
	}
	return nil
}

func hasSuffix(name string, sufs ...string) bool {
	for _, s := range sufs {
		if strings.HasSuffix(strings.ToLower(name), s) {
			return true
		}
	}
	return false
}

// readInboxFile reads a watch-folder file under safefile's rules (no final
// symlink, no FIFO, one link, at most max bytes: max_body_bytes).
func readInboxFile(path string, max int64) ([]byte, error) {
	data, err := safefile.ReadFile(path, max)
	if errors.Is(err, safefile.ErrTooLarge) {
		return nil, fmt.Errorf("%w (max_body_bytes)", err)
	}
	return data, err
}

func (d *Daemon) takeFile(ctx context.Context, dir, name string, sig fileSig, taken map[string]fileSig, later map[string]time.Time) {
	path := filepath.Join(dir, name)
	if strings.HasSuffix(strings.ToLower(name), ".opkg") {
		d.takePackage(ctx, dir, name, sig, taken)
		return
	}
	model := d.modelForFile(name)
	if model == "" {
		d.failFile(dir, name, model, fmt.Errorf("no model for %q files (image_model %s and audio_model %s take neither)", filepath.Ext(name), d.cfg.ImageModel, d.cfg.AudioModel))
		return
	}
	data, err := readInboxFile(path, d.cfg.MaxBodyBytes)
	if err != nil {
		d.refuseFile(dir, name, err)
		return
	}
	d.watchSt.set(func(w *watchState) { w.busyFile, w.busySince = name, time.Now() })
	res, err := d.InferAndStore(ctx, model, name, data, "", outbox.Normal, "")
	d.watchSt.set(func(w *watchState) { w.busyFile, w.busySince = "", time.Time{} })
	switch {
	case errors.Is(err, outbox.ErrFull) || errors.Is(err, outbox.ErrDiskFull):
		// Not the file's fault: keep it and try again when there may be room.
		later[name] = time.Now().Add(d.watchRetry)
		d.log.Warn("watch: queue full; file kept in the inbox and retried later", "file", name, "in", d.watchRetry, "err", err)
		return
	case err != nil:
		d.failFile(dir, name, model, err)
		return
	}
	d.metrics.watchOut.WithLabelValues("done").Inc()
	d.watchSt.set(func(w *watchState) { w.taken++ })
	d.log.Info("watch: stored", "file", name, "model", model, "id", res.ID)
	// Moved only after the result is durable: a crash before this line
	// means the file is inferred again (at-least-once), never lost.
	if dst, err := moveNoReplace(path, filepath.Join(dir, "done"), name); err != nil {
		taken[name] = sig
		d.saveTaken(taken)
		d.log.Error("watch: result stored but the file cannot be moved to done/; it will not be taken again", "file", name, "err", err)
	} else if filepath.Base(dst) != name {
		d.log.Info("watch: done/ already had this name; kept both", "file", name, "as", filepath.Base(dst))
	}
}

// takePackage installs a signed model package dropped in the watch
// folder (USB): the same path as an update over MQTT.
func (d *Daemon) takePackage(ctx context.Context, dir, name string, sig fileSig, taken map[string]fileSig) {
	m, err := d.dev.InstallFile(ctx, filepath.Join(dir, name), nil)
	if err != nil {
		d.failFile(dir, name, "", fmt.Errorf("model package refused: %w", err))
		return
	}
	d.metrics.watchOut.WithLabelValues("done").Inc()
	d.log.Info("watch: model package installed", "file", name, "model", m.Name, "version", m.Version, "seq", m.Seq)
	if _, err := moveNoReplace(filepath.Join(dir, name), filepath.Join(dir, "done"), name); err != nil {
		taken[name] = sig
		d.saveTaken(taken)
	}
}

// TakenFile (in the data dir) remembers files the watch folder stored but
// could not move away (a read-only stick), so a restart does not store
// them again.
const TakenFile = "watch-taken.json"

// maxTaken bounds what is remembered (entries go when their file does).
const maxTaken = 10_000

type takenEntry struct {
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime"`
	Ino   uint64 `json:"ino"`
}

func (d *Daemon) loadTaken() map[string]fileSig {
	taken := map[string]fileSig{}
	var saved map[string]takenEntry
	if err := safefile.LoadJSON(filepath.Join(d.cfg.DataDir, TakenFile), 4<<20, &saved); err != nil {
		d.log.Warn("watch: the list of stored-but-unmovable files was damaged; they may be stored again", "err", err)
	}
	for name, e := range saved {
		taken[name] = fileSig{size: e.Size, mtime: e.MTime, ino: e.Ino}
	}
	return taken
}

func (d *Daemon) saveTaken(taken map[string]fileSig) {
	out := make(map[string]takenEntry, len(taken))
	for name, s := range taken {
		if len(out) >= maxTaken {
			break
		}
		out[name] = takenEntry{Size: s.size, MTime: s.mtime, Ino: s.ino}
	}
	b, _ := json.Marshal(out)
	if err := atomicfile.WriteBytes(filepath.Join(d.cfg.DataDir, TakenFile), b, 0o640); err != nil {
		d.log.Error("watch: cannot remember stored-but-unmovable files; a restart may store them again", "err", err)
	}
}

// failFile moves a file that could not be inferred to failed/ with a
// reason file beside it.
func (d *Daemon) failFile(dir, name, model string, cause error) {
	d.metrics.watchOut.WithLabelValues("failed").Inc()
	d.watchSt.set(func(w *watchState) { w.failed++ })
	d.log.Warn("watch: file failed", "file", name, "err", cause)
	d.moveToFailed(dir, name, model, cause)
}

// refuseFile moves a file the watcher will not read to failed/, unread.
func (d *Daemon) refuseFile(dir, name string, cause error) {
	d.metrics.watchOut.WithLabelValues("refused").Inc()
	d.watchSt.set(func(w *watchState) { w.refused++ })
	d.log.Warn("watch: file refused unread", "file", name, "err", cause)
	d.moveToFailed(dir, name, "", cause)
}

func (d *Daemon) moveToFailed(dir, name, model string, cause error) {
	dst, err := moveNoReplace(filepath.Join(dir, name), filepath.Join(dir, "failed"), name)
	if err != nil {
		d.log.Error("watch: cannot move the file to failed/", "file", name, "err", err)
		return
	}
	reason := fmt.Sprintf("%s\nfile: %s\nmodel: %s\nerror: %v\n", time.Now().UTC().Format(time.RFC3339), name, model, cause)
	rpath := reasonPath(dst)
	if err := os.WriteFile(rpath, []byte(reason), 0o640); err != nil {
		d.log.Error("watch: cannot write the reason file", "file", rpath, "err", err, "reason", cause)
	}
}

// reasonPath is NAME.reason.txt, or a shortened name when that would pass
// the 255-byte file name limit.
func reasonPath(file string) string {
	base := filepath.Base(file)
	if len(base)+len(".reason.txt") <= 255 {
		return file + ".reason.txt"
	}
	h := sha256.Sum256([]byte(base))
	return filepath.Join(filepath.Dir(file), base[:200]+"-"+hex.EncodeToString(h[:4])+".reason.txt")
}

// moveNoReplace renames src into dir, never over an existing file: a
// second photo.jpg becomes "photo (2).jpg". It returns the path used.
func moveNoReplace(src, dir, name string) (string, error) {
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for i := 1; i <= 1000; i++ {
		cand := name
		if i > 1 {
			cand = fmt.Sprintf("%s (%d)%s", stem, i, ext)
			if len(cand) > 255 {
				cand = fmt.Sprintf("%s (%d)%s", stem[:200], i, ext)
			}
		}
		dst := filepath.Join(dir, cand)
		err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
		if err == nil {
			return dst, nil
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			// A filesystem without RENAME_NOREPLACE (some FUSE, old kernels):
			// check, then rename; the window is ours alone in practice.
			if _, statErr := os.Lstat(dst); statErr == nil {
				continue
			}
			return dst, os.Rename(src, dst)
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("move %s to %s: %w", src, dst, err)
		}
	}
	return "", fmt.Errorf("move %s: 1000 files of that name in %s already", src, dir)
}

// modelForFile picks the configured model whose task takes this file
// (the task table's extensions): image_model first, then audio_model.
func (d *Daemon) modelForFile(name string) string {
	for _, model := range []string{d.cfg.ImageModel, d.cfg.AudioModel} {
		if m, err := d.dev.Registry().Get(model); err == nil {
			if spec, ok := models.Spec(m.Task); ok && spec.TakesFile(name) {
				return model
			}
		}
	}
	return ""
}
