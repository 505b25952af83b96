package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	byoOnce sync.Once
	byoErr  error
)

// BYOExport runs examples/byo/export.py (torchvision MobileNetV3-small,
// random weights, 224x224, ImageNet normalisation, NCHW; FP32 and INT8 by
// the recipe docs/MODELS.md gives, calibrated on the crop generator's
// gate/ photos) once, cached under .cache/byo by the script's hash, and
// returns the folder holding model_fp32.onnx, model_int8.onnx, labels.txt,
// ref.json and ref_inputs.f32. It needs Debian's python3-torch,
// python3-torchvision and python3-onnx, which `make test` installs
// (scripts/sysdeps.sh test).
func BYOExport(t testing.TB) string {
	t.Helper()
	root := Root(t)
	script := filepath.Join(root, "examples", "byo", "export.py")
	src, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	// The export is keyed by the script and by the calibration photos: a
	// regenerated set changed the INT8 model in a fresh clone (CI) but not
	// in a warm cache, and the two disagreed (mean cosine 0.70 vs ≥ 0.9).
	calib := filepath.Join(root, "models", "crop-disease", "photo")
	h := sha256.New()
	h.Write(src)
	files, _ := filepath.Glob(filepath.Join(calib, "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(filepath.Base(f)))
		h.Write(b)
	}
	sum := h.Sum(nil)
	dir := filepath.Join(root, ".cache", "byo", hex.EncodeToString(sum[:8]))
	byoOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(dir, "ref.json")); err == nil {
			return
		}
		// Test binaries of several packages may export at once: each in
		// its own temporary folder, the first rename wins.
		os.MkdirAll(filepath.Dir(dir), 0o755)
		tmp, err := os.MkdirTemp(filepath.Dir(dir), "export-")
		if err != nil {
			byoErr = err
			return
		}
		defer os.RemoveAll(tmp)
		out, err := exec.Command("/usr/bin/python3", script, tmp, "--calib", calib).CombinedOutput()
		if err != nil {
			t.Logf("%s", out)
			byoErr = err
			return
		}
		if err := os.Rename(tmp, dir); err != nil {
			if _, serr := os.Stat(filepath.Join(dir, "ref.json")); serr != nil {
				byoErr = err
			}
		}
	})
	if byoErr != nil {
		t.Fatalf("examples/byo/export.py (needs python3-torch python3-torchvision python3-onnx; make test installs them): %v", byoErr)
	}
	return dir
}
