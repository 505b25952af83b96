// Package models turns model files into answers: manifests that describe a
// model, a registry that loads and verifies a directory of them, and the
// pre- and post-processing around runtime.Session (audio decoding, VAD
// segmentation). It never talks to the network.
package models

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"

	"github.com/outpost-edge/outpost/runtime"
)

// ManifestFile is the file name the registry looks for in each model folder.
const ManifestFile = "manifest.json"

// Sentinel errors, tested with errors.Is.
var (
	// ErrBadManifest: a manifest that does not parse or fails validation.
	ErrBadManifest = errors.New("bad manifest")
	// ErrChecksum: the model file's sha256 differs from the manifest's.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrModelMismatch: the model's real inputs/outputs differ from the manifest's.
	ErrModelMismatch = errors.New("model does not match its manifest")
	// ErrUnknownModel: no model of that name is loaded.
	ErrUnknownModel = errors.New("unknown model")
	// ErrBadInput: input data (audio, image) that cannot be used.
	ErrBadInput = errors.New("bad input")
)

// Task is what a model does; it selects the pipeline.
type Task string

// Tasks outpost knows.
const (
	TaskImageClassification Task = "image-classification"
	TaskVAD                 Task = "vad"
	TaskKeywordSpotting     Task = "keyword-spotting"
)

// Manifest describes one model. See docs/MODELS.md for every field.
type Manifest struct {
	Name           string               `json:"name"`
	Version        string               `json:"version"`
	Task           Task                 `json:"task"`
	Description    string               `json:"description,omitempty"`
	File           string               `json:"file"`
	SHA256         string               `json:"sha256"`
	Inputs         []runtime.TensorInfo `json:"inputs"`
	Outputs        []runtime.TensorInfo `json:"outputs"`
	Preprocessing  Preprocessing        `json:"preprocessing"`
	Postprocessing Postprocessing       `json:"postprocessing"`
	Quality        *QualitySpec         `json:"quality,omitempty"` // image models: the photo quality gate
	VAD            *VADOptions          `json:"vad,omitempty"`
	Advice         string               `json:"advice,omitempty"` // JSON file: label -> language -> text
	Labels         []string             `json:"labels,omitempty"`
	License        string               `json:"license"`
	Source         string               `json:"source,omitempty"`
	Languages      []string             `json:"languages,omitempty"`
	// VariantOf names the model this one is the same network as, at
	// another precision (an FP32 twin of an INT8 model), in the same
	// folder: the device may run either for requests naming that model,
	// and picks the faster on its own hardware (device.VariantsFile). A
	// different network (a smaller keyword model) is never a variant: its
	// accuracy differs.
	VariantOf string `json:"variant_of,omitempty"`
}

// Preprocessing says how raw input becomes tensors.
type Preprocessing struct {
	// Audio models.
	SampleRate     int `json:"sample_rate,omitempty"`     // Hz the model expects
	ChunkSamples   int `json:"chunk_samples,omitempty"`   // samples per Run (streaming models)
	ContextSamples int `json:"context_samples,omitempty"` // tail of the previous chunk prepended
	WindowSamples  int `json:"window_samples,omitempty"`  // keyword spotting: samples per window (1 s)
	// Features: what the keyword model reads — "" (40 log-mel bins, LogMel)
	// or "speech-embedding" (SpeechEmbedding's 96-dim embeddings, from the
	// models directory's speech-embedding folder).
	Features string `json:"features,omitempty"`
	// Image models.
	Width  int       `json:"width,omitempty"`
	Height int       `json:"height,omitempty"`
	Layout string    `json:"layout,omitempty"` // NCHW or NHWC
	Mean   []float32 `json:"mean,omitempty"`
	Std    []float32 `json:"std,omitempty"`
}

// Postprocessing says how a classifier's output becomes an answer.
type Postprocessing struct {
	// Softmax: the output is logits (true) or already probabilities.
	Softmax bool `json:"softmax,omitempty"`
	// Temperature divides logits before softmax (calibrated confidence,
	// fitted on held-out data); 0 or 1 = none.
	Temperature float32 `json:"temperature,omitempty"`
	// TopK labels in the answer; default 3.
	TopK int `json:"top_k,omitempty"`
	// UncertainBelow: a top score under this is answered "uncertain —
	// retake the photo" instead of a diagnosis; default 0.5.
	UncertainBelow float32 `json:"uncertain_below,omitempty"`
	// AbstainLabel: a label that means "none of the above" (e.g.
	// "not_a_leaf", trained on varied negatives); when it wins the answer
	// is the not_a_leaf outcome, never a diagnosis.
	AbstainLabel string `json:"abstain_label,omitempty"`
	// MinLogit: when the best raw output of a real class is below this, the
	// input is unlike anything the model was trained on (max-logit
	// out-of-distribution test; set from held-out data) and the answer is
	// not_a_leaf.
	MinLogit *float32 `json:"min_logit,omitempty"`
	// MinLogSumExp is the same floor on the log-sum-exp of the real
	// classes' raw outputs: the evidence for "one of them" rather than for
	// the best one, so an input whose evidence is spread over several
	// classes (a dried leaf, trained as "a leaf of unknown condition") is
	// not taken for one unlike anything seen.
	MinLogSumExp *float32 `json:"min_logsumexp,omitempty"`
	// AbstainMinScore: the abstain label refuses only with at least this
	// calibrated probability (0.5: more likely none of the above than any
	// of them together); a narrower win is "uncertain". 0: any win.
	AbstainMinScore float32 `json:"abstain_min_score,omitempty"`
	// AbstainMaxGreen: a refusal needs a robust cue as well as the model.
	// When the abstain label wins (or MinLogit fires) but at least this
	// share of the frame is green (Quality.Green), the photo looks like a
	// plant the model cannot place: the answer is "uncertain", not
	// not_a_leaf. Unset: the model alone decides. Set from validation
	// leaves (see the crop-disease model card).
	AbstainMaxGreen *float32 `json:"abstain_max_green,omitempty"`
	// WakeWord (keyword spotting): a command counts only when this keyword
	// was heard first, at most CommandWindow seconds (default 4) before it.
	WakeWord      string  `json:"wake_word,omitempty"`
	CommandWindow float64 `json:"command_window,omitempty"`
	// CommandBelow (keyword spotting with a wake word): a keyword right
	// after the wake word counts from this score instead of
	// UncertainBelow. The kiosk expects a command then; a false command
	// needs a false wake word first. 0 = UncertainBelow.
	CommandBelow float32 `json:"command_below,omitempty"`
	// WakeBelow: the wake word's own threshold (calibrated on its own
	// false alarms: it is the one that arms commands). 0 = UncertainBelow.
	WakeBelow float32 `json:"wake_below,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ParseManifest decodes and validates a manifest. Unknown fields are errors,
// so a typo ("sha265") is caught instead of silently ignored.
func ParseManifest(b []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrBadManifest)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the fields a registry relies on.
func (m *Manifest) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadManifest, fmt.Sprintf(format, a...))
	}
	if !nameRE.MatchString(m.Name) {
		return bad("name %q: want lower-case letters, digits, '.', '_' or '-', at most 64", m.Name)
	}
	if m.Version == "" {
		return bad("version is empty")
	}
	if _, ok := Spec(m.Task); !ok {
		return bad("task %q: want one of %v", m.Task, Tasks())
	}
	// IsLocal refuses absolute paths, "..", and reserved names: a manifest
	// can only point inside its own folder.
	if m.File == "" || !filepath.IsLocal(m.File) {
		return bad("file %q must be a relative path inside the model folder", m.File)
	}
	if len(m.SHA256) != 64 {
		return bad("sha256 must be 64 hex digits, got %d characters", len(m.SHA256))
	}
	if _, err := hex.DecodeString(m.SHA256); err != nil {
		return bad("sha256 is not hex: %v", err)
	}
	if len(m.Inputs) == 0 || len(m.Outputs) == 0 {
		return bad("inputs and outputs must each list at least one tensor")
	}
	for _, t := range append(append([]runtime.TensorInfo{}, m.Inputs...), m.Outputs...) {
		if t.Name == "" || t.DType == runtime.Invalid {
			return bad("tensor %q needs a name and a dtype", t.Name)
		}
	}
	if m.License == "" {
		return bad("license is empty: say under what terms the model may be used")
	}
	p := m.Preprocessing
	if p.SampleRate < 0 || p.ChunkSamples < 0 || p.ContextSamples < 0 || p.Width < 0 || p.Height < 0 {
		return bad("preprocessing sizes must not be negative")
	}
	if m.Task == TaskVAD && (p.SampleRate == 0 || p.ChunkSamples == 0) {
		return bad("a vad model needs preprocessing.sample_rate and preprocessing.chunk_samples")
	}
	if m.Task == TaskImageClassification {
		if p.Width == 0 || p.Height == 0 {
			return bad("an image-classification model needs preprocessing.width and height")
		}
		if p.Layout != "" && p.Layout != "NCHW" && p.Layout != "NHWC" {
			return bad("preprocessing.layout %q: want NCHW or NHWC", p.Layout)
		}
		if len(m.Labels) == 0 {
			return bad("an image-classification model needs labels")
		}
	}
	if pp := m.Postprocessing; pp.Temperature < 0 || pp.TopK < 0 || pp.UncertainBelow < 0 || pp.UncertainBelow > 1 {
		return bad("postprocessing: temperature and top_k must not be negative, uncertain_below in [0, 1]")
	}
	if pp := m.Postprocessing; pp.AbstainLabel != "" && !slices.Contains(m.Labels, pp.AbstainLabel) {
		return bad("postprocessing.abstain_label %q is not one of the labels", pp.AbstainLabel)
	}
	if s := m.Postprocessing.AbstainMinScore; s < 0 || s > 1 {
		return bad("postprocessing.abstain_min_score %v: want a probability from 0 to 1", s)
	}
	if g := m.Postprocessing.AbstainMaxGreen; g != nil && (*g < 0 || *g > 1) {
		return bad("postprocessing.abstain_max_green %v: want a share from 0 to 1", *g)
	}
	if pp := m.Postprocessing; pp.CommandBelow < 0 || pp.CommandBelow > 1 || pp.WakeBelow < 0 || pp.WakeBelow > 1 {
		return bad("postprocessing: command_below %v and wake_below %v must be in [0, 1]", pp.CommandBelow, pp.WakeBelow)
	}
	if pp := m.Postprocessing; pp.WakeWord != "" && !slices.Contains(m.Labels, pp.WakeWord) || pp.CommandWindow < 0 {
		return bad("postprocessing: wake_word %q must be one of the labels, command_window not negative", pp.WakeWord)
	}
	if q := m.Quality; q != nil {
		for name, v := range map[string]*float32{"min_brightness": q.MinBrightness, "max_brightness": q.MaxBrightness,
			"max_clipped": q.MaxClipped, "min_contrast": q.MinContrast, "min_sharpness": q.MinSharpness, "min_plant": q.MinPlant} {
			if v != nil && (*v < 0 || *v > 1) {
				return bad("quality.%s %v: want a value from 0 to 1", name, *v)
			}
		}
	}
	if m.Advice != "" && !filepath.IsLocal(m.Advice) {
		return bad("advice %q must be a relative path inside the model folder", m.Advice)
	}
	if m.Task == TaskKeywordSpotting && (p.SampleRate == 0 || p.WindowSamples == 0 || len(m.Labels) == 0) {
		return bad("a keyword-spotting model needs preprocessing.sample_rate, preprocessing.window_samples and labels")
	}
	if m.VAD != nil {
		if err := m.VAD.validate(); err != nil {
			return bad("vad: %v", err)
		}
	}
	return nil
}

// CheckIO compares the manifest's declared tensors with a loaded session's.
func (m *Manifest) CheckIO(s runtime.Session) error {
	if err := sameInfos("input", m.Inputs, s.Inputs()); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrModelMismatch, m.Name, err)
	}
	if err := sameInfos("output", m.Outputs, s.Outputs()); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrModelMismatch, m.Name, err)
	}
	// One label per class: a label list that does not match the model's
	// class count would name every answer wrongly.
	if out := s.Outputs(); len(m.Labels) > 0 && len(out) > 0 && len(out[0].Shape) > 0 {
		if n := out[0].Shape[len(out[0].Shape)-1]; n > 0 && int(n) != len(m.Labels) {
			return fmt.Errorf("%w: %s: manifest lists %d labels, the model's output %q has %d classes",
				ErrModelMismatch, m.Name, len(m.Labels), out[0].Name, n)
		}
	}
	return nil
}

func sameInfos(kind string, want, got []runtime.TensorInfo) error {
	if len(want) != len(got) {
		return fmt.Errorf("manifest lists %d %ss, model has %d", len(want), kind, len(got))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Name != g.Name || w.DType != g.DType || w.Shape.String() != g.Shape.String() {
			return fmt.Errorf("%s %d: manifest says %s, model has %s", kind, i, w, g)
		}
	}
	return nil
}
