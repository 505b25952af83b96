package models_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/runtime"
)

// TestInspectImageClassifier: what `models add` reads from a file's own
// inputs and outputs: the layout from the axis of size 3, the size, and a
// clear refusal for each way a file is not an image classifier.
func TestInspectImageClassifier(t *testing.T) {
	in := func(shape ...int64) runtime.TensorInfo {
		return runtime.TensorInfo{Name: "input", DType: runtime.Float32, Shape: shape}
	}
	out := func(n int64) []runtime.TensorInfo {
		return []runtime.TensorInfo{{Name: "logits", DType: runtime.Float32, Shape: runtime.Shape{-1, n}}}
	}
	for _, c := range []struct {
		name   string
		ins    []runtime.TensorInfo
		outs   []runtime.TensorInfo
		layout string
		want   string // layout WxH, or the error's words
	}{
		{"NCHW", []runtime.TensorInfo{in(-1, 3, 224, 224)}, out(6), "auto", "NCHW 224x224"},
		{"NHWC", []runtime.TensorInfo{in(1, 96, 128, 3)}, out(6), "", "NHWC 128x96"},
		{"forced", []runtime.TensorInfo{in(1, 3, 64, 3)}, out(6), "nchw", "NCHW 3x64"},
		{"ambiguous", []runtime.TensorInfo{in(1, 3, 64, 3)}, out(6), "auto", "cannot tell NCHW from NHWC"},
		{"two inputs", []runtime.TensorInfo{in(1, 3, 8, 8), in(1, 3, 8, 8)}, out(6), "", "2 inputs"},
		{"not 4-D", []runtime.TensorInfo{in(1, 150528)}, out(6), "", "want float32 with 4 dimensions"},
		{"dynamic size", []runtime.TensorInfo{in(1, 3, -1, -1)}, out(6), "", "no fixed height and width"},
		{"labels", []runtime.TensorInfo{in(1, 3, 8, 8)}, out(5), "", "has 5 classes, the labels file lists 6"},
		{"no outputs", []runtime.TensorInfo{in(1, 3, 8, 8)}, nil, "", "no outputs"},
		{"bad layout", []runtime.TensorInfo{in(1, 3, 8, 8)}, out(6), "CHWN", "want NCHW, NHWC or auto"},
	} {
		s, err := models.InspectImageClassifier(c.ins, c.outs, c.layout, 6)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = s.Layout + " " + strconv.Itoa(s.Width) + "x" + strconv.Itoa(s.Height)
		}
		if !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	s, _ := models.InspectImageClassifier([]runtime.TensorInfo{in(1, 3, 224, 224)}, out(3), "", 3)
	if _, err := models.ImageClassifierManifest("m", "1", "m.onnx", strings.Repeat("0", 64), s, []string{"a", "b", "c"},
		[]float32{0.5, 0.5, 0.5}, []float32{0.25, 0.25, 0.25}, 1, 0.6, "d"); err == nil {
		t.Error("an abstain label that is not a label was accepted")
	}
}
