package device

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSeedModels (issue 26): shipped models on a read-only system are run
// from a writable copy; a new release refreshes a copy no update touched;
// a model an update installed is kept.
func TestSeedModels(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	write := func(dir, name, manifest string) {
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		os.WriteFile(filepath.Join(dir, name, "manifest.json"), []byte(manifest), 0o644)
	}
	write(src, "crop", `{"v":1}`)
	write(src, "kws", `{"v":1}`)
	if got, err := SeedModels(src, dst); err != nil || len(got) != 2 {
		t.Fatalf("first seed: %v %v", got, err)
	}
	os.WriteFile(filepath.Join(dst, "kws", ".package.json"), []byte(`{"seq":3}`), 0o644) // updated in the field
	write(src, "crop", `{"v":2}`)
	write(src, "kws", `{"v":2}`)
	got, err := SeedModels(src, dst)
	if err != nil || len(got) != 1 || got[0] != "crop" {
		t.Fatalf("after a new release: %v %v, want crop refreshed and the updated kws kept", got, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "kws", "manifest.json")); string(b) != `{"v":1}` {
		t.Fatalf("the field update was overwritten: %s", b)
	}
	if got, _ := SeedModels(src, dst); len(got) != 0 {
		t.Fatalf("a third start copied %v again", got)
	}
}
