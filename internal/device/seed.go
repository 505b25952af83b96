package device

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
)

// ModelsSubdir (in the data dir) holds the models a device runs when the
// shipped ones sit on a read-only system: under the unit's
// ProtectSystem=strict an update could not be installed
// ("mkdir …/.crop-disease.new-8: permission denied").
const ModelsSubdir = "models"

// SeedModels makes dst a writable copy of the shipped models in src: a
// model folder missing from dst is copied; one that was never updated by
// a package (no .package.json) is refreshed when the shipped one differs
// (a new release); one an update installed is kept. The shipped folder
// stays the read-only fallback. It returns the folders it copied.
func SeedModels(src, dst string) ([]string, error) {
	ents, err := os.ReadDir(src)
	if err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	if err := os.MkdirAll(dst, 0o750); err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	var copied []string
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		have := filepath.Join(dst, name)
		if _, err := os.Stat(filepath.Join(have, ".package.json")); err == nil {
			continue // installed by an update: newer than what shipped
		}
		if sameFile(filepath.Join(src, name, "manifest.json"), filepath.Join(have, "manifest.json")) {
			continue
		}
		tmp := filepath.Join(dst, "."+name+".seed")
		os.RemoveAll(tmp)
		if err := os.CopyFS(tmp, os.DirFS(filepath.Join(src, name))); err != nil {
			os.RemoveAll(tmp)
			return copied, fmt.Errorf("models: copy %s: %w", name, err)
		}
		os.RemoveAll(have)
		if err := os.Rename(tmp, have); err != nil {
			return copied, fmt.Errorf("models: %w", err)
		}
		copied = append(copied, name)
	}
	return copied, atomicfile.SyncDir(dst)
}

func sameFile(a, b string) bool {
	x, err1 := safefile.ReadFile(a, 1<<20)
	y, err2 := safefile.ReadFile(b, 1<<20)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
