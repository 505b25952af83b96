package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/tts"
)

func run(t *testing.T, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	testutil.SileroPath(t) // fails clearly when `make deps` has not run
	t.Setenv("OUTPOST_ORT_LIB", testutil.LibPath(t))
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, bytes.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func speechWAV(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(testutil.Speak(t, "en", "Bring the leaf samples to the station tomorrow morning."))
	if err != nil {
		t.Fatal(err)
	}
	a, err := models.DecodeWAV(b)
	if err != nil {
		t.Fatal(err)
	}
	pad := make([]float32, a.SampleRate) // one second of silence each side
	s := append(append(append([]float32{}, pad...), a.Samples...), pad...)
	p := filepath.Join(t.TempDir(), "speech.wav")
	os.WriteFile(p, models.EncodeWAV(s, a.SampleRate), 0o644)
	return p
}

func TestMain_Help(t *testing.T) {
	out, _, code := run(t, nil, "help")
	if code != ExitOK || !strings.Contains(out, "outpost infer --model silero-vad speech.wav") {
		t.Fatalf("code %d, help:\n%s", code, out)
	}
	out, _, code = run(t, nil, "infer", "--help")
	if code != ExitOK || !strings.Contains(out, "Examples:") || !strings.Contains(out, "--vad-threshold") {
		t.Fatalf("code %d, infer help:\n%s", code, out)
	}
	_, errOut, code := run(t, nil, "frobnicate")
	if code != ExitUsage || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Fatalf("code %d: %s", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	out, _, code := run(t, nil, "version")
	if code != ExitOK || !strings.Contains(out, "outpost dev") || !strings.Contains(out, "onnxruntime 1.24.1") || !strings.Contains(out, "go go1.") {
		t.Fatalf("code %d:\n%s", code, out)
	}
}

func TestModels(t *testing.T) {
	out, _, code := run(t, nil, "models", "list", "--dir", testutil.ModelsDir(t))
	if code != ExitOK || !strings.Contains(out, "silero-vad") || !strings.Contains(out, "5.0.0") {
		t.Fatalf("code %d:\n%s", code, out)
	}
	out, _, code = run(t, nil, "models", "verify", "--json", "--dir", testutil.ModelsDir(t))
	var row map[string]any
	if code != ExitOK || json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &row) != nil || row["status"] != "ok" {
		t.Fatalf("code %d:\n%s", code, out)
	}
	// A directory with one good and one corrupted model: the good one is
	// listed, the bad one is reported with its reason, exit 1.
	dir := t.TempDir()
	for _, name := range []string{"good", "bad"} {
		d := filepath.Join(dir, name)
		os.MkdirAll(d, 0o755)
		man, _ := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "silero-vad", "manifest.json"))
		os.WriteFile(filepath.Join(d, "manifest.json"), []byte(strings.Replace(string(man), `"silero-vad"`, `"`+name+`"`, 1)), 0o644)
		src, _ := os.ReadFile(testutil.SileroPath(t))
		if name == "bad" {
			src[1000] ^= 0xff // one flipped byte
		}
		os.WriteFile(filepath.Join(d, "silero_vad_v5.onnx"), src, 0o644)
	}
	out, _, code = run(t, nil, "models", "verify", "--dir", dir)
	if code != ExitFailure || !strings.Contains(out, "good") || !strings.Contains(out, "checksum mismatch") {
		t.Fatalf("code %d:\n%s", code, out)
	}
	_, errOut, code := run(t, nil, "models", "delete")
	if code != ExitUsage || !strings.Contains(errOut, "want 'list' or 'verify'") {
		t.Fatalf("code %d: %s", code, errOut)
	}
}

func TestInfer(t *testing.T) {
	wav := speechWAV(t)
	md := testutil.ModelsDir(t)
	out, errOut, code := run(t, nil, "infer", "--models-dir", md, "--model", "silero-vad", wav)
	if code != ExitOK {
		t.Fatalf("code %d: %s", code, errOut)
	}
	var res struct {
		Model   string `json:"model"`
		Version string `json:"version"`
		Result  struct {
			Segments []models.Segment `json:"segments"`
		} `json:"result"`
		Timings map[string]float64 `json:"timings_ms"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if res.Model != "silero-vad" || res.Version != "5.0.0" || len(res.Result.Segments) == 0 || res.Timings["total"] <= 0 {
		t.Fatalf("result: %+v", res)
	}
	if s := res.Result.Segments[0]; s.Start < 0.8 || s.Start > 1.3 {
		t.Fatalf("speech starts at %.3f s, want about 1 s", s.Start)
	}

	// stdin, text format
	b, _ := os.ReadFile(wav)
	out, _, code = run(t, b, "infer", "--models-dir", md, "-m", "silero-vad", "--format", "text", "-")
	if code != ExitOK || !strings.Contains(out, "speech segment(s)") {
		t.Fatalf("code %d:\n%s", code, out)
	}

	// One bad input among good ones: the good one is still answered, exit 1.
	bad := filepath.Join(t.TempDir(), "truncated.wav")
	os.WriteFile(bad, b[:30], 0o644)
	out, errOut, code = run(t, nil, "infer", "--models-dir", md, "-m", "silero-vad", bad, wav, "/nonexistent.wav")
	if code != ExitFailure || strings.Count(out, "\n") != 1 || !strings.Contains(errOut, "truncated.wav") ||
		!strings.Contains(errOut, "bad input: wav") || !strings.Contains(errOut, "2 of 3 inputs failed") {
		t.Fatalf("code %d\nout: %s\nerr: %s", code, out, errOut)
	}
}

func TestInfer_Usage(t *testing.T) {
	md := testutil.ModelsDir(t)
	for _, c := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"infer", "x.wav"}, "--model is required", ExitUsage},
		{[]string{"infer", "-m", "silero-vad"}, "no input files", ExitUsage},
		{[]string{"infer", "-m", "silero-vad", "--format", "xml", "a"}, "--format must be json or text", ExitUsage},
		{[]string{"infer", "--models-dir", md, "-m", "nope", "a.wav"}, `unknown model "nope"`, ExitFailure},
		{[]string{"infer", "--ort-lib", "/nonexistent.so", "--models-dir", md, "-m", "silero-vad", "a.wav"}, "onnxruntime library not found", ExitFailure},
	} {
		_, errOut, code := run(t, nil, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: code %d, stderr %q; want %d and %q", c.args, code, errOut, c.code, c.want)
		}
	}
}

// TestBinary builds the real binary and runs it from another directory, so the
// library and models are found the way a user's shell finds them.
func TestBinary(t *testing.T) {
	root := testutil.Root(t)
	bin := filepath.Join(t.TempDir(), "outpost")
	build := exec.Command("go", "build", "-o", bin, "./cmd/outpost")
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	cmd := exec.Command(bin, "infer", "--models-dir", testutil.ModelsDir(t), "-m", "silero-vad", speechWAV(t))
	cmd.Dir = root // the build cache's library is found by walking up to go.mod
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"segments":[{"start"`) {
		t.Fatalf("%v\n%s", err, out)
	}
}

func TestInfer_CropAndKWS(t *testing.T) {
	md := testutil.ModelsDir(t)
	out, errOut, code := run(t, nil, "infer", "--models-dir", md, "-m", "crop-disease", "--lang", "fr", "--format", "text",
		filepath.Join(md, "crop-disease", "samples", "blight.jpg"))
	if code != ExitOK || !strings.Contains(out, "blight (") || !strings.Contains(out, "Brûlure") {
		t.Fatalf("crop (code %d): %s %s", code, out, errOut)
	}
	out, errOut, code = run(t, nil, "infer", "--models-dir", md, "-m", "kws", filepath.Join(md, "kws", "eval", "000_en_yes.wav"))
	if code != ExitOK || !strings.Contains(out, `"keywords":[{"keyword":"yes"`) {
		t.Fatalf("kws (code %d): %s %s", code, out, errOut)
	}
}

// TestFindings_SmallInputs: a WAV with no samples is bad input, not an
// empty result; a manifest whose labels do not match the model's classes
// fails verify; a bad model is listed with its folder.
func TestFindings_SmallInputs(t *testing.T) {
	md := testutil.ModelsDir(t)
	empty := filepath.Join(t.TempDir(), "empty.wav")
	hdr := []byte("RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00\x10\x00data\x00\x00\x00\x00")
	os.WriteFile(empty, hdr, 0o644)
	_, errOut, code := run(t, nil, "infer", "--models-dir", md, "-m", "silero-vad", empty)
	if code == ExitOK || !strings.Contains(errOut, "no samples") {
		t.Fatalf("empty wav: code %d: %s", code, errOut)
	}

	dir := t.TempDir()
	src := filepath.Join(md, "crop-disease")
	dst := filepath.Join(dir, "crop-disease")
	os.MkdirAll(dst, 0o755)
	for _, f := range []string{"manifest.json", "crop_disease_int8.onnx", "advice.json", "calibration.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "manifest.json" {
			b = []byte(strings.Replace(string(b), `"not_a_leaf"]`, `"not_a_leaf", "extra"]`, 1))
		}
		os.WriteFile(filepath.Join(dst, f), b, 0o644)
	}
	out, errOut, code := run(t, nil, "models", "verify", "--dir", dir)
	if code == ExitOK || !strings.Contains(out+errOut, "7 labels") {
		t.Fatalf("verify with 7 labels for 6 classes: code %d\n%s%s", code, out, errOut)
	}
	os.MkdirAll(filepath.Join(dir, "broken"), 0o755)
	os.WriteFile(filepath.Join(dir, "broken", "manifest.json"), []byte("{"), 0o644)
	out, _, _ = run(t, nil, "models", "list", "--dir", dir)
	if !strings.Contains(out, "broken") {
		t.Fatalf("bad manifest listed without its folder:\n%s", out)
	}
}

// TestSay: `outpost say` writes the kiosk's voice to a WAV, lists the
// voices, and says plainly that Hausa has none.
func TestSay(t *testing.T) {
	out := filepath.Join(t.TempDir(), "sw.wav")
	if _, errOut, code := run(t, nil, "say", "--lang", "sw", "--out", out, "Piga picha ya jani moja kwenye mwanga wa mchana."); code != ExitOK {
		t.Fatalf("say: %s", errOut)
	}
	b, _ := os.ReadFile(out)
	if d, err := tts.Duration(b); err != nil || d < time.Second || d > 10*time.Second {
		t.Fatalf("say wrote %d bytes, %v long: %v", len(b), d, err)
	}
	if o, _, code := run(t, nil, "say", "--voices"); code != ExitOK || !strings.Contains(o, "sw: sw") || !strings.Contains(o, "ha: none") {
		t.Fatalf("voices:\n%s", o)
	}
	if _, errOut, code := run(t, nil, "say", "--lang", "ha", "--out", out, "Sannu"); code == ExitOK || !strings.Contains(errOut, "no voice") {
		t.Fatalf("Hausa: %d %s", code, errOut)
	}
}

// TestModels_BenchProfile: `models verify --bench --profile` times the crop
// model's variants, then profiles each on this machine: the INT8 one spends
// its kernel time in QLinearConv, the FP32 one in Conv, both with time > 0.
// --profile alone is a usage error.
func TestModels_BenchProfile(t *testing.T) {
	out, errOut, code := run(t, nil, "models", "verify", "--bench", "--profile", "--runs", "2", "--dir", testutil.ModelsDir(t), "--data-dir", t.TempDir())
	if code != ExitOK {
		t.Fatalf("code %d: %s\n%s", code, errOut, out)
	}
	for _, want := range []string{"crop-disease-fp32 (crop-disease): ", "QLinearConv", "Conv ", "µs/INPUT"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	out, errOut, code = run(t, nil, "models", "verify", "--bench", "--profile", "--json", "--runs", "1", "--dir", testutil.ModelsDir(t), "--data-dir", t.TempDir())
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var profs []struct {
		Variant string `json:"variant"`
		Kernels int64  `json:"kernels_ns_per_run"`
		Ops     []struct {
			Op string `json:"op"`
		} `json:"ops"`
		Error string `json:"error"`
	}
	if code != ExitOK || json.Unmarshal([]byte(lines[len(lines)-1]), &profs) != nil {
		t.Fatalf("code %d: %s\n%s", code, errOut, out)
	}
	top := map[string]string{}
	for _, p := range profs {
		if p.Error != "" || p.Kernels <= 0 || len(p.Ops) == 0 {
			t.Fatalf("%s: %+v", p.Variant, p)
		}
		top[p.Variant] = p.Ops[0].Op
	}
	if top["crop-disease"] != "QLinearConv" || top["crop-disease-fp32"] != "Conv" {
		t.Fatalf("slowest operator per variant: %v", top)
	}
	if _, errOut, code := run(t, nil, "models", "verify", "--profile", "--dir", testutil.ModelsDir(t)); code != ExitUsage || !strings.Contains(errOut, "--profile goes with verify --bench") {
		t.Fatalf("--profile alone: code %d: %s", code, errOut)
	}
}
