package onnx_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

// TestProfile: a session opened with ProfilePrefix writes ONNX Runtime's
// trace at Close; ReadProfiles finds it, sums it by operator and by node
// (every run counted) and removes the file.
func TestProfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testutil.Root(t), "runtime", "testdata", "tiny.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(t.TempDir(), "tiny")
	s, err := testutil.ORT(t).Load(b, onnx.SessionOptions{ProfilePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	xt, _ := runtime.NewFloat32(runtime.Shape{2, 4}, make([]float32, 8))
	it, _ := runtime.NewInt64(runtime.Shape{2}, []int64{1, 2})
	const runs = 5
	for range runs {
		if _, err := s.Run(context.Background(), map[string]*runtime.Tensor{"x": xt, "i": it}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	p, err := onnx.ReadProfiles(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Ops) == 0 || len(p.Nodes) == 0 {
		t.Fatalf("profile: %+v", p)
	}
	for _, n := range p.Nodes {
		if n.Calls != runs || n.Op == "" {
			t.Errorf("node %s (%s): %d calls, want %d", n.Name, n.Op, n.Calls, runs)
		}
	}
	if left, _ := filepath.Glob(prefix + "*"); len(left) != 0 {
		t.Errorf("profile files left behind: %v", left)
	}
}

// TestReadProfile_Bad: not a trace is an error, not a panic or an empty
// profile taken for a fast model.
func TestReadProfile_Bad(t *testing.T) {
	for _, in := range []string{"", "{", `{"cat":"Node"}`, strings.Repeat("[", 100)} {
		if _, err := onnx.ReadProfile(strings.NewReader(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	p, err := onnx.ReadProfile(strings.NewReader(`[{"cat":"Node","name":"mm_kernel_time","dur":7,"args":{"op_name":"MatMul","provider":"CPUExecutionProvider"}},
		{"cat":"Node","name":"mm_fence_before","dur":1,"args":{"op_name":"MatMul"}},
		{"cat":"Session","name":"model_run","dur":20}]`))
	if err != nil || len(p.Ops) != 1 || p.Ops[0].Op != "MatMul" || p.Ops[0].Total.Microseconds() != 7 || p.Nodes[0].Name != "mm" {
		t.Fatalf("profile %+v, %v", p, err)
	}
}
