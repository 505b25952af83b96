// Package armsmoke tests the linux/arm64 build end to end under
// qemu-aarch64-static: the cross-compiled binary with the arm64 ONNX Runtime
// must answer like the amd64 one. CI installs the cross toolchain and qemu
// (scripts/sysdeps.sh); a missing tool fails the test, it never skips.
package armsmoke

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models"
)

type inferOut struct {
	ID     string `json:"id"`
	Result struct {
		Segments []models.Segment `json:"segments"`
		Duration float64          `json:"duration"`
	} `json:"result"`
}

func build(t *testing.T, arch, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "outpost")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/outpost")
	cmd.Dir = testutil.Root(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH="+arch)
	if arch == "arm64" && goruntime.GOARCH != "arm64" {
		cmd.Env = append(cmd.Env, "CC=aarch64-linux-gnu-gcc")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", arch, err, out)
	}
	// The release layout: lib/ next to the binary, found without any env.
	os.MkdirAll(filepath.Join(dir, "lib"), 0o755)
	lib := filepath.Join(testutil.Root(t), ".cache", "onnxruntime", "1.24.1", "linux-"+arch, "libonnxruntime.so.1")
	if err := os.Symlink(lib, filepath.Join(dir, "lib", "libonnxruntime.so.1")); err != nil {
		t.Fatal(err)
	}
	return bin
}

// runner returns how to run an arm64 binary here: directly on arm64, else qemu.
func runner(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	if goruntime.GOARCH == "arm64" {
		return exec.Command(bin, args...)
	}
	q, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatalf("qemu-aarch64-static not installed (scripts/sysdeps.sh all): %v", err)
	}
	return exec.Command(q, append([]string{"-L", "/usr/aarch64-linux-gnu", bin}, args...)...)
}

func output(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	cmd.Env = append(os.Environ(), "OUTPOST_ORT_LIB=") // prove the library is found next to the binary
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", strings.Join(cmd.Args, " "), err, out, stderr.String())
	}
	return string(out)
}

func TestARM64Smoke(t *testing.T) {
	if _, err := exec.LookPath("aarch64-linux-gnu-gcc"); err != nil && goruntime.GOARCH != "arm64" {
		t.Fatalf("aarch64-linux-gnu-gcc not installed (scripts/sysdeps.sh all): %v", err)
	}
	armBin := build(t, "arm64", t.TempDir())
	hostBin := build(t, goruntime.GOARCH, t.TempDir())
	md := testutil.ModelsDir(t)

	v := output(t, runner(t, armBin, "version"))
	if !strings.Contains(v, "linux/arm64") || !strings.Contains(v, "onnxruntime 1.24.1") {
		t.Fatalf("arm64 version:\n%s", v)
	}
	if out := output(t, runner(t, armBin, "models", "verify", "--dir", md)); !strings.Contains(out, "silero-vad") || !strings.Contains(out, " ok") {
		t.Fatalf("arm64 models verify:\n%s", out)
	}

	// Same speech through both builds: segments must agree.
	wav := speech(t)
	data := t.TempDir()
	armOut := output(t, runner(t, armBin, "infer", "--models-dir", md, "-m", "silero-vad", "--data-dir", data, wav))
	hostOut := output(t, exec.Command(hostBin, "infer", "--models-dir", md, "-m", "silero-vad", wav))
	var a, h inferOut
	if err := json.Unmarshal([]byte(armOut), &a); err != nil {
		t.Fatalf("arm64 output: %v\n%s", err, armOut)
	}
	json.Unmarshal([]byte(hostOut), &h)
	if len(a.Result.Segments) == 0 || len(a.Result.Segments) != len(h.Result.Segments) {
		t.Fatalf("segments differ:\narm64 %+v\n%s   %+v", a.Result.Segments, goruntime.GOARCH, h.Result.Segments)
	}
	var maxT, maxP float64
	for i := range a.Result.Segments {
		as, hs := a.Result.Segments[i], h.Result.Segments[i]
		maxT = math.Max(maxT, math.Max(math.Abs(as.Start-hs.Start), math.Abs(as.End-hs.End)))
		maxP = math.Max(maxP, math.Abs(float64(as.Probability-hs.Probability)))
	}
	// One 32 ms chunk of boundary difference and 0.02 of probability: float
	// kernels differ between NEON and AVX, not the decisions.
	if maxT > 0.032 || maxP > 0.02 {
		t.Fatalf("arm64 vs %s: max boundary diff %.3f s, max probability diff %.4f", goruntime.GOARCH, maxT, maxP)
	}
	t.Logf("arm64 vs %s: %d segments, max boundary diff %.3f s, max probability diff %.4f", goruntime.GOARCH, len(a.Result.Segments), maxT, maxP)

	// The crop-disease INT8 model on the bundled photos: same labels, scores within 0.02.
	samples, _ := filepath.Glob(filepath.Join(md, "crop-disease", "samples", "*.jpg"))
	if len(samples) == 0 {
		t.Fatal("no crop-disease samples")
	}
	args := append([]string{"infer", "--models-dir", md, "-m", "crop-disease"}, samples...)
	armLines := strings.Split(strings.TrimSpace(output(t, runner(t, armBin, args...))), "\n")
	hostLines := strings.Split(strings.TrimSpace(output(t, exec.Command(hostBin, args...))), "\n")
	var maxS float64
	for i := range samples {
		var ar, hr struct {
			Result models.ClassResult `json:"result"`
		}
		json.Unmarshal([]byte(armLines[i]), &ar)
		json.Unmarshal([]byte(hostLines[i]), &hr)
		if ar.Result.Label == "" || ar.Result.Label != hr.Result.Label {
			t.Fatalf("%s: arm64 %q, %s %q", samples[i], ar.Result.Label, goruntime.GOARCH, hr.Result.Label)
		}
		maxS = math.Max(maxS, math.Abs(float64(ar.Result.Score-hr.Result.Score)))
	}
	if maxS > 0.02 {
		t.Fatalf("crop-disease scores differ by up to %.4f between arm64 and %s", maxS, goruntime.GOARCH)
	}
	t.Logf("crop-disease INT8 on %d photos: same labels, max score diff %.4f", len(samples), maxS)

	// A bring-your-own MobileNetV3-small, INT8 by the documented recipe,
	// added by the host build: the arm64 build gives the same answers
	// (integer kernels differ between NEON and AVX: scores within 0.05).
	exp := testutil.BYOExport(t)
	byo := t.TempDir()
	output(t, exec.Command(hostBin, "models", "add", filepath.Join(exp, "model_int8.onnx"), "--labels", filepath.Join(exp, "labels.txt"),
		"--name", "mnv3-int8", "--dir", byo))
	args = append([]string{"infer", "--models-dir", byo, "-m", "mnv3-int8"}, samples[:2]...)
	armLines = strings.Split(strings.TrimSpace(output(t, runner(t, armBin, args...))), "\n")
	hostLines = strings.Split(strings.TrimSpace(output(t, exec.Command(hostBin, args...))), "\n")
	maxS = 0
	for i := range samples[:2] {
		var ar, hr struct {
			Result models.ClassResult `json:"result"`
		}
		json.Unmarshal([]byte(armLines[i]), &ar)
		json.Unmarshal([]byte(hostLines[i]), &hr)
		if len(ar.Result.Top) == 0 || len(ar.Result.Top) != len(hr.Result.Top) || ar.Result.Top[0].Label != hr.Result.Top[0].Label {
			t.Fatalf("MobileNetV3 INT8 %s: arm64 %+v, %s %+v", samples[i], ar.Result, goruntime.GOARCH, hr.Result)
		}
		for k := range ar.Result.Top {
			maxS = math.Max(maxS, math.Abs(float64(ar.Result.Top[k].Score-hr.Result.Top[k].Score)))
		}
	}
	if maxS > 0.05 {
		t.Fatalf("MobileNetV3 INT8 scores differ by up to %.4f between arm64 and %s", maxS, goruntime.GOARCH)
	}
	t.Logf("MobileNetV3-small INT8 (bring your own) on 2 photos: same top label, max score diff %.4f", maxS)

	// The outbox the arm64 build wrote is read by the host build: one file format.
	stats := output(t, exec.Command(hostBin, "queue", "show", "--data-dir", data, a.ID))
	if !strings.Contains(stats, `"silero-vad"`) {
		t.Fatalf("host cannot read the arm64 outbox:\n%s", stats)
	}
}

func speech(t *testing.T) string {
	b, err := os.ReadFile(testutil.Speak(t, "sw", "Habari ya asubuhi. Majani ya mhogo yana madoa ya kahawia."))
	if err != nil {
		t.Fatal(err)
	}
	a, err := models.DecodeWAV(b)
	if err != nil {
		t.Fatal(err)
	}
	pad := make([]float32, a.SampleRate)
	p := filepath.Join(t.TempDir(), "speech.wav")
	os.WriteFile(p, models.EncodeWAV(append(append(append([]float32{}, pad...), a.Samples...), pad...), a.SampleRate), 0o644)
	return p
}
