package models

import (
	"fmt"
	"slices"
	"strings"

	"github.com/outpost-edge/outpost/runtime"
)

// ImageClassifierShape is what an ONNX file's own inputs and outputs say
// about it as an image classifier.
type ImageClassifierShape struct {
	Input, Output runtime.TensorInfo
	Layout        string // NCHW or NHWC
	Width, Height int
}

// InspectImageClassifier checks a model's inputs and outputs (as ONNX
// Runtime reads them from the file) against what an image classifier
// needs — one float32 4-D input of fixed size, an output of one score per
// label — and works out its layout ("" or "auto": from the axis of size
// 3). labels is the labels file's count (0: not checked). The errors say
// what the file has and what to do.
func InspectImageClassifier(ins, outs []runtime.TensorInfo, layout string, labels int) (ImageClassifierShape, error) {
	var s ImageClassifierShape
	if len(ins) != 1 {
		return s, fmt.Errorf("%d inputs (%s); an image classifier has one", len(ins), tensorList(ins))
	}
	in := ins[0]
	if in.DType != runtime.Float32 || len(in.Shape) != 4 {
		return s, fmt.Errorf("input %s; want float32 with 4 dimensions (batch, channels, height, width or batch, height, width, channels)", in)
	}
	layout = strings.ToUpper(layout)
	if layout == "" || layout == "AUTO" {
		switch {
		case in.Shape[1] == 3 && in.Shape[3] != 3:
			layout = "NCHW"
		case in.Shape[3] == 3 && in.Shape[1] != 3:
			layout = "NHWC"
		default:
			return s, fmt.Errorf("input %s: cannot tell NCHW from NHWC; pass the layout", in)
		}
	}
	var h, w int64
	switch layout {
	case "NCHW":
		h, w = in.Shape[2], in.Shape[3]
	case "NHWC":
		h, w = in.Shape[1], in.Shape[2]
	default:
		return s, fmt.Errorf("layout %q: want NCHW, NHWC or auto", layout)
	}
	if h <= 0 || w <= 0 {
		return s, fmt.Errorf("input %s has no fixed height and width; export it with a fixed size (e.g. 224x224)", in)
	}
	if len(outs) < 1 {
		return s, fmt.Errorf("no outputs")
	}
	out := outs[0]
	if len(out.Shape) == 0 {
		return s, fmt.Errorf("output %s is a scalar; want one score per label", out)
	}
	if n := out.Shape[len(out.Shape)-1]; labels > 0 && n > 0 && int(n) != labels {
		return s, fmt.Errorf("output %s has %d classes, the labels file lists %d", out, n, labels)
	}
	return ImageClassifierShape{Input: in, Output: out, Layout: layout, Width: int(w), Height: int(h)}, nil
}

// ImageClassifierManifest is the manifest `outpost models add` writes for
// an inspected classifier: the file's own input and output, ImageNet-style
// normalisation from mean and std, softmax with temperature, and abstain
// (when set) as the label that means "none of these".
func ImageClassifierManifest(name, version, file, sha256 string, s ImageClassifierShape, labels []string,
	mean, std []float32, temperature, uncertainBelow float32, abstain string) (*Manifest, error) {
	if abstain != "" && !slices.Contains(labels, abstain) {
		return nil, fmt.Errorf("abstain label %q is not one of the labels", abstain)
	}
	m := &Manifest{
		Name: name, Version: version, Task: TaskImageClassification, File: file, SHA256: sha256,
		Inputs: []runtime.TensorInfo{s.Input}, Outputs: []runtime.TensorInfo{s.Output},
		Preprocessing: Preprocessing{Width: s.Width, Height: s.Height, Layout: s.Layout, Mean: mean, Std: std},
		Postprocessing: Postprocessing{Softmax: true, Temperature: temperature, TopK: min(3, len(labels)),
			UncertainBelow: uncertainBelow, AbstainLabel: abstain},
		Labels: labels,
	}
	return m, nil // the caller adds license and source, then validates
}

func tensorList(infos []runtime.TensorInfo) string {
	parts := make([]string, len(infos))
	for i, t := range infos {
		parts[i] = t.String()
	}
	return strings.Join(parts, ", ")
}
