package models_test

import (
	"context"
	crand "crypto/rand"
	"errors"
	"math"
	"math/rand"
	"os"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

// sileroPipeline opens the real Silero VAD v5 model through the registry.
func sileroPipeline(t *testing.T) (models.Pipeline, *models.Model) { return sileroPipelineB(t) }

func sileroPipelineB(t testing.TB) (models.Pipeline, *models.Model) {
	t.Helper()
	testutil.SileroPath(t)
	reg, err := models.LoadDir(testutil.ModelsDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Problems()) > 0 {
		t.Fatalf("bundled models have problems: %v", reg.Problems())
	}
	m, err := reg.Get("silero-vad")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := m.Open(testutil.ORT(t).Loader(onnx.SessionOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	p, err := models.NewPipeline(m, sess, models.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p, m
}

// speechBounds is where the audible part of a clip starts and ends (seconds),
// by a simple 10 ms energy gate: the ground truth the VAD is compared with.
func speechBounds(a *models.Audio) (float64, float64) {
	win := a.SampleRate / 100
	first, last := -1, -1
	for i := 0; i+win <= len(a.Samples); i += win {
		var e float64
		for _, s := range a.Samples[i : i+win] {
			e += float64(s * s)
		}
		if math.Sqrt(e/float64(win)) > 0.02 {
			if first < 0 {
				first = i
			}
			last = i + win
		}
	}
	return float64(first) / float64(a.SampleRate), float64(last) / float64(a.SampleRate)
}

// padded puts lead seconds of quiet noise before the clip and tail after.
func padded(a *models.Audio, lead, tail float64, seed int64) *models.Audio {
	r := rand.New(rand.NewSource(seed))
	noise := func(sec float64) []float32 {
		x := make([]float32, int(sec*float64(a.SampleRate)))
		for i := range x {
			x[i] = float32(r.NormFloat64() * 0.002) // -54 dBFS room noise
		}
		return x
	}
	s := append(noise(lead), a.Samples...)
	s = append(s, noise(tail)...)
	return &models.Audio{SampleRate: a.SampleRate, Channels: 1, Samples: s}
}

func TestVAD_SileroSpeech(t *testing.T) {
	p, _ := sileroPipeline(t)
	for _, c := range []struct{ voice, text string }{
		{"en", "Please check the maize leaves in the north field for rust."},
		{"sw", "Tafadhali angalia majani ya mahindi shambani."},
		{"fr", "Les feuilles de manioc ont des taches brunes."},
	} {
		t.Run(c.voice, func(t *testing.T) {
			b, err := os.ReadFile(testutil.Speak(t, c.voice, c.text))
			if err != nil {
				t.Fatal(err)
			}
			clip, err := models.DecodeWAV(b)
			if err != nil {
				t.Fatal(err)
			}
			start, end := speechBounds(clip)
			const lead, tail = 1.5, 2.0
			in := padded(clip, lead, tail, 1)
			res, err := p.Infer(context.Background(), models.Input{Name: c.voice + ".wav", Data: models.EncodeWAV(in.Samples, in.SampleRate)})
			if err != nil {
				t.Fatal(err)
			}
			out := res.Output.(*models.VADResult)
			if len(out.Segments) == 0 {
				t.Fatalf("no speech found in %q", c.text)
			}
			got0, got1 := out.Segments[0].Start, out.Segments[len(out.Segments)-1].End
			want0, want1 := lead+start, lead+end
			// Tolerance: one 32 ms chunk, the 30 ms pad, plus the VAD's own onset/offset lag.
			if math.Abs(got0-want0) > 0.15 || math.Abs(got1-want1) > 0.25 {
				t.Fatalf("speech %.3f–%.3f s, want %.3f–%.3f s (±0.15/0.25); segments %+v", got0, got1, want0, want1, out.Segments)
			}
			for _, s := range out.Segments {
				if s.Probability < 0.5 {
					t.Errorf("segment %+v has low mean probability", s)
				}
			}
			if res.Timings.Total <= 0 || res.Timings.Inference <= 0 {
				t.Errorf("timings not measured: %+v", res.Timings)
			}
		})
	}
}

func TestVAD_SileroSilence(t *testing.T) {
	p, _ := sileroPipeline(t)
	quiet := padded(&models.Audio{SampleRate: 16000}, 3, 0, 2)
	res, err := p.Infer(context.Background(), models.Input{Name: "noise.wav", Data: models.EncodeWAV(quiet.Samples, 16000)})
	if err != nil {
		t.Fatal(err)
	}
	if out := res.Output.(*models.VADResult); len(out.Segments) != 0 || out.Duration != 3 {
		t.Fatalf("speech in silence: %+v", out)
	}
}

func TestVAD_SileroBadInput(t *testing.T) {
	p, _ := sileroPipeline(t)
	good := models.EncodeWAV(make([]float32, 1600), 16000)
	for name, b := range map[string][]byte{
		"empty": nil, "garbage": []byte("GIF89a not a wav"), "truncated header": good[:20],
	} {
		if _, err := p.Infer(context.Background(), models.Input{Name: name, Data: b}); !errors.Is(err, models.ErrBadInput) {
			t.Errorf("%s: err = %v, want ErrBadInput", name, err)
		}
	}
	// A clip shorter than one chunk still works (zero-padded).
	if _, err := p.Infer(context.Background(), models.Input{Name: "short", Data: good[:44+200]}); err != nil {
		t.Errorf("short clip: %v", err)
	}
}

func TestModel_OpenMismatch(t *testing.T) {
	reg, _ := models.LoadDir(testutil.ModelsDir(t))
	m, _ := reg.Get("silero-vad")
	bad := *m
	bad.Inputs = append([]runtime.TensorInfo(nil), m.Inputs...)
	bad.Inputs[2].DType = runtime.Float32
	_, err := bad.Open(testutil.ORT(t).Loader(onnx.SessionOptions{}))
	if !errors.Is(err, models.ErrModelMismatch) {
		t.Fatalf("err = %v", err)
	}
	// Random bytes with a matching checksum still fail as a bad model, clearly.
	dir := t.TempDir()
	junk := make([]byte, 1000)
	crand.Read(junk)
	os.WriteFile(dir+"/junk.onnx", junk, 0o644)
	bad.Path = dir + "/junk.onnx"
	bad.SHA256 = sha(junk)
	if _, err := bad.Open(testutil.ORT(t).Loader(onnx.SessionOptions{})); !errors.Is(err, onnx.ErrBadModel) {
		t.Fatalf("junk model: err = %v", err)
	}
}

// noBinder hides runtime.Binder: the VAD then runs chunk by chunk through
// RunInto, as it does for a session that cannot bind.
type noBinder struct {
	runtime.Session
	runtime.IntoRunner
}

// countingBinder counts binds and plain runs, to see which loop ran.
type countingBinder struct {
	runtime.Session
	bd          runtime.Binder
	binds, runs int
}

func (c *countingBinder) Bind(in, out map[string]*runtime.Tensor) (runtime.Bound, error) {
	c.binds++
	return c.bd.Bind(in, out)
}

func (c *countingBinder) Run(ctx context.Context, in map[string]*runtime.Tensor) (map[string]*runtime.Tensor, error) {
	c.runs++
	return c.Session.Run(ctx, in)
}

// TestVAD_BoundMatchesRunInto: the VAD's bound loop (two bindings with the
// state crossed, the frame written in place) gives bit for bit the
// probabilities of the chunk-by-chunk loop, over a spoken sentence.
func TestVAD_BoundMatchesRunInto(t *testing.T) {
	m, sess := openBundled(t, "silero-vad")
	if _, ok := sess.(runtime.Binder); !ok {
		t.Fatal("the ONNX session does not bind")
	}
	b, err := os.ReadFile(testutil.Speak(t, "sw", "Tafadhali angalia majani ya mahindi shambani."))
	if err != nil {
		t.Fatal(err)
	}
	clip, err := models.DecodeWAV(b)
	if err != nil {
		t.Fatal(err)
	}
	samples := models.Resample(clip.Samples, clip.SampleRate, 16000)
	var got [2][]float32
	counted := &countingBinder{Session: sess, bd: sess.(runtime.Binder)}
	for k, s := range []runtime.Session{counted, noBinder{sess, sess.(runtime.IntoRunner)}} {
		v, err := models.NewVAD(s, &m.Manifest, models.VADOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got[k], err = v.Probabilities(context.Background(), samples); err != nil {
			t.Fatal(err)
		}
	}
	if counted.binds != 2 || counted.runs != 0 {
		t.Fatalf("bound loop not taken: %d binds, %d plain runs", counted.binds, counted.runs)
	}
	if len(got[0]) < 50 || len(got[0]) != len(got[1]) {
		t.Fatalf("%d and %d chunks", len(got[0]), len(got[1]))
	}
	speech := 0
	for i := range got[0] {
		if got[0][i] != got[1][i] {
			t.Fatalf("chunk %d: bound %v, chunk by chunk %v", i, got[0][i], got[1][i])
		}
		if got[0][i] > 0.5 {
			speech++
		}
	}
	if speech < 10 {
		t.Fatalf("only %d of %d chunks heard as speech", speech, len(got[0]))
	}
}
