package models_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/image/draw"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/runtime/onnx"

	"github.com/outpost-edge/outpost/models"
)

// BenchmarkVADPipeline runs 10 s of 44.1 kHz audio (decode, resample to
// 16 kHz, 313 Silero chunks, segmentation) and reports the real-time factor:
// seconds of processing per second of audio (lower is better; a Pi 4 needs
// this well under 1 to keep up with a microphone). The share spent outside
// ORT is the Go pipeline's overhead.
func BenchmarkVADPipeline(b *testing.B) {
	p, _ := sileroPipelineB(b)
	const rate, secs = 44100, 10
	x := make([]float32, rate*secs)
	for i := range x {
		x[i] = float32(0.3 * math.Sin(2*math.Pi*220*float64(i)/rate) * math.Sin(2*math.Pi*0.5*float64(i)/rate))
	}
	wav := models.EncodeWAV(x, rate)
	var infer, total float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := p.Infer(context.Background(), models.Input{Name: "bench.wav", Data: wav})
		if err != nil {
			b.Fatal(err)
		}
		infer += r.Timings.Inference
		total += r.Timings.Total
	}
	b.ReportMetric(total/float64(b.N)/1000/secs, "rtf")
	b.ReportMetric((total-infer)/total, "non-ort-share")
}

// BenchmarkCropDisease compares INT8 and FP32 per-input latency on the same
// preprocessed leaf (interleaved call by call), and the whole Go pipeline
// (JPEG decode, EXIF, crop, Catmull-Rom resize, normalise, softmax, advice)
// on a 480x480 sample photo against the INT8 model's raw Run.
func BenchmarkCropDisease(b *testing.B) {
	jpg, err := os.ReadFile(filepath.Join(testutil.ModelsDir(b), "crop-disease", "samples", "rust.jpg"))
	if err != nil {
		b.Fatal(err)
	}
	reg, _ := models.LoadDir(testutil.ModelsDir(b))
	open := func(name string) (*models.Model, runtime.Session) {
		m, err := reg.Get(name)
		if err != nil {
			b.Fatal(err)
		}
		s, err := m.Open(testutil.ORT(b).Loader(onnx.SessionOptions{}))
		if err != nil {
			b.Fatal(err)
		}
		return m, s
	}
	m8, s8 := open("crop-disease")
	_, s32 := open("crop-disease-fp32")
	defer s8.Close()
	defer s32.Close()
	img, _ := models.DecodeImage(jpg)
	in, _ := models.ImageTensor(img, m8.Preprocessing)
	feeds := map[string]*runtime.Tensor{"input": in}
	p, _ := models.NewPipeline(m8, s8, models.PipelineOptions{})
	ctx := context.Background()
	// The gate sees what the pipeline decodes: the JPEG at reduced scale.
	scaled, _ := models.DecodeImageScaled(jpg, m8.Preprocessing.Width, m8.Preprocessing.Height)
	compareVariants(b,
		func() error { _, err := s8.Run(ctx, feeds); return err },
		func() error { _, err := s32.Run(ctx, feeds); return err },
		func() error { _, err := p.Infer(ctx, models.Input{Name: "rust.jpg", Data: jpg}); return err },
		func() error { models.MeasureQuality(scaled, 96, 96); return nil })
}

// compareVariants interleaves the INT8 run, the FP32 run and the whole
// pipeline b.N times each and reports latencies and ratios.
// gate, if not nil, is the photo quality gate on the decoded photo: its
// cost is reported against the INT8 run's.
func compareVariants(b *testing.B, run8, run32, pipe, gate func() error) {
	timed := func(f func() error) time.Duration {
		t0 := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	for i := 0; i < 20; i++ {
		run8()
		run32()
		pipe()
	}
	var t8, t32, tp, tg time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t8 += timed(run8)
		t32 += timed(run32)
		tp += timed(pipe)
		if gate != nil {
			tg += timed(gate)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(t8.Microseconds())/n, "int8-µs")
	b.ReportMetric(float64(t32.Microseconds())/n, "fp32-µs")
	b.ReportMetric(float64(t32)/float64(t8), "int8-speedup")
	b.ReportMetric(float64(tp.Microseconds())/n, "pipeline-µs")
	b.ReportMetric(float64(tp)/float64(t8), "pipeline/run")
	if gate != nil {
		b.ReportMetric(float64(tg.Microseconds())/n, "gate-µs")
		b.ReportMetric(float64(tg)/float64(t8), "gate/run")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkKWS: one 1 s window through the INT8 and FP32 keyword models,
// and the whole pipeline (WAV decode, Silero VAD, log-mel, classify) on a
// held-out clip.
func BenchmarkKWS(b *testing.B) {
	wav, err := os.ReadFile(filepath.Join(testutil.ModelsDir(b), "kws", "eval", "000_en_yes.wav"))
	if err != nil {
		b.Fatal(err)
	}
	reg, _ := models.LoadDir(testutil.ModelsDir(b))
	load := testutil.ORT(b).Loader(onnx.SessionOptions{})
	var sess [2]runtime.Session
	// The DS-CNN pair (INT8, FP32) take the log-mel window; the default
	// "kws" is a head on the speech embedding, timed as the pipeline.
	for i, name := range []string{"kws-dscnn", "kws-fp32"} {
		m, _ := reg.Get(name)
		s, err := m.Open(load)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		sess[i] = s
	}
	p := kwsPipeline(b, "kws")
	a, _ := models.DecodeWAV(wav)
	window := make([]float32, 16000)
	copy(window, a.Samples)
	feats, frames := models.LogMel(window)
	in, _ := runtime.NewFloat32(runtime.Shape{1, 1, int64(frames), models.MelBins}, feats)
	feeds := map[string]*runtime.Tensor{"input": in}
	ctx := context.Background()
	compareVariants(b,
		func() error { _, err := sess[0].Run(ctx, feeds); return err },
		func() error { _, err := sess[1].Run(ctx, feeds); return err },
		func() error { _, err := p.Infer(ctx, models.Input{Name: "yes.wav", Data: wav}); return err }, nil)
}

// BenchmarkGuide: one camera-guidance frame (a 320x240 JPEG the kiosk
// sends a few times a second: decode, measure, the gate, the words)
// against the whole diagnosis of the same frame in the same run.
func BenchmarkGuide(b *testing.B) {
	jpg, err := os.ReadFile(filepath.Join(testutil.ModelsDir(b), "crop-disease", "samples", "rust.jpg"))
	if err != nil {
		b.Fatal(err)
	}
	img, _ := models.DecodeImage(jpg)
	small := image.NewRGBA(image.Rect(0, 0, 320, 240))
	draw.CatmullRom.Scale(small, small.Bounds(), img, img.Bounds(), draw.Src, nil)
	var frame bytes.Buffer
	jpeg.Encode(&frame, small, &jpeg.Options{Quality: 70})
	reg, _ := models.LoadDir(testutil.ModelsDir(b))
	m, err := reg.Get("crop-disease")
	if err != nil {
		b.Fatal(err)
	}
	s, err := m.Open(testutil.ORT(b).Loader(onnx.SessionOptions{}))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p, _ := models.NewPipeline(m, s, models.PipelineOptions{})
	ctx := context.Background()
	var guide, diag time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := models.Guide(m, frame.Bytes(), "sw"); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := p.Infer(ctx, models.Input{Name: "frame.jpg", Data: frame.Bytes()}); err != nil {
			b.Fatal(err)
		}
		guide, diag = guide+t1.Sub(t0), diag+time.Since(t1)
	}
	b.ReportMetric(float64(guide.Microseconds())/float64(b.N)/1000, "ms/guide-frame")
	b.ReportMetric(float64(guide)/float64(diag), "guide/diagnosis")
}

// BenchmarkCropDiseaseProfile (make bench): both crop-disease variants under
// ONNX Runtime's profiler, 300 runs each on the same photo's tensor; logs
// the time per operator type per run, and reports the INT8 graph's time in
// float operators and in (de)quantisation — the "float islands" an INT8
// export can leave — beside its integer kernels.
func BenchmarkCropDiseaseProfile(b *testing.B) {
	jpg, err := os.ReadFile(filepath.Join(testutil.ModelsDir(b), "crop-disease", "samples", "rust.jpg"))
	if err != nil {
		b.Fatal(err)
	}
	reg, _ := models.LoadDir(testutil.ModelsDir(b))
	const runs = 300
	profile := func(name string) (*onnx.Profile, *models.Model) {
		m, err := reg.Get(name)
		if err != nil {
			b.Fatal(err)
		}
		prefix := filepath.Join(b.TempDir(), "ort")
		s, err := m.Open(testutil.ORT(b).Loader(onnx.SessionOptions{ProfilePrefix: prefix}))
		if err != nil {
			b.Fatal(err)
		}
		img, _ := models.DecodeImage(jpg)
		in, _ := models.ImageTensor(img, m.Preprocessing)
		for range runs {
			if _, err := s.Run(context.Background(), map[string]*runtime.Tensor{"input": in}); err != nil {
				b.Fatal(err)
			}
		}
		s.Close()
		prof, err := onnx.ReadProfiles(prefix)
		if err != nil {
			b.Fatal(err)
		}
		return prof, m
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / runs }
	var quant, float, integer, all32 float64
	convs := map[string][]onnx.NodeTime{}
	var names []string
	for _, m := range models.Variants(reg)["crop-disease"] {
		names = append(names, m.Name)
	}
	for _, name := range names {
		prof, _ := profile(name)
		for _, n := range prof.Nodes {
			if n.Op == "Conv" || n.Op == "QLinearConv" {
				convs[name] = append(convs[name], n)
			}
		}
		var lines []string
		var total float64
		for _, o := range prof.Ops {
			us := per(o.Total)
			total += us
			lines = append(lines, fmt.Sprintf("  %-22s %3d nodes %8.1f µs/run", o.Op, o.Nodes, us))
			switch {
			case name == "crop-disease-fp32":
				all32 += us
			case name != "crop-disease":
			case o.Op == "QuantizeLinear" || o.Op == "DequantizeLinear" || o.Op == "DynamicQuantizeLinear":
				quant += us
			case strings.HasPrefix(o.Op, "QLinear") || strings.Contains(o.Op, "Integer") || strings.HasPrefix(o.Op, "QGemm") || strings.HasPrefix(o.Op, "QAttention"):
				integer += us
			default:
				float += us
			}
		}
		// Printed whole (a benchmark's log is cut at ten lines).
		fmt.Printf("%s: %.1f µs/run in kernels\n%s\n", name, total, strings.Join(lines, "\n"))
	}
	// Conv by conv, in execution order (both graphs run the same 13).
	f := convs["crop-disease-fp32"]
	head := "  conv  weights        "
	for _, name := range names {
		head += fmt.Sprintf(" %18s", name)
	}
	lines := []string{head + "  (µs per run)"}
	for i := range f {
		w := "?"
		if len(f[i].Inputs) > 1 {
			w = fmt.Sprint(f[i].Inputs[1]) // [out, in/groups, k, k]: in/groups 1 is depthwise
		}
		l := fmt.Sprintf("  %4d  %-15s", i, w)
		for _, name := range names {
			if c := convs[name]; i < len(c) {
				l += fmt.Sprintf(" %18.1f", per(c[i].Total))
			}
		}
		lines = append(lines, l)
	}
	fmt.Printf("per conv:\n%s\n", strings.Join(lines, "\n"))
	b.ReportMetric(integer, "int8-integer-µs")
	b.ReportMetric(float, "int8-float-µs")
	b.ReportMetric(quant, "int8-quant-µs")
	b.ReportMetric(all32, "fp32-µs")
	b.ReportMetric(0, "ns/op")
}
