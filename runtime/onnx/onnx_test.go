package onnx_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	gosync "sync"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

// tiny.onnx: y = x·W + b with W[r][c] = (3r+c)/10, b = [0.5 -1 2]; z = i + 1.
func tinyWant(x []float32) []float32 {
	b := []float32{0.5, -1, 2}
	n := len(x) / 4
	y := make([]float32, n*3)
	for r := 0; r < n; r++ {
		for c := 0; c < 3; c++ {
			s := b[c]
			for k := 0; k < 4; k++ {
				s += x[r*4+k] * float32(3*k+c) / 10
			}
			y[r*3+c] = s
		}
	}
	return y
}

func loadTiny(t testing.TB) *onnx.Session {
	t.Helper()
	env := testutil.ORT(t)
	b, err := os.ReadFile(filepath.Join(testutil.Root(t), "runtime", "testdata", "tiny.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := env.Load(b, onnx.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func abs(f float32) float32 {
	if f < 0 {
		return -f
	}
	return f
}

func close32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		tol := 1e-5 * max(1, abs(b[i]))
		if d := a[i] - b[i]; d > tol || d < -tol {
			return false
		}
	}
	return true
}

func TestSession_Infos(t *testing.T) {
	s := loadTiny(t)
	got := []string{}
	for _, i := range s.Inputs() {
		got = append(got, i.String())
	}
	for _, o := range s.Outputs() {
		got = append(got, o.String())
	}
	want := "x float32[? 4]|i int64[2]|y float32[? 3]|z int64[2]"
	if strings.Join(got, "|") != want {
		t.Fatalf("infos = %q, want %q", strings.Join(got, "|"), want)
	}
}

func TestSession_Run(t *testing.T) {
	s := loadTiny(t)
	for _, n := range []int{1, 3, 1} { // shape changes, then repeats (pooled tensors)
		x := make([]float32, n*4)
		for i := range x {
			x[i] = float32(i) - 2
		}
		xt, _ := runtime.NewFloat32(runtime.Shape{int64(n), 4}, x)
		it, _ := runtime.NewInt64(runtime.Shape{2}, []int64{41, -1})
		out, err := s.Run(context.Background(), map[string]*runtime.Tensor{"x": xt, "i": it})
		if err != nil {
			t.Fatal(err)
		}
		if y := out["y"]; !close32(y.Float32(), tinyWant(x)) || y.Shape.String() != (runtime.Shape{int64(n), 3}).String() {
			t.Fatalf("n=%d: y = %v %v, want %v", n, y.Shape, y.Float32(), tinyWant(x))
		}
		if z := out["z"].Int64(); z[0] != 42 || z[1] != 0 {
			t.Fatalf("z = %v", z)
		}
	}
}

// TestSession_RunConcurrent: eight goroutines on one session, with small
// inputs (copied into pooled buffers) and with inputs of 16 KB and more
// (bound to the caller's memory for the run; under -race this caught a
// run's bound input being destroyed by another run's cleanup).
func TestSession_RunConcurrent(t *testing.T) {
	s := loadTiny(t)
	for _, rows := range []int{1, onnx.BindMin/16 + 1} {
		t.Run(fmt.Sprintf("rows=%d", rows), func(t *testing.T) {
			var wg gosync.WaitGroup
			errs := make(chan error, 8)
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for i := 0; i < 50; i++ {
						n := rows + (g+i)%3
						x := make([]float32, n*4)
						for k := range x {
							x[k] = float32(g*100 + i + k)
						}
						xt, _ := runtime.NewFloat32(runtime.Shape{int64(n), 4}, x)
						it, _ := runtime.NewInt64(runtime.Shape{2}, []int64{int64(g), int64(i)})
						out, err := s.Run(context.Background(), map[string]*runtime.Tensor{"x": xt, "i": it})
						if err != nil {
							errs <- err
							return
						}
						if !close32(out["y"].Float32(), tinyWant(x)) || out["z"].Int64()[1] != int64(i)+1 {
							errs <- errors.New("concurrent run returned another call's result")
							return
						}
					}
				}(g)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		})
	}
}

func TestSession_RunBadInput(t *testing.T) {
	s := loadTiny(t)
	x, _ := runtime.NewFloat32(runtime.Shape{1, 5}, make([]float32, 5))
	i, _ := runtime.NewInt64(runtime.Shape{2}, []int64{1, 2})
	_, err := s.Run(context.Background(), map[string]*runtime.Tensor{"x": x, "i": i})
	if !errors.Is(err, runtime.ErrBadInput) || !strings.Contains(err.Error(), `input "x" has shape [1 5], model wants [? 4]`) {
		t.Fatalf("err = %v", err)
	}
}

func TestSession_RunCancelled(t *testing.T) {
	s := loadTiny(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	x, _ := runtime.NewFloat32(runtime.Shape{1, 4}, make([]float32, 4))
	i, _ := runtime.NewInt64(runtime.Shape{2}, []int64{1, 2})
	if _, err := s.Run(ctx, map[string]*runtime.Tensor{"x": x, "i": i}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	// A cancellable but live context still runs (RunOptions path).
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if _, err := s.Run(ctx2, map[string]*runtime.Tensor{"x": x, "i": i}); err != nil {
		t.Fatal(err)
	}
}

func TestSession_Close(t *testing.T) {
	s := loadTiny(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	x, _ := runtime.NewFloat32(runtime.Shape{1, 4}, make([]float32, 4))
	i, _ := runtime.NewInt64(runtime.Shape{2}, []int64{1, 2})
	if _, err := s.Run(context.Background(), map[string]*runtime.Tensor{"x": x, "i": i}); !errors.Is(err, runtime.ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
}

func TestEnv_LoadBadModel(t *testing.T) {
	env := testutil.ORT(t)
	junk := make([]byte, 4096)
	rand.Read(junk)
	for name, b := range map[string][]byte{"empty": nil, "random": junk, "text": []byte("not a model\n")} {
		_, err := env.Load(b, onnx.SessionOptions{})
		if !errors.Is(err, onnx.ErrBadModel) {
			t.Errorf("%s: err = %v, want ErrBadModel", name, err)
		}
	}
}

func TestEnv_Version(t *testing.T) {
	if v := testutil.ORT(t).RuntimeVersion(); v != onnx.Version {
		t.Fatalf("runtime version %q, want %q", v, onnx.Version)
	}
}

func TestFindLibrary(t *testing.T) {
	if _, err := onnx.FindLibrary("/nonexistent/libonnxruntime.so.1"); !errors.Is(err, onnx.ErrLibraryNotFound) {
		t.Fatalf("explicit missing: %v", err)
	}
	p, err := onnx.FindLibrary("")
	if err != nil {
		t.Fatalf("search: %v", err)
	}
	if filepath.Base(p) != onnx.LibraryName {
		t.Fatalf("found %s", p)
	}
}

func TestNewEnv_OtherLibrary(t *testing.T) {
	testutil.ORT(t)
	other := filepath.Join(t.TempDir(), onnx.LibraryName)
	os.WriteFile(other, []byte("x"), 0o644)
	if _, err := onnx.NewEnv(onnx.Options{LibraryPath: other}); err == nil || !strings.Contains(err.Error(), "cannot also load") {
		t.Fatalf("err = %v", err)
	}
}

// TestSession_RunInto: outputs land in the caller's tensors, equal to what
// Run returns; a tensor of the wrong shape or dtype, or a name the model
// does not produce, is an error naming it.
func TestSession_RunInto(t *testing.T) {
	s := loadTiny(t)
	x := []float32{1, 2, 3, 4, -1, 0, 0.5, 2}
	xt, _ := runtime.NewFloat32(runtime.Shape{2, 4}, x)
	it, _ := runtime.NewInt64(runtime.Shape{2}, []int64{7, 8})
	feeds := map[string]*runtime.Tensor{"x": xt, "i": it}
	y, _ := runtime.NewFloat32(runtime.Shape{2, 3}, make([]float32, 6))
	z, _ := runtime.NewInt64(runtime.Shape{2}, make([]int64, 2))
	for range 2 { // the second time through the pooled outputs
		if err := s.RunInto(context.Background(), feeds, map[string]*runtime.Tensor{"y": y, "z": z}); err != nil {
			t.Fatal(err)
		}
		if !close32(y.Float32(), tinyWant(x)) || z.Int64()[0] != 8 || z.Int64()[1] != 9 {
			t.Fatalf("y = %v z = %v, want %v [8 9]", y.Float32(), z.Int64(), tinyWant(x))
		}
	}
	short, _ := runtime.NewFloat32(runtime.Shape{1, 3}, make([]float32, 3))
	wrongType, _ := runtime.NewFloat32(runtime.Shape{2}, make([]float32, 2))
	for name, into := range map[string]map[string]*runtime.Tensor{
		"shape":   {"y": short},
		"dtype":   {"z": wrongType},
		"unknown": {"w": y},
	} {
		err := s.RunInto(context.Background(), feeds, into)
		if !errors.Is(err, runtime.ErrBadInput) {
			t.Errorf("%s: %v, want ErrBadInput", name, err)
		}
	}
}

// TestSession_Bind: a binding reads the caller's tensors in place and
// writes the outputs into the caller's; values changed between runs are
// seen, and a wrong output tensor, a closed binding or a closed session is
// an error naming what was wrong.
func TestSession_Bind(t *testing.T) {
	s := loadTiny(t)
	x := make([]float32, 2*4)
	i := []int64{41, -1}
	y, z := make([]float32, 2*3), make([]int64, 2)
	xt, _ := runtime.NewFloat32(runtime.Shape{2, 4}, x)
	it, _ := runtime.NewInt64(runtime.Shape{2}, i)
	yt, _ := runtime.NewFloat32(runtime.Shape{2, 3}, y)
	zt, _ := runtime.NewInt64(runtime.Shape{2}, z)
	ins := map[string]*runtime.Tensor{"x": xt, "i": it}
	b, err := s.Bind(ins, map[string]*runtime.Tensor{"y": yt, "z": zt})
	if err != nil {
		t.Fatal(err)
	}
	for run := 0; run < 3; run++ {
		for k := range x {
			x[k] = float32(run*10 + k) // written in place, never handed over again
		}
		i[0] = int64(run)
		if err := b.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !close32(y, tinyWant(x)) || z[0] != int64(run)+1 || z[1] != 0 {
			t.Fatalf("run %d: y = %v (want %v), z = %v", run, y, tinyWant(x), z)
		}
	}
	b.Close()
	b.Close()
	if err := b.Run(context.Background()); !errors.Is(err, runtime.ErrClosed) {
		t.Fatalf("run after Close: %v", err)
	}

	wrong, _ := runtime.NewFloat32(runtime.Shape{2, 4}, make([]float32, 8))
	for _, tc := range []struct {
		outs map[string]*runtime.Tensor
		want string
	}{
		{map[string]*runtime.Tensor{"y": yt}, "1 outputs given, the model has 2"},
		{map[string]*runtime.Tensor{"y": yt, "w": zt}, `no tensor for output "z"`},
		{map[string]*runtime.Tensor{"y": wrong, "z": zt}, `output "y" has shape [2 4], the model produces [? 3]`},
		{map[string]*runtime.Tensor{"y": yt, "z": yt}, `output "z" is float32, the model produces int64`},
	} {
		if _, err := s.Bind(ins, tc.outs); !errors.Is(err, runtime.ErrBadInput) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Bind: %v, want %q", err, tc.want)
		}
	}
	empty, _ := runtime.NewFloat32(runtime.Shape{0, 4}, nil)
	if _, err := s.Bind(map[string]*runtime.Tensor{"x": empty, "i": it}, map[string]*runtime.Tensor{"y": yt, "z": zt}); !errors.Is(err, runtime.ErrBadInput) || !strings.Contains(err.Error(), "empty tensor") {
		t.Errorf("Bind of an empty input: %v", err)
	}
	b2, err := s.Bind(ins, map[string]*runtime.Tensor{"y": yt, "z": zt})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	s.Close()
	if err := b2.Run(context.Background()); !errors.Is(err, runtime.ErrClosed) {
		t.Fatalf("run after the session closed: %v", err)
	}
}

// TestSession_BindDropped: a binding and its session dropped without
// Close (a one-shot tool, a forgetful caller) are collected without
// bringing the process down — a pinned runtime.Pinner panics when
// collected, so bindings do not pin.
func TestSession_BindDropped(t *testing.T) {
	model, err := os.ReadFile(filepath.Join(testutil.Root(t), "runtime", "testdata", "tiny.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	func() {
		s, err := testutil.ORT(t).Load(model, onnx.SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		xt, _ := runtime.NewFloat32(runtime.Shape{1, 4}, make([]float32, 4))
		it, _ := runtime.NewInt64(runtime.Shape{2}, make([]int64, 2))
		yt, _ := runtime.NewFloat32(runtime.Shape{1, 3}, make([]float32, 3))
		zt, _ := runtime.NewInt64(runtime.Shape{2}, make([]int64, 2))
		b, err := s.Bind(map[string]*runtime.Tensor{"x": xt, "i": it}, map[string]*runtime.Tensor{"y": yt, "z": zt})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}()
	for range 3 {
		goruntime.GC()
	}
}
