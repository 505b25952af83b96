package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

const modelsAddExamples = `  outpost models add mobilenet.onnx --labels labels.txt --task image-classification --name cassava
  outpost models add leaf_int8.onnx --labels labels.txt --name leaf --abstain-label not_a_leaf --dir ./my-models
  outpost models add model.onnx --labels labels.txt --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5   # not ImageNet-normalised
`

// runModelsAdd writes a manifest for an ONNX file from what the file
// itself says (its input and output names, types and shapes, read by ONNX
// Runtime), a labels file and the flags, copies the model beside it and
// proves the result loads: bring your own model without hand-writing JSON.
func runModelsAdd(ctx context.Context, std IO, args []string) error {
	var rf runtimeFlags
	var o struct {
		labels, task, name, version, license, advice, abstain, layout, source string
		mean, std                                                             []float32
		temperature, uncertain                                                float32
		force                                                                 bool
	}
	fs := newFlags(std, "models add", "outpost models add FILE.onnx --labels FILE [flags]", modelsAddExamples)
	rf.register(fs, "dir")
	fs.StringVar(&o.labels, "labels", "", "labels file: one label per line, in the order of the model's outputs (required)")
	fs.StringVar(&o.task, "task", string(models.TaskImageClassification), "task (image-classification; write other manifests by hand: docs/MODELS.md)")
	fs.StringVar(&o.name, "name", "", "model name (default: the file name without .onnx)")
	fs.StringVar(&o.version, "version", "0.1.0", "model version")
	fs.StringVar(&o.layout, "layout", "auto", "input layout: NCHW, NHWC or auto (from the input shape: the axis of size 3)")
	fs.Float32SliceVar(&o.mean, "mean", []float32{0.485, 0.456, 0.406}, "per-channel mean of v/255 the model was trained with (default ImageNet)")
	fs.Float32SliceVar(&o.std, "std", []float32{0.229, 0.224, 0.225}, "per-channel std (default ImageNet)")
	fs.Float32Var(&o.temperature, "temperature", 1, "softmax temperature (fit it on held-out data: docs/MODELS.md)")
	fs.Float32Var(&o.uncertain, "uncertain-below", 0.6, "a top probability under this is answered \"uncertain\"")
	fs.StringVar(&o.abstain, "abstain-label", "", "the label meaning \"none of these\" (e.g. not_a_leaf): it is answered as not_a_leaf, never a diagnosis")
	fs.StringVar(&o.advice, "advice", "", "advice file to copy beside the model: label -> language -> text")
	fs.StringVar(&o.license, "license", "unknown", "the model's license")
	fs.StringVar(&o.source, "source", "", "where the model comes from (URL, paper, training script)")
	fs.BoolVar(&o.force, "force", false, "replace a model folder of the same name")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want one ONNX file, got %d arguments", fs.NArg())
	}
	if o.labels == "" {
		return usagef("--labels is required: one label per line, in output order")
	}
	if models.Task(o.task) != models.TaskImageClassification {
		return usagef("models add writes image-classification manifests; for %q write manifest.json by hand (docs/MODELS.md)", o.task)
	}
	src := fs.Arg(0)
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("models add: %w", err)
	}
	labels, err := readLabels(o.labels)
	if err != nil {
		return err
	}
	if o.name == "" {
		o.name = strings.ToLower(strings.TrimSuffix(filepath.Base(src), filepath.Ext(src)))
		o.name = strings.NewReplacer("_", "-", " ", "-").Replace(o.name)
	}
	dir, err := rf.dir()
	if err != nil {
		if rf.modelsDir == "" {
			return err
		}
		dir = rf.modelsDir
	}
	env, err := rf.env()
	if err != nil {
		return err
	}
	defer env.Close()
	sess, err := env.Load(data, onnx.SessionOptions{})
	if err != nil {
		return fmt.Errorf("models add: %s: %w", src, err)
	}
	ins, outs := sess.Inputs(), sess.Outputs()
	sess.Close()

	// What the file says, checked against what an image classifier needs.
	if len(ins) != 1 {
		return fmt.Errorf("models add: %s has %d inputs (%s); an image classifier has one", src, len(ins), infoList(ins))
	}
	in := ins[0]
	if in.DType != runtime.Float32 || len(in.Shape) != 4 {
		return fmt.Errorf("models add: %s: input %s; want float32 with 4 dimensions (batch, channels, height, width or batch, height, width, channels)", src, in)
	}
	layout := strings.ToUpper(o.layout)
	if layout == "AUTO" {
		switch {
		case in.Shape[1] == 3 && in.Shape[3] != 3:
			layout = "NCHW"
		case in.Shape[3] == 3 && in.Shape[1] != 3:
			layout = "NHWC"
		default:
			return fmt.Errorf("models add: %s: input %s: cannot tell NCHW from NHWC; pass --layout", src, in)
		}
	}
	var h, w int64
	switch layout {
	case "NCHW":
		h, w = in.Shape[2], in.Shape[3]
	case "NHWC":
		h, w = in.Shape[1], in.Shape[2]
	default:
		return usagef("--layout %q: want NCHW, NHWC or auto", o.layout)
	}
	if h <= 0 || w <= 0 {
		return fmt.Errorf("models add: %s: input %s has no fixed height and width; export it with a fixed size (e.g. 224x224)", src, in)
	}
	if len(outs) < 1 {
		return fmt.Errorf("models add: %s has no outputs", src)
	}
	out := outs[0]
	if n := out.Shape[len(out.Shape)-1]; len(out.Shape) == 0 || n > 0 && int(n) != len(labels) {
		return fmt.Errorf("models add: %s: output %s has %d classes, %s lists %d labels", src, out, n, o.labels, len(labels))
	}
	if o.abstain != "" && !slices.Contains(labels, o.abstain) {
		return fmt.Errorf("models add: --abstain-label %q is not in %s", o.abstain, o.labels)
	}

	sum := sha256.Sum256(data)
	file := o.name + ".onnx"
	m := models.Manifest{
		Name: o.name, Version: o.version, Task: models.TaskImageClassification,
		Description: fmt.Sprintf("added by outpost models add from %s", filepath.Base(src)),
		File:        file, SHA256: hex.EncodeToString(sum[:]),
		Inputs: ins, Outputs: outs[:1],
		Preprocessing:  models.Preprocessing{Width: int(w), Height: int(h), Layout: layout, Mean: o.mean, Std: o.std},
		Postprocessing: models.Postprocessing{Softmax: true, Temperature: o.temperature, TopK: min(3, len(labels)), UncertainBelow: o.uncertain, AbstainLabel: o.abstain},
		Labels:         labels, License: o.license, Source: o.source,
	}
	if o.advice != "" {
		m.Advice = "advice.json"
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("models add: %w", err)
	}
	target := filepath.Join(dir, o.name)
	if _, err := os.Stat(target); err == nil && !o.force {
		return fmt.Errorf("models add: %s exists (pass --force to replace it)", target)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("models add: %w", err)
	}
	if err := atomicfile.WriteBytes(filepath.Join(target, file), data, 0o644); err != nil {
		return fmt.Errorf("models add: %w", err)
	}
	if o.advice != "" {
		adv, err := os.ReadFile(o.advice)
		if err != nil {
			return fmt.Errorf("models add: %w", err)
		}
		if err := json.Unmarshal(adv, &models.Advice{}); err != nil {
			return fmt.Errorf("models add: %s is not an advice file (label -> language -> text): %w", o.advice, err)
		}
		if err := atomicfile.WriteBytes(filepath.Join(target, "advice.json"), adv, 0o644); err != nil {
			return fmt.Errorf("models add: %w", err)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(filepath.Join(target, models.ManifestFile), buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("models add: %w", err)
	}
	// Prove it: the registry loads it and ONNX Runtime runs it with the
	// manifest's shapes.
	reg, err := models.LoadDir(dir)
	if err != nil {
		return fmt.Errorf("models add: %w", err)
	}
	got, err := reg.Get(o.name)
	if err != nil {
		return fmt.Errorf("models add: the new manifest does not load: %w (problems: %v)", err, reg.Problems())
	}
	s2, err := got.Open(env.Loader(onnx.SessionOptions{}))
	if err != nil {
		return fmt.Errorf("models add: the new model does not open: %w", err)
	}
	s2.Close()
	fmt.Fprintf(std.Out, "added %s %s to %s\n  input  %s → %s %dx%d, mean %v std %v\n  output %s → %d labels%s\n  quality gate: defaults (set \"quality\" in the manifest; docs/MODELS.md)\n",
		o.name, o.version, target, in, layout, w, h, o.mean, o.std, out, len(labels),
		map[bool]string{true: ", abstains on " + o.abstain, false: ""}[o.abstain != ""])
	return nil
}

func readLabels(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("labels %s: %w", path, err)
	}
	if len(out) < 2 {
		return nil, errors.New("labels " + path + ": want at least two labels, one per line")
	}
	seen := map[string]bool{}
	for _, l := range out {
		if seen[l] {
			return nil, fmt.Errorf("labels %s: %q appears twice", path, l)
		}
		seen[l] = true
	}
	return out, nil
}

func infoList(infos []runtime.TensorInfo) string {
	s := make([]string, len(infos))
	for i, t := range infos {
		s[i] = t.String()
	}
	return strings.Join(s, ", ")
}
