// The watch folder: hostile files, names, full queues, a stuck file's
// health, restarts.

package daemon

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
)

// runWatch runs the watcher until the test ends.
func runWatch(t *testing.T, d *Daemon, inbox string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.watch(ctx, inbox, 30*time.Millisecond); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, "timed out waiting for "+what, cond)
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestWatch_Hostile: symlinks (to /dev/zero, to a secret), a FIFO, a hard
// link and an oversized file are refused unread and moved to failed/ with
// a reason; nothing of the secret leaks; the watcher keeps going and takes
// the real photo; /healthz stays ok.
func TestWatch_Hostile(t *testing.T) {
	inbox := t.TempDir()
	d, srv := newTestDaemon(t, func(c *Config) { c.Inbox = inbox; c.MaxBodyBytes = 1 << 20 })
	secret := filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(secret, []byte("root:$6$SECRETHASH:19000:0:99999:7:::\n"), 0o600)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("/dev/zero", filepath.Join(inbox, "zero.jpg")))
	must(os.Symlink(secret, filepath.Join(inbox, "secret.jpg")))
	must(syscall.Mkfifo(filepath.Join(inbox, "pipe.jpg"), 0o644))
	must(os.Link(secret, filepath.Join(inbox, "linked.jpg")))
	must(os.WriteFile(filepath.Join(inbox, "huge.jpg"), make([]byte, 2<<20), 0o644))
	must(os.WriteFile(filepath.Join(inbox, "leaf.jpg"), sample(t, "crop-disease/samples/mosaic.jpg"), 0o644))
	runWatch(t, d, inbox)
	failed := filepath.Join(inbox, "failed")
	waitFor(t, "every hostile file in failed/ and the leaf in done/", func() bool {
		for _, n := range []string{"zero.jpg", "secret.jpg", "pipe.jpg", "linked.jpg", "huge.jpg"} {
			if !exists(filepath.Join(failed, n+".reason.txt")) {
				return false
			}
		}
		return exists(filepath.Join(inbox, "done", "leaf.jpg"))
	})
	ents, _ := os.ReadDir(failed)
	for _, e := range ents {
		if !e.Type().IsRegular() || e.Name() == "linked.jpg" {
			continue // the FIFO would block us too; the hard link is the secret itself
		}
		b, _ := os.ReadFile(filepath.Join(failed, e.Name()))
		if strings.Contains(string(b), "SECRETHASH") {
			t.Errorf("%s leaks the secret: %q", e.Name(), b)
		}
	}
	for n, want := range map[string]string{"zero.jpg": "symlink", "pipe.jpg": "FIFO", "linked.jpg": "hard links", "huge.jpg": "over the"} {
		b, _ := os.ReadFile(filepath.Join(failed, n+".reason.txt"))
		if !strings.Contains(string(b), want) {
			t.Errorf("%s reason %q lacks %q", n, b, want)
		}
	}
	if n := queueCount(t, d); n != 1 {
		t.Fatalf("queue %d, want 1", n)
	}
	resp, err := http.Get(srv.URL + "/healthz")
	must(err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
}

// TestWatch_SymlinkedSubfolders: a done/ that is a symlink is never used.
func TestWatch_SymlinkedSubfolders(t *testing.T) {
	inbox, elsewhere := t.TempDir(), t.TempDir()
	d, _ := newTestDaemon(t, func(c *Config) { c.Inbox = inbox })
	os.Symlink(elsewhere, filepath.Join(inbox, "done"))
	os.WriteFile(filepath.Join(inbox, "leaf.jpg"), sample(t, "crop-disease/samples/mosaic.jpg"), 0o644)
	runWatch(t, d, inbox)
	waitFor(t, "the watcher to report the symlinked done/", func() bool {
		return strings.Contains(d.watchSt.snapshot().Error, "symlink")
	})
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 || queueCount(t, d) != 0 {
		t.Fatalf("moved %d files through the symlink; queue %d", len(ents), queueCount(t, d))
	}
}

// TestWatch_NamesAndUnmovable: a second photo with a taken name is kept
// beside the first; a file that cannot be moved away is stored once, not
// every poll; a long failing name gets its reason; a deleted failed/ is
// made again.
func TestWatch_NamesAndUnmovable(t *testing.T) {
	inbox := t.TempDir()
	d, _ := newTestDaemon(t, func(c *Config) { c.Inbox = inbox })
	leaf := sample(t, "crop-disease/samples/mosaic.jpg")
	runWatch(t, d, inbox)
	os.WriteFile(filepath.Join(inbox, "leaf.jpg"), leaf, 0o644)
	waitFor(t, "done/leaf.jpg", func() bool { return exists(filepath.Join(inbox, "done", "leaf.jpg")) })
	os.WriteFile(filepath.Join(inbox, "leaf.jpg"), leaf, 0o644)
	waitFor(t, "done/leaf (2).jpg", func() bool { return exists(filepath.Join(inbox, "done", "leaf (2).jpg")) })

	// Immutable (chattr +i): even root cannot rename it, as on a read-only stick.
	immutable(t, filepath.Join(inbox, "stuck.jpg"), leaf)
	waitFor(t, "the unmovable file to be stored", func() bool { return queueCount(t, d) == 3 })
	time.Sleep(500 * time.Millisecond) // ~15 more polls
	if n := queueCount(t, d); n != 3 {
		t.Fatalf("queue %d after the unmovable file sat in the inbox, want 3 (stored once)", n)
	}
	if st := d.watchSt.snapshot(); st.Unmovable != 1 {
		t.Fatalf("status %v, want unmovable 1", st)
	}

	os.RemoveAll(filepath.Join(inbox, "failed"))
	long := strings.Repeat("n", 240) + ".txt"
	os.WriteFile(filepath.Join(inbox, long), []byte("x"), 0o644)
	waitFor(t, "the long-named file in a re-made failed/", func() bool { return exists(filepath.Join(inbox, "failed", long)) })
	ents, _ := os.ReadDir(filepath.Join(inbox, "failed"))
	if len(ents) != 2 {
		t.Fatalf("failed/ holds %d entries, want the file and its reason", len(ents))
	}
}

// TestWatch_QueueFullRetried: a photo refused because the queue is full
// stays in the inbox and is taken once there is room.
func TestWatch_QueueFullRetried(t *testing.T) {
	inbox := t.TempDir()
	d, srv := newTestDaemon(t, func(c *Config) { c.Inbox = inbox; c.QueueMaxItems = 1 })
	d.watchRetry = 100 * time.Millisecond
	leaf := sample(t, "crop-disease/samples/mosaic.jpg")
	os.WriteFile(filepath.Join(inbox, "a.jpg"), leaf, 0o644)
	os.WriteFile(filepath.Join(inbox, "b.jpg"), leaf, 0o644)
	runWatch(t, d, inbox)
	waitFor(t, "one stored, one waiting", func() bool { return d.watchSt.snapshot().WaitingForRoom == 1 && queueCount(t, d) == 1 })
	if ents, _ := os.ReadDir(filepath.Join(inbox, "failed")); len(ents) != 0 {
		t.Fatalf("failed/ holds %d entries; a full queue is not the file's fault", len(ents))
	}
	body := get(t, srv.URL+"/v1/status")
	if !strings.Contains(body, `"refused_total":1`) && !strings.Contains(body, `"refused_total":2`) {
		t.Fatalf("status does not count the refusal: %s", body)
	}
	if m := get(t, srv.URL+"/metrics"); !strings.Contains(m, "outpost_queue_refused_total") || !strings.Contains(m, `outpost_results_total{outcome="refused"}`) {
		t.Fatal("metrics lack the refusal counters")
	}
	recs, _ := d.dev.Outbox().Lease(10, 0)
	ids := []outbox.ID{}
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	d.dev.Outbox().Ack(ids)
	waitFor(t, "both files in done/", func() bool {
		return exists(filepath.Join(inbox, "done", "a.jpg")) && exists(filepath.Join(inbox, "done", "b.jpg"))
	})
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestHealthz_StuckWatcher: a watcher stuck on one file shows in /healthz.
func TestHealthz_StuckWatcher(t *testing.T) {
	d, srv := newTestDaemon(t, func(c *Config) { c.Inbox = t.TempDir() })
	d.watchSt.set(func(w *watchState) { w.busyFile, w.busySince = "x.jpg", time.Now().Add(-time.Hour) })
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "stuck on x.jpg") {
		t.Fatalf("healthz %d %q", resp.StatusCode, b)
	}
	if s := get(t, srv.URL+"/v1/status"); !strings.Contains(s, `"stuck"`) {
		t.Fatalf("status: %s", s)
	}
}

func TestConfig_InboxApartFromData(t *testing.T) {
	c := Defaults()
	c.Inbox = t.TempDir()
	for _, data := range []string{c.Inbox, filepath.Join(c.Inbox, "state")} {
		c.DataDir = data
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "inside the watch folder") {
			t.Fatalf("data dir %s in the inbox: %v", data, err)
		}
	}
	c.DataDir = t.TempDir()
	c.Inbox = filepath.Join(c.DataDir, "inbox") // as serve --demo does
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestWatch_UnmovableAcrossRestartAndHealth (issue 25): a file that cannot
// be moved away (a read-only stick) was stored again after every restart;
// a plain file named done stopped the watch folder while /healthz said ok.
func TestWatch_UnmovableAcrossRestartAndHealth(t *testing.T) {
	inbox, data := t.TempDir(), t.TempDir()
	immutable(t, filepath.Join(inbox, "stuck.jpg"), sample(t, "crop-disease/samples/mosaic.jpg"))
	for run := 1; run <= 2; run++ {
		d, srv := newTestDaemon(t, func(c *Config) { c.Inbox, c.DataDir = inbox, data })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { d.watch(ctx, inbox, 30*time.Millisecond); close(done) }()
		start := time.Now()
		waitFor(t, "the file stored and found unmovable", func() bool { return d.watchSt.snapshot().Unmovable == 1 })
		waitFor(t, "ten more polls", func() bool {
			last := d.watchSt.snapshot().LastPoll
			return last != nil && last.After(start.Add(300*time.Millisecond))
		})
		if n := queueCount(t, d); n != 1 {
			t.Fatalf("run %d: queue %d, want the unmovable file stored once across restarts", run, n)
		}
		if run == 2 {
			// A plain file where done/ belongs: the folder is unusable and /healthz says so.
			os.RemoveAll(filepath.Join(inbox, "done"))
			os.WriteFile(filepath.Join(inbox, "done"), []byte("x"), 0o644)
			waitFor(t, "/healthz to say the watch folder is unusable", func() bool {
				resp, err := http.Get(srv.URL + "/healthz")
				if err != nil {
					return false
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode == 503 && strings.Contains(string(b), "unusable")
			})
		}
		cancel()
		<-done
		srv.Close()
		d.Close()
	}
}

// immutable writes data to path and makes it immutable (chattr +i): even
// root cannot rename it, as on a read-only stick. Undone at cleanup.
func immutable(t *testing.T, path string, data []byte) {
	t.Helper()
	os.WriteFile(path, data, 0o644)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, 0x10 /* FS_IMMUTABLE_FL */); err != nil {
		t.Fatalf("chattr +i: %v", err)
	}
	t.Cleanup(func() { unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, 0); f.Close() })
}
