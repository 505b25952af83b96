package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	gosync "sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/outpost-edge/outpost/runtime"
)

// Scored is one label with its probability.
type Scored struct {
	Label string  `json:"label"`
	Score float32 `json:"score"`
}

// ClassResult is the answer of an image classifier.
type ClassResult struct {
	// Outcome: "diagnosis", "retake" (the quality gate refused the photo;
	// Reason says why) or "not_a_leaf" (the model abstained).
	Outcome string `json:"outcome"`
	// Label: the diagnosis when confident; otherwise "uncertain", "retake"
	// or "not_a_leaf" — never a disease or healthy unless confident.
	Label     string   `json:"label"`
	Score     float32  `json:"score"`     // calibrated probability of Top[0] (0 for a retake)
	Uncertain bool     `json:"uncertain"` // true for anything but a confident diagnosis
	Reason    string   `json:"reason,omitempty"`
	Top       []Scored `json:"top"` // top-k, best first (empty for a retake: the model did not run)
	Advice    string   `json:"advice,omitempty"`
	Lang      string   `json:"lang,omitempty"`    // language of Advice
	Quality   *Quality `json:"quality,omitempty"` // what the photo quality gate measured
}

// UncertainLabel is ClassResult.Label when the model is not sure.
const UncertainLabel = "uncertain"

// Advice maps label → language → text. The key "uncertain" holds the
// retake-the-photo message.
type Advice map[string]map[string]string

// LoadAdvice reads the advice file named by the manifest (nil if none).
func LoadAdvice(m *Model) (Advice, error) {
	if m.Manifest.Advice == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(m.Dir, m.Manifest.Advice))
	if err != nil {
		return nil, fmt.Errorf("models: %s advice: %w", m.Name, err)
	}
	var a Advice
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("models: %s advice %s: %w", m.Name, m.Manifest.Advice, err)
	}
	return a, nil
}

// Text returns the advice for label in lang, falling back to English.
func (a Advice) Text(label, lang string) (string, string) {
	if t := a[label][lang]; t != "" {
		return t, lang
	}
	if t := a[label]["en"]; t != "" {
		return t, "en"
	}
	return "", ""
}

// Classifier runs an image-classification model.
type Classifier struct {
	m       *Model
	sess    runtime.Session
	in      string
	advice  Advice
	gate    QualityGate
	abstain int // index of the abstain label, or -1

	// Photos run through bindings kept for the session's life, one per
	// photo in flight (at most as many as ever ran at once): the photo is
	// written where the model reads it and the scores read where the model
	// wrote them (the wrapper then costs 0.1 % of a run, not 1–2 %: issue
	// 31). binder is nil when the session cannot bind or the model does
	// not suit one (several outputs).
	binder   runtime.Binder
	bindMu   gosync.Mutex
	bindFree []*photoBinding
}

type photoBinding struct {
	in, out *runtime.Tensor
	b       runtime.Bound
}

// NewClassifier checks the model's single image input and loads its advice.
func NewClassifier(m *Model, sess runtime.Session) (*Classifier, error) {
	if len(sess.Inputs()) != 1 || len(sess.Outputs()) < 1 {
		return nil, fmt.Errorf("%w: %s: a classifier has one input and one output", ErrModelMismatch, m.Name)
	}
	adv, err := LoadAdvice(m)
	if err != nil {
		return nil, err
	}
	c := &Classifier{m: m, sess: sess, in: sess.Inputs()[0].Name, advice: adv, gate: m.Quality.Gate(), abstain: -1}
	if bd, ok := sess.(runtime.Binder); ok && len(sess.Outputs()) == 1 {
		c.binder = bd
	}
	if a := m.Postprocessing.AbstainLabel; a != "" {
		c.abstain = slices.Index(m.Labels, a)
		if c.abstain < 0 {
			return nil, fmt.Errorf("%w: %s: abstain_label %q is not one of its labels", ErrBadManifest, m.Name, a)
		}
	}
	return c, nil
}

// Scores runs the model on a prepared tensor and returns its raw output
// and the calibrated probabilities.
func (c *Classifier) Scores(ctx context.Context, t *runtime.Tensor) (raw, probs []float32, err error) {
	out, err := c.sess.Run(ctx, map[string]*runtime.Tensor{c.in: t})
	if err != nil {
		return nil, nil, err
	}
	return c.scores(out[c.sess.Outputs()[0].Name].Float32())
}

// binding returns a free photo binding, making one if none is free; nil
// when the session cannot bind (then it never tries again).
func (c *Classifier) binding() *photoBinding {
	c.bindMu.Lock()
	defer c.bindMu.Unlock()
	if c.binder == nil {
		return nil
	}
	if n := len(c.bindFree); n > 0 {
		pb := c.bindFree[n-1]
		c.bindFree = c.bindFree[:n-1]
		return pb
	}
	shape, err := imageShape(c.m.Preprocessing)
	if err != nil {
		c.binder = nil
		return nil
	}
	in, _ := runtime.NewFloat32(shape, make([]float32, shape.Size()))
	out, _ := runtime.NewFloat32(runtime.Shape{1, int64(len(c.m.Labels))}, make([]float32, len(c.m.Labels)))
	b, err := c.binder.Bind(map[string]*runtime.Tensor{c.in: in}, map[string]*runtime.Tensor{c.sess.Outputs()[0].Name: out})
	if err != nil {
		// A model whose output is not [1, labels] (checked again by
		// scores on the plain path, which names what is wrong).
		c.binder = nil
		return nil
	}
	return &photoBinding{in: in, out: out, b: b}
}

// runBound runs the photo written into pb's input and scores it; pb is
// free again when it returns.
func (c *Classifier) runBound(ctx context.Context, pb *photoBinding) (raw, probs []float32, err error) {
	err = pb.b.Run(ctx)
	if err != nil && ctx.Err() == nil && !errors.Is(err, runtime.ErrClosed) {
		// A model the binding does not suit (a dynamic output that is not
		// one score per label): this classifier stops binding, and the
		// plain path runs the photo — naming what is wrong, if anything is.
		t, _ := runtime.NewFloat32(pb.in.Shape, slices.Clone(pb.in.Float32()))
		c.bindMu.Lock()
		c.binder = nil
		c.bindMu.Unlock()
		pb.b.Close()
		return c.Scores(ctx, t)
	}
	raw = slices.Clone(pb.out.Float32())
	c.bindMu.Lock()
	c.bindFree = append(c.bindFree, pb)
	c.bindMu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	return c.scores(raw)
}

// scores checks the model's output o against the labels and calibrates it.
func (c *Classifier) scores(o []float32) (raw, probs []float32, err error) {
	if len(o) != len(c.m.Labels) {
		return nil, nil, fmt.Errorf("%w: %s: output has %d values, manifest lists %d labels", ErrModelMismatch, c.m.Name, len(o), len(c.m.Labels))
	}
	pp := c.m.Postprocessing
	if !pp.Softmax {
		return o, o, nil
	}
	return o, Softmax(o, pp.Temperature), nil
}

// Retake is the answer when the quality gate refuses a photo.
func (c *Classifier) Retake(q Quality, reason, lang string) *ClassResult {
	if lang == "" {
		lang = "en"
	}
	r := &ClassResult{Outcome: OutcomeRetake, Label: OutcomeRetake, Uncertain: true, Reason: reason, Top: []Scored{}, Quality: &q}
	r.Advice, r.Lang = c.text(classMeaning(r).AdviceKey, lang)
	return r
}

// Softmax with temperature (0 or 1 = plain), numerically stable.
func Softmax(logits []float32, temperature float32) []float32 {
	t := float64(temperature)
	if t <= 0 {
		t = 1
	}
	m := math.Inf(-1)
	for _, v := range logits {
		m = math.Max(m, float64(v)/t)
	}
	out := make([]float32, len(logits))
	var sum float64
	for i, v := range logits {
		e := math.Exp(float64(v)/t - m)
		out[i] = float32(e)
		sum += e
	}
	for i := range out {
		out[i] = float32(float64(out[i]) / sum)
	}
	return out
}

// Answer turns the model's output (raw: logits when the manifest says
// softmax) and probabilities into the result people see: an abstention
// when the abstain label wins or the other logits are under the manifest's
// floor (min_logit on the best, min_logsumexp on all of them) — unless q (what the gate measured; nil
// when it did not run) shows a green, plant-like frame (abstain_max_green),
// which makes it "uncertain" instead — "uncertain" when the top
// probability is under uncertain_below, else the diagnosis.
func (c *Classifier) Answer(raw, probs []float32, q *Quality, lang string) *ClassResult {
	pp := c.m.Postprocessing
	k := pp.TopK
	if k <= 0 {
		k = 3
	}
	thr := pp.UncertainBelow
	if thr == 0 {
		thr = 0.5
	}
	idx := make([]int, len(probs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return probs[idx[a]] > probs[idx[b]] })
	r := &ClassResult{Outcome: OutcomeDiagnosis}
	for _, i := range idx[:min(k, len(idx))] {
		r.Top = append(r.Top, Scored{Label: c.m.Labels[i], Score: round4(probs[i])})
	}
	r.Label, r.Score = r.Top[0].Label, r.Top[0].Score
	best := float32(math.Inf(-1)) // the best logit of a real class
	for i, v := range raw {
		if i != c.abstain {
			best = max(best, v)
		}
	}
	var sum float64 // their log-sum-exp, around the best
	for i, v := range raw {
		if i != c.abstain {
			sum += math.Exp(float64(v - best))
		}
	}
	lse := float32(float64(best) + math.Log(sum))
	abstain := idx[0] == c.abstain && probs[c.abstain] >= pp.AbstainMinScore ||
		pp.MinLogit != nil && best < *pp.MinLogit || pp.MinLogSumExp != nil && lse < *pp.MinLogSumExp
	plantLike := pp.AbstainMaxGreen != nil && q != nil && q.Green >= *pp.AbstainMaxGreen
	switch {
	case abstain && plantLike:
		// The model cannot place it, but it is green: a plant it has
		// not seen, not proof that there is no leaf.
		r.Uncertain, r.Label = true, UncertainLabel
	case abstain:
		r.Outcome, r.Label, r.Uncertain = OutcomeNotALeaf, OutcomeNotALeaf, true
	case r.Score < thr:
		r.Uncertain, r.Label = true, UncertainLabel
	}
	if lang == "" {
		lang = "en"
	}
	// The words are the ones the task table says this answer means (the
	// kiosk speaks the same key in another language).
	r.Advice, r.Lang = c.text(classMeaning(r).AdviceKey, lang)
	return r
}

func round4(f float32) float32 { return float32(math.Round(float64(f)*10000) / 10000) }

type classPipeline struct {
	c      *Classifier
	lang   string
	decode *DecodeBudget
}

func (p *classPipeline) Infer(ctx context.Context, in Input) (*Result, error) {
	t0 := time.Now()
	pre := p.c.m.Preprocessing
	if p.decode != nil {
		cost, err := ImageDecodeCost(in.Data, pre.Width, pre.Height)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in.Name, err)
		}
		if err := p.decode.acquire(ctx, cost); err != nil {
			return nil, fmt.Errorf("%s: %w", in.Name, err)
		}
		defer p.decode.release(cost)
	}
	img, err := DecodeImageScaled(in.Data, pre.Width, pre.Height)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.Name, err)
	}
	defer putRGBA(img) // only measured and made a tensor of, never kept
	t1 := time.Now()
	m := p.c.m
	res := &Result{Model: m.Name, Version: m.Version, Task: m.Task, Input: in.Name}
	var q Quality
	if !p.c.gate.Off {
		q = MeasureQuality(img, pre.Width, pre.Height)
		if reason := p.c.gate.Check(q); reason != "" {
			res.Output = p.c.Retake(q, reason, p.lang)
			t2 := time.Now()
			res.Timings = Timings{Decode: ms(t1.Sub(t0)), Preprocess: ms(t2.Sub(t1)), Total: ms(t2.Sub(t0))}
			return res, nil
		}
	}
	pb := p.c.binding()
	var t *runtime.Tensor
	if pb != nil {
		imageInto(img, p.c.m.Preprocessing, pb.in.Float32())
	} else if t, err = ImageTensor(img, p.c.m.Preprocessing); err != nil {
		return nil, fmt.Errorf("%s: %w", in.Name, err)
	}
	t2 := time.Now()
	var raw, probs []float32
	if pb != nil {
		raw, probs, err = p.c.runBound(ctx, pb)
	} else {
		raw, probs, err = p.c.Scores(ctx, t)
		putF32(t.Float32()) // the run is over: ORT holds no reference to it
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.Name, err)
	}
	t3 := time.Now()
	var qp *Quality
	if !p.c.gate.Off {
		qp = &q
	}
	out := p.c.Answer(raw, probs, qp, p.lang)
	out.Quality = qp
	t4 := time.Now()
	res.Output = out
	res.Timings = Timings{Decode: ms(t1.Sub(t0)), Preprocess: ms(t2.Sub(t1)), Inference: ms(t3.Sub(t2)),
		Postprocess: ms(t4.Sub(t3)), Total: ms(t4.Sub(t0))}
	return res, nil
}

// DecodeBudget bounds the bytes image decoding holds at once across
// concurrent requests (a weighted semaphore): a daemon with two inference
// slots and a 256 MB memory cap must not decode two huge PNGs at once.
type DecodeBudget struct {
	sem  *semaphore.Weighted
	size int64
}

// NewDecodeBudget allows bytes of decoded pixels at once.
func NewDecodeBudget(bytes int64) *DecodeBudget {
	return &DecodeBudget{sem: semaphore.NewWeighted(bytes), size: bytes}
}

func (d *DecodeBudget) acquire(ctx context.Context, n int64) error {
	if n > d.size {
		return fmt.Errorf("%w: image: decoding it needs %d MB, over the %d MB decode budget (send a JPEG, or a smaller image)",
			ErrBadInput, n>>20, d.size>>20)
	}
	return d.sem.Acquire(ctx, n)
}

func (d *DecodeBudget) release(n int64) { d.sem.Release(n) }
