package models_test

import (
	"bytes"
	"context"
	"golang.org/x/image/draw"
	"image"
	"image/jpeg"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

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
	for i, name := range []string{"kws", "kws-fp32"} {
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
