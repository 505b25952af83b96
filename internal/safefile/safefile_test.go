package safefile

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestReadFile_Hostile: what a stick or an inbox may hold instead of a
// file — a symlink to /dev/zero (it killed the daemon through a receipt),
// a FIFO, a hard link, a file over the limit — is refused by name, unread.
func TestReadFile_Hostile(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	os.WriteFile(p("ok"), []byte("hello"), 0o644)
	os.Symlink("/dev/zero", p("zero"))
	syscall.Mkfifo(p("fifo"), 0o644)
	os.Link(p("ok"), p("hard"))
	os.WriteFile(p("big"), make([]byte, 100), 0o644)
	os.Mkdir(p("dir"), 0o755)
	for _, c := range []struct {
		name string
		want error
	}{{"zero", ErrNotRegular}, {"fifo", ErrNotRegular}, {"hard", ErrNotRegular}, {"big", ErrTooLarge}, {"dir", ErrNotRegular}} {
		if _, err := ReadFile(p(c.name), 10); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	os.Remove(p("hard"))
	if b, err := ReadFile(p("ok"), 10); err != nil || string(b) != "hello" {
		t.Fatalf("a plain file: %q %v", b, err)
	}
}
