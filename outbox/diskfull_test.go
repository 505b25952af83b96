package outbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDiskFull fills a real 2 MiB tmpfs (mounted by the test; CI runs as
// root) until intake fails, then checks the error is clear, every record
// stored before is intact, and intake resumes when space returns.
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small")
	os.Mkdir(mnt, 0o755)
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m"); err != nil {
		if os.Geteuid() == 0 {
			t.Fatalf("mount tmpfs as root: %v", err)
		}
		// Not root (a developer's own account): same test on RLIMIT_FSIZE in a child.
		diskFullRlimit(t)
		return
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	// Ballast takes most of the space; deleting it is "space returns".
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 1200<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	runDiskFull(t, filepath.Join(mnt, "outbox.db"), func() { os.Remove(ballast) })
}

func runDiskFull(t *testing.T, path string, freeSpace func()) {
	ob := open(t, path, Options{})
	payload := strings.Repeat("r", 2000)
	var stored []ID
	var fullErr error
	for i := 0; i < 5000; i++ {
		id, err := ob.Append(context.Background(), rec(Normal, payload), nil)
		if err != nil {
			fullErr = err
			break
		}
		stored = append(stored, id)
	}
	if fullErr == nil {
		t.Fatal("the filesystem never filled")
	}
	if !errors.Is(fullErr, ErrDiskFull) || !strings.Contains(fullErr.Error(), path) {
		t.Fatalf("error does not say disk full and where: %v", fullErr)
	}
	t.Logf("full after %d records: %v", len(stored), fullErr)
	// Another attempt fails the same way — or fits, when the failed commit
	// left a page or two free — but never with another error.
	if id, err := ob.Append(context.Background(), rec(Normal, payload), nil); err == nil {
		stored = append(stored, id)
	} else if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("second append on a full disk: %v", err)
	}
	for _, id := range stored {
		if _, err := ob.Get(id); err != nil {
			t.Fatalf("record stored before the disk filled is unreadable: %v", err)
		}
	}
	freeSpace()
	if _, err := ob.Append(context.Background(), rec(Normal, "after"), nil); err != nil {
		t.Fatalf("intake did not resume after space returned: %v", err)
	}
	// And everything survives a reopen.
	ob.Close()
	ob2 := open(t, path, Options{})
	st, _ := ob2.Stats()
	if st.Count != int64(len(stored))+1 {
		t.Fatalf("after reopen %d records, want %d", st.Count, len(stored)+1)
	}
}

// diskFullRlimit runs runDiskFull in a child whose file-size limit is low,
// raising it again as "space returns".
func diskFullRlimit(t *testing.T) {
	if os.Getenv("OUTBOX_RLIMIT_CHILD") == "" {
		cmd := selfCommand("-test.run=^TestDiskFull$", "-test.v")
		cmd.Env = append(os.Environ(), "OUTBOX_RLIMIT_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("rlimit child: %v\n%s", err, out)
		}
		return
	}
	var old syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old)
	// Without ignoring SIGXFSZ the kernel kills the process instead of returning EFBIG.
	ignoreSIGXFSZ()
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 1 << 20, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	runDiskFull(t, filepath.Join(t.TempDir(), "outbox.db"), func() {
		syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	})
}
