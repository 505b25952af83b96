package onnx_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

// BenchmarkRunOverhead measures one Silero VAD chunk through runtime/onnx
// against onnxruntime_go called directly on the same ORT session with the
// same tensors (preallocated inputs and outputs: the fastest direct use),
// so only outpost's wrapper differs (two sessions of one model differ by up
// to ±2 % on their own: BenchmarkRunOverheadControl). The two are
// interleaved call by call so machine noise hits both alike, and the ratio
// is reported as outpost/direct (target ≤ 1.02).
func BenchmarkRunOverhead(b *testing.B) {
	sess, direct := loadBoth(b, testutil.SileroPath(b))

	audio := make([]float32, 576)
	for i := range audio {
		audio[i] = float32(i%50) / 100
	}
	state := make([]float32, 256)
	dIn, _ := ort.NewTensor(ort.NewShape(1, 576), audio)
	dState, _ := ort.NewTensor(ort.NewShape(2, 1, 128), state)
	dSR, _ := ort.NewScalar(int64(16000))
	dOut, _ := ort.NewEmptyTensor[float32](ort.NewShape(1, 1))
	dStateN, _ := ort.NewEmptyTensor[float32](ort.NewShape(2, 1, 128))
	ins, outs := []ort.Value{dIn, dState, dSR}, []ort.Value{dOut, dStateN}

	in, _ := runtime.NewFloat32(runtime.Shape{1, 576}, audio)
	st, _ := runtime.NewFloat32(runtime.Shape{2, 1, 128}, state)
	sr, _ := runtime.NewInt64(runtime.Shape{}, []int64{16000})
	feeds := map[string]*runtime.Tensor{"input": in, "state": st, "sr": sr}
	ctx := context.Background()

	// Warm both paths (first runs allocate and pick kernels).
	for i := 0; i < 20; i++ {
		direct.Run(ins, outs)
		sess.Run(ctx, feeds)
	}
	// Outputs into the caller's tensors, as direct preallocates its own
	// (RunInto: what the VAD loop uses).
	o1, _ := runtime.NewFloat32(runtime.Shape{1, 1}, make([]float32, 1))
	o2, _ := runtime.NewFloat32(runtime.Shape{2, 1, 128}, make([]float32, 256))
	into := map[string]*runtime.Tensor{"output": o1, "stateN": o2}
	if os.Getenv("OUTPOST_BENCH_BOUND") != "" {
		// Bound: ORT reads and writes the caller's tensors in place, as
		// the direct call's preallocated values do (the VAD loop's way).
		bd, err := sess.Bind(feeds, into)
		if err != nil {
			b.Fatal(err)
		}
		defer bd.Close()
		interleave(b, func() error { return direct.Run(ins, outs) }, func() error { return bd.Run(ctx) })
		return
	}
	if os.Getenv("OUTPOST_BENCH_ALLOC") != "" {
		into = nil
	}
	interleave(b, func() error { return direct.Run(ins, outs) },
		func() error {
			if into == nil { // Run: the answer in new tensors
				_, err := sess.Run(ctx, feeds)
				return err
			}
			return sess.RunInto(ctx, feeds, into)
		})
}

// BenchmarkRunOverheadAlloc is BenchmarkRunOverhead through Run, which
// returns new output tensors each call (what callers that keep the answer
// use): the allocation is the difference.
func BenchmarkRunOverheadAlloc(b *testing.B) {
	b.Setenv("OUTPOST_BENCH_ALLOC", "1")
	BenchmarkRunOverhead(b)
}

// BenchmarkRunOverheadBound is BenchmarkRunOverhead through a binding
// (Session.Bind): nothing is copied in or out, as with the direct call.
func BenchmarkRunOverheadBound(b *testing.B) {
	b.Setenv("OUTPOST_BENCH_BOUND", "1")
	BenchmarkRunOverhead(b)
}

// BenchmarkRunOverheadTiny is the same comparison on the 257-byte test model,
// where ORT does almost nothing: the difference is outpost's Go-side cost
// per call (validation, pooled tensors, copying outputs out) in nanoseconds.
func BenchmarkRunOverheadTiny(b *testing.B) {
	env := testutil.ORT(b)
	model, err := os.ReadFile(filepath.Join(testutil.Root(b), "runtime", "testdata", "tiny.onnx"))
	if err != nil {
		b.Fatal(err)
	}
	sess, err := env.Load(model, onnx.SessionOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	direct := onnx.Raw(sess)
	xd, id := make([]float32, 4), []int64{1, 2}
	dx, _ := ort.NewTensor(ort.NewShape(1, 4), xd)
	di, _ := ort.NewTensor(ort.NewShape(2), id)
	dy, _ := ort.NewEmptyTensor[float32](ort.NewShape(1, 3))
	dz, _ := ort.NewEmptyTensor[int64](ort.NewShape(2))
	ins, outs := []ort.Value{dx, di}, []ort.Value{dy, dz}
	x, _ := runtime.NewFloat32(runtime.Shape{1, 4}, xd)
	i, _ := runtime.NewInt64(runtime.Shape{2}, id)
	feeds := map[string]*runtime.Tensor{"x": x, "i": i}
	interleave(b, func() error { return direct.Run(ins, outs) },
		func() error { _, err := sess.Run(context.Background(), feeds); return err })
}

// loadBoth opens the model at path through runtime/onnx (1 thread) and
// returns it with the onnxruntime_go session under it, closed when b ends.
func loadBoth(b *testing.B, path string) (*onnx.Session, *ort.DynamicAdvancedSession) {
	model, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	sess, err := testutil.ORT(b).Load(model, onnx.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sess.Close() })
	return sess, onnx.Raw(sess)
}

// directSession is the baseline: onnxruntime_go with the same session
// options Load uses (1+1 threads, no spinning), destroyed when b ends.
func directSession(b *testing.B, model []byte, in, out []string) *ort.DynamicAdvancedSession {
	so, _ := ort.NewSessionOptions()
	defer so.Destroy()
	so.SetIntraOpNumThreads(1)
	so.SetInterOpNumThreads(1)
	so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0")
	so.AddSessionConfigEntry("session.inter_op.allow_spinning", "0")
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(model, in, out, so)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Destroy() })
	return s
}

// BenchmarkRunOverheadCrop is the comparison on the default crop-disease
// model (INT8, a 3×96×96 photo): direct gets a preallocated input it never
// copies into, so any copy outpost makes shows in the ratio.
func BenchmarkRunOverheadCrop(b *testing.B) {
	sess, direct := loadBoth(b, filepath.Join(testutil.ModelsDir(b), "crop-disease", "crop_disease_int8.onnx"))
	out := sess.Outputs()[0]
	photo := make([]float32, 3*96*96)
	for i := range photo {
		photo[i] = float32(i%255)/255 - 0.5
	}
	dIn, _ := ort.NewTensor(ort.NewShape(1, 3, 96, 96), photo)
	dOut, _ := ort.NewEmptyTensor[float32](ort.NewShape(1, out.Shape[1]))
	in, _ := runtime.NewFloat32(runtime.Shape{1, 3, 96, 96}, photo)
	feeds := map[string]*runtime.Tensor{"input": in}
	ctx := context.Background()
	logits, _ := runtime.NewFloat32(runtime.Shape{1, out.Shape[1]}, make([]float32, out.Shape[1]))
	into := map[string]*runtime.Tensor{out.Name: logits}
	if os.Getenv("OUTPOST_BENCH_BOUND") != "" {
		bd, err := sess.Bind(feeds, into)
		if err != nil {
			b.Fatal(err)
		}
		defer bd.Close()
		interleave(b, func() error { return direct.Run([]ort.Value{dIn}, []ort.Value{dOut}) }, func() error { return bd.Run(ctx) })
		return
	}
	interleave(b, func() error { return direct.Run([]ort.Value{dIn}, []ort.Value{dOut}) },
		func() error { return sess.RunInto(ctx, feeds, into) })
}

// BenchmarkRunOverheadCropBound is BenchmarkRunOverheadCrop through a
// binding (what the classifier runs: a binding per photo in flight).
func BenchmarkRunOverheadCropBound(b *testing.B) {
	b.Setenv("OUTPOST_BENCH_BOUND", "1")
	BenchmarkRunOverheadCrop(b)
}

// interleave runs direct and outpost alternately b.N times each and reports
// both per-call times, their ratio (mean, p50, p99) and the absolute
// overhead.
func interleave(b *testing.B, direct, outpost func() error) {
	for i := 0; i < 20; i++ { // warm both paths: first runs allocate and pick kernels
		direct()
		outpost()
	}
	timed := func(f func() error) time.Duration {
		t0 := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	dd, od := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate which goes first: the second call of a pair finds
		// warmer caches, and that must not count for either side.
		if i%2 == 0 {
			dd = append(dd, timed(direct))
			od = append(od, timed(outpost))
		} else {
			od = append(od, timed(outpost))
			dd = append(dd, timed(direct))
		}
	}
	b.StopTimer()
	var tDirect, tOutpost time.Duration
	for i := range dd {
		tDirect += dd[i]
		tOutpost += od[i]
	}
	slices.Sort(dd)
	slices.Sort(od)
	q := func(d []time.Duration, p float64) float64 { return float64(d[min(len(d)-1, int(p*float64(len(d))))]) }
	n := float64(b.N)
	b.ReportMetric(float64(tDirect.Nanoseconds())/n, "direct-ns/run")
	b.ReportMetric(float64(tOutpost.Nanoseconds())/n, "outpost-ns/run")
	b.ReportMetric(float64(tOutpost-tDirect)/n, "overhead-ns/run")
	b.ReportMetric(float64(tOutpost)/float64(tDirect), "ratio")
	b.ReportMetric(q(od, 0.5)/q(dd, 0.5), "p50-ratio")
	b.ReportMetric(q(od, 0.99)/q(dd, 0.99), "p99-ratio")
	b.ReportMetric(0, "ns/op") // the per-path figures above are the ones to read
}
