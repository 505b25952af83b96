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
	"strings"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/models"
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
	shape, err := models.InspectImageClassifier(ins, outs, o.layout, len(labels))
	if err != nil {
		return fmt.Errorf("models add: %s: %w", src, err)
	}
	sum := sha256.Sum256(data)
	file := o.name + ".onnx"
	m, err := models.ImageClassifierManifest(o.name, o.version, file, hex.EncodeToString(sum[:]), shape, labels,
		o.mean, o.std, o.temperature, o.uncertain, o.abstain)
	if err != nil {
		return fmt.Errorf("models add: %s: %w", src, err)
	}
	m.Description = fmt.Sprintf("added by outpost models add from %s", filepath.Base(src))
	m.License, m.Source = o.license, o.source
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
		o.name, o.version, target, shape.Input, shape.Layout, shape.Width, shape.Height, o.mean, o.std, shape.Output, len(labels),
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
