package powercut_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/powercut"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestStickPulled_AtEveryStep (issue 27): `bundle export` panicked when the
// stick vanished right after the write (3 of 30 tries) and interrupted
// exports left temp files on the stick. Here the stick is a FUSE
// filesystem pulled out after each k-th operation of a whole export (every
// later operation fails with EIO, as the kernel answers for a removed
// device), then plugged back in having lost what was not fsynced. Each
// time: a clear error or a complete bundle, never a panic; every result
// and photo still on the device; the next export on the same stick leaves
// no temp file and a bundle the hub imports whole.
func TestStickPulled_AtEveryStep(t *testing.T) {
	stick := powercut.MountT(t)
	dir := t.TempDir()
	t.Setenv("OUTPOST_ORT_LIB", testutil.LibPath(t))
	main := func(args ...string) (string, int) {
		var out, errOut bytes.Buffer
		code := cli.Main(context.Background(), args, nil, &out, &errOut)
		return out.String() + errOut.String(), code
	}
	if out, code := main("keys", "generate", "--out", filepath.Join(dir, "hub.key")); code != 0 {
		t.Fatal(out)
	}
	cfg := filepath.Join(dir, "config.json")
	b, _ := json.Marshal(map[string]any{"device_id": "kiosk-usb", "data_dir": filepath.Join(dir, "data"),
		"sharing": map[string]any{"crop-disease": map[string]any{"evidence": "always", "form": "original"}}})
	os.WriteFile(cfg, b, 0o644)
	samples := filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples")
	if out, code := main("infer", "--config", cfg, "--models-dir", testutil.ModelsDir(t), "-m", "crop-disease",
		filepath.Join(samples, "rust.jpg"), filepath.Join(samples, "blight.jpg"), filepath.Join(samples, "mosaic.jpg")); code != 0 {
		t.Fatal(out)
	}
	waiting := func() int64 {
		out, _ := main("queue", "stats", "--json", "--config", cfg)
		var st outbox.Stats
		json.Unmarshal([]byte(strings.TrimSpace(out)), &st)
		return st.Count
	}
	want := waiting()
	if want != 6 {
		t.Fatalf("%d records on the device, want 3 results and 3 photos", want)
	}
	// One whole export to count its operations.
	before := stick.Ops()
	if out, code := main("bundle", "export", "--out", stick.Dir(), "--config", cfg); code != 0 {
		t.Fatalf("export: %s", out)
	}
	total := stick.Ops() - before
	clean := func() {
		ents, _ := os.ReadDir(stick.Dir())
		for _, e := range ents {
			os.Remove(filepath.Join(stick.Dir(), e.Name()))
		}
	}
	clean()
	step := max(1, total/60)
	var failed, completed int
	for k := int64(0); k <= total; k += step {
		stick.Pull(k)
		out, code := main("bundle", "export", "--out", stick.Dir(), "--config", cfg)
		stick.Pull(-1)
		if _, err := stick.Cut(false, nil); err != nil {
			t.Fatal(err)
		}
		if code == 0 {
			completed++
		} else {
			failed++
			if !strings.Contains(out, "input/output error") && !strings.Contains(out, "gone") {
				t.Errorf("pulled after %d of %d operations: an unclear error: %s", k, total, out)
			}
		}
		if n := waiting(); n != want {
			t.Fatalf("pulled after %d operations: %d records on the device, want %d", k, n, want)
		}
		// Plugged back in: the next export cleans up and completes.
		if out, code := main("bundle", "export", "--out", stick.Dir(), "--config", cfg); code != 0 {
			t.Fatalf("pulled after %d operations, the next export: %s", k, out)
		}
		ents, _ := os.ReadDir(stick.Dir())
		var bundles []string
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp") {
				t.Errorf("pulled after %d operations: a temp file stayed on the stick after the next export: %s", k, e.Name())
			}
			if strings.HasSuffix(e.Name(), osync.BundleExt) {
				bundles = append(bundles, e.Name())
			}
		}
		if k == 0 || k+step > total {
			// The bundle the next export wrote imports whole.
			st, err := hub.OpenBolt(filepath.Join(t.TempDir(), "hub.db"))
			if err != nil {
				t.Fatal(err)
			}
			key, _ := os.ReadFile(filepath.Join(dir, "hub.key"))
			priv, _ := osync.ParsePrivateKey(key)
			var stored int64
			for _, f := range bundles {
				if _, _, c, err := hub.ImportBundle(context.Background(), st, filepath.Join(stick.Dir(), f), priv, nil, time.Now()); err == nil {
					stored += c.New
				}
			}
			st.Close()
			if stored != 3 {
				t.Fatalf("pulled after %d operations: the stick's bundles %v import %d new results, want 3", k, bundles, stored)
			}
		}
		clean()
	}
	t.Logf("stick pulled at %d points of a %d-operation export: %d clear errors, %d exports completed before the pull; 0 panics, 0 records lost, 0 temp files left", failed+completed, total, failed, completed)
}
