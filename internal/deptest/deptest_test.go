// Package deptest holds the test that keeps outpost's imports pointing the
// way docs/ARCHITECTURE.md draws them (tailscale's tstest/deptest idea):
// a package that imports against the direction fails `make lint`.
package deptest

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
)

const mod = "github.com/outpost-edge/outpost/"

// rules: for each package (prefix), module packages it must not import,
// directly or through others.
var rules = []struct {
	pkg       string
	forbidden []string
	why       string
}{
	{"runtime", []string{"models", "outbox", "sync", "hub", "internal/"}, "the inference seam knows nothing above it"},
	{"outbox", []string{"runtime", "models", "sync", "hub", "internal/"}, "the queue does not know the wire or the models"},
	{"models", []string{"outbox", "sync", "hub", "internal/"}, "models do not talk to the network or the queue"},
	{"sync", []string{"models", "runtime", "hub", "internal/"}, "the wire and uplink hold no hub or model logic"},
	{"hub", []string{"models", "runtime", "internal/"}, "the hub stores what devices send; it runs no models"},
	{"tts", []string{"models", "outbox", "sync", "hub", "runtime", "internal/"}, "speech synthesis knows nothing of models or the queue"},
	{"internal/device", []string{"internal/daemon", "internal/cli", "hub"}, "the device knows no HTTP, CLI or hub"},
	{"internal/daemon", []string{"internal/cli"}, "the daemon does not call back into the CLI"},
}

// leaves are packages anyone may import: they import nothing from outpost
// themselves (checked below). models/pkg (the signed package format) is
// one: the hub relays packages it never runs.
var leaves = []string{"internal/atomicfile", "internal/counter", "internal/httpguard", "internal/safefile", "models/pkg"}

// direct: standard packages a package must not import itself.
var direct = []struct {
	pkg       string
	forbidden []string
	why       string
}{
	{"internal/device", []string{"net/http"}, "the device is hosted by the daemon's HTTP API, it serves none itself (a second host, a CLI command, must not need it)"},
}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func TestImportRules(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps=false", "-json=ImportPath,Imports,Deps", "./...")
	cmd.Dir = testutil.Root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p.ImportPath, mod)
		if slices.Contains(leaves, rel) {
			for _, d := range p.Deps {
				if strings.HasPrefix(d, mod) {
					t.Errorf("%s is a leaf anyone may import, but it imports %s", rel, d)
				}
			}
		}
		for _, r := range direct {
			if rel != r.pkg {
				continue
			}
			checked++
			for _, f := range r.forbidden {
				if slices.Contains(p.Imports, f) {
					t.Errorf("%s imports %s: %s", rel, f, r.why)
				}
			}
		}
		for _, r := range rules {
			if rel != r.pkg && !strings.HasPrefix(rel, r.pkg+"/") {
				continue
			}
			checked++
			for _, d := range p.Deps {
				dr, ok := strings.CutPrefix(d, mod)
				if !ok {
					continue
				}
				if slices.Contains(leaves, dr) {
					continue
				}
				for _, f := range r.forbidden {
					if dr == f || strings.HasPrefix(dr, strings.TrimSuffix(f, "/")+"/") {
						t.Errorf("%s imports %s: %s", rel, dr, r.why)
					}
				}
			}
		}
	}
	if checked < 5 {
		t.Fatalf("checked only %d packages: is the rule table stale?", checked)
	}
}

// TestNoBareSleeps: a test waits on a condition (testutil.Eventually),
// never on the clock. A time.Sleep stays only where it is the scenario
// itself — a fault scheduled, a load paced, an outage held — and says so
// in a comment on its line or the line above.
func TestNoBareSleeps(t *testing.T) {
	root := testutil.Root(t)
	var bare []string
	total := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".cache" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, "deptest_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		lines := strings.Split(string(b), "\n")
		for i, l := range lines {
			if !strings.Contains(l, "time.Sleep(") {
				continue
			}
			total++
			if strings.Contains(l, "//") || i > 0 && strings.HasPrefix(strings.TrimSpace(lines[i-1]), "//") {
				continue
			}
			rel, _ := filepath.Rel(root, path)
			bare = append(bare, fmt.Sprintf("%s:%d: %s", rel, i+1, strings.TrimSpace(l)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bare {
		t.Errorf("a bare time.Sleep (wait with testutil.Eventually, or say why the pause is the scenario): %s", b)
	}
	t.Logf("%d time.Sleep calls in tests, each with its reason", total)
}
