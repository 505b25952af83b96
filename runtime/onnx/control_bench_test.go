package onnx_test

import (
	"os"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/outpost-edge/outpost/internal/testutil"
)

// BenchmarkRunOverheadControl is the measurement's own noise floor: two
// identical direct sessions, interleaved as the others are. Its ratio is
// how far from 1.00 "no difference" reads on this machine in this run
// (0.97–1.00 here), to read the other ratios against.
func BenchmarkRunOverheadControl(b *testing.B) {
	testutil.ORT(b)
	model, _ := os.ReadFile(testutil.SileroPath(b))
	d1 := directSession(b, model, []string{"input", "state", "sr"}, []string{"output", "stateN"})
	d2 := directSession(b, model, []string{"input", "state", "sr"}, []string{"output", "stateN"})
	mk := func() ([]ort.Value, []ort.Value) {
		audio := make([]float32, 576)
		for i := range audio {
			audio[i] = float32(i%50) / 100
		}
		in, _ := ort.NewTensor(ort.NewShape(1, 576), audio)
		st, _ := ort.NewTensor(ort.NewShape(2, 1, 128), make([]float32, 256))
		sr, _ := ort.NewScalar(int64(16000))
		o, _ := ort.NewEmptyTensor[float32](ort.NewShape(1, 1))
		on, _ := ort.NewEmptyTensor[float32](ort.NewShape(2, 1, 128))
		return []ort.Value{in, st, sr}, []ort.Value{o, on}
	}
	i1, o1 := mk()
	i2, o2 := mk()
	if os.Getenv("OUTPOST_BENCH_SAME") != "" {
		d2 = d1
	}
	interleave(b, func() error { return d1.Run(i1, o1) }, func() error { return d2.Run(i2, o2) })
}

// BenchmarkRunOverheadSame is the control on one session: the raw call
// against itself (own tensors), as outpost's wrapper is timed against the
// raw session under it. Its p99-ratio is how far the tail alone moves
// between identical calls: ±1–2 % over 60k pairs here (±2.5 % over 12k,
// which is why make bench runs 60k).
func BenchmarkRunOverheadSame(b *testing.B) {
	b.Setenv("OUTPOST_BENCH_SAME", "1")
	BenchmarkRunOverheadControl(b)
}
