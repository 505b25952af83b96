package models

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/runtime"
)

// VADOptions tune how speech probabilities become segments. Zero fields take
// the defaults documented on each; a manifest's "vad" block sets per-model values.
type VADOptions struct {
	// Threshold starts speech when a chunk's probability reaches it. Default 0.5.
	Threshold float32 `json:"threshold,omitempty"`
	// NegThreshold ends speech when probability falls below it (hysteresis,
	// so a flicker around Threshold does not split a word). Default Threshold-0.15.
	NegThreshold float32 `json:"neg_threshold,omitempty"`
	// MinSpeech drops segments shorter than this. Default 250ms.
	MinSpeech Duration `json:"min_speech,omitempty"`
	// MinSilence is how long probability must stay low to end a segment. Default 100ms.
	MinSilence Duration `json:"min_silence,omitempty"`
	// SpeechPad widens each segment on both sides (never past its
	// neighbours or the audio). Default 30ms.
	SpeechPad Duration `json:"speech_pad,omitempty"`
}

// Duration is a time.Duration written as "250ms" in JSON.
type Duration time.Duration

// MarshalJSON writes "250ms".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "250ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"250ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// WithDefaults fills zero fields.
func (o VADOptions) WithDefaults() VADOptions {
	if o.Threshold == 0 {
		o.Threshold = 0.5
	}
	if o.NegThreshold == 0 {
		o.NegThreshold = max(o.Threshold-0.15, 0.01)
	}
	if o.MinSpeech == 0 {
		o.MinSpeech = Duration(250 * time.Millisecond)
	}
	if o.MinSilence == 0 {
		o.MinSilence = Duration(100 * time.Millisecond)
	}
	if o.SpeechPad == 0 {
		o.SpeechPad = Duration(30 * time.Millisecond)
	}
	return o
}

func (o VADOptions) validate() error {
	if o.Threshold < 0 || o.Threshold > 1 {
		return fmt.Errorf("threshold %v is outside [0, 1]", o.Threshold)
	}
	if o.NegThreshold < 0 || (o.Threshold > 0 && o.NegThreshold > o.Threshold) {
		return fmt.Errorf("neg_threshold %v must be between 0 and threshold %v", o.NegThreshold, o.Threshold)
	}
	if o.MinSpeech < 0 || o.MinSilence < 0 || o.SpeechPad < 0 {
		return fmt.Errorf("durations must not be negative")
	}
	return nil
}

// Segment is one stretch of speech, in seconds from the start of the input.
type Segment struct {
	Start       float64 `json:"start"`
	End         float64 `json:"end"`
	Probability float32 `json:"probability"` // mean chunk probability inside the segment
}

// VADResult is the output of the VAD pipeline.
type VADResult struct {
	Segments    []Segment `json:"segments"`
	Duration    float64   `json:"duration"`     // seconds of audio analysed
	SpeechRatio float64   `json:"speech_ratio"` // fraction of Duration inside segments
}

// VAD runs a Silero-compatible streaming VAD model: inputs "input"
// float32[1, context+chunk], "state" float32[2, 1, 128], "sr" int64 scalar;
// outputs "output" (speech probability) and "stateN" (carried to the next chunk).
type VAD struct {
	sess  runtime.Session
	rate  int
	chunk int
	ctxN  int
	state runtime.Shape
	opts  VADOptions
}

// NewVAD checks that sess has the Silero interface and returns the pipeline.
// opts override the manifest's "vad" block, which overrides the defaults.
func NewVAD(sess runtime.Session, m *Manifest, opts VADOptions) (*VAD, error) {
	if m.Task != TaskVAD {
		return nil, fmt.Errorf("models: %s is a %s model, not vad", m.Name, m.Task)
	}
	base := VADOptions{}
	if m.VAD != nil {
		base = *m.VAD
	}
	merged := mergeVAD(base, opts).WithDefaults()
	if err := merged.validate(); err != nil {
		return nil, fmt.Errorf("models: vad options: %w", err)
	}
	v := &VAD{sess: sess, rate: m.Preprocessing.SampleRate, chunk: m.Preprocessing.ChunkSamples,
		ctxN: m.Preprocessing.ContextSamples, opts: merged}
	for _, need := range []string{"input", "state", "sr"} {
		if !hasInput(sess.Inputs(), need) {
			return nil, fmt.Errorf("%w: %s: vad models need inputs input, state, sr; %q missing", ErrModelMismatch, m.Name, need)
		}
	}
	for _, in := range sess.Inputs() {
		if in.Name == "state" {
			v.state = append(runtime.Shape(nil), in.Shape...)
			for i, d := range v.state {
				if d < 0 {
					v.state[i] = 1 // batch of one
				}
			}
		}
	}
	return v, nil
}

func mergeVAD(base, o VADOptions) VADOptions {
	if o.Threshold != 0 {
		base.Threshold = o.Threshold
	}
	if o.NegThreshold != 0 {
		base.NegThreshold = o.NegThreshold
	}
	if o.MinSpeech != 0 {
		base.MinSpeech = o.MinSpeech
	}
	if o.MinSilence != 0 {
		base.MinSilence = o.MinSilence
	}
	if o.SpeechPad != 0 {
		base.SpeechPad = o.SpeechPad
	}
	return base
}

func hasInput(infos []runtime.TensorInfo, name string) bool {
	for _, i := range infos {
		if i.Name == name {
			return true
		}
	}
	return false
}

// SampleRate is the rate the model runs at; Detect resamples other rates to it.
func (v *VAD) SampleRate() int { return v.rate }

// Options returns the options in force.
func (v *VAD) Options() VADOptions { return v.opts }

// Probabilities runs the model over samples (already at SampleRate) chunk by
// chunk, carrying state and context, and returns one probability per chunk.
// The last partial chunk is zero-padded.
func (v *VAD) Probabilities(ctx context.Context, samples []float32) ([]float32, error) {
	if bd, ok := v.sess.(runtime.Binder); ok {
		if probs, bound, err := v.probabilitiesBound(ctx, bd, samples); bound {
			return probs, err
		}
	}
	n := (len(samples) + v.chunk - 1) / v.chunk
	probs := make([]float32, 0, n)
	state := make([]float32, v.state.Size())
	frame := make([]float32, v.ctxN+v.chunk)
	sr, _ := runtime.NewInt64(runtime.Shape{}, []int64{int64(v.rate)})
	in, _ := runtime.NewFloat32(runtime.Shape{1, int64(len(frame))}, frame)
	st, _ := runtime.NewFloat32(v.state, state)
	feeds := map[string]*runtime.Tensor{"input": in, "state": st, "sr": sr}
	// Where the session can, the outputs land in two tensors reused chunk
	// after chunk (the state swapped with the next chunk's input state).
	into, _ := v.sess.(runtime.IntoRunner)
	var outs map[string]*runtime.Tensor
	if into != nil {
		p, _ := runtime.NewFloat32(runtime.Shape{1, 1}, make([]float32, 1))
		ns, _ := runtime.NewFloat32(v.state, make([]float32, len(state)))
		outs = map[string]*runtime.Tensor{"output": p, "stateN": ns}
	}
	for i := 0; i < n; i++ {
		// frame = [last ctxN samples of previous chunk | this chunk]
		copy(frame, frame[v.chunk:])
		chunk := samples[i*v.chunk : min((i+1)*v.chunk, len(samples))]
		clear(frame[v.ctxN+copy(frame[v.ctxN:], chunk):])
		var out map[string]*runtime.Tensor
		var err error
		if into != nil {
			err = into.RunInto(ctx, feeds, outs)
			out = outs
		} else {
			feeds["state"], _ = runtime.NewFloat32(v.state, state)
			out, err = v.sess.Run(ctx, feeds)
		}
		if err != nil {
			return nil, fmt.Errorf("models: vad chunk %d: %w", i, err)
		}
		p, ns := out["output"], out["stateN"]
		if p == nil || len(p.Float32()) == 0 || ns == nil || len(ns.Float32()) != len(state) {
			return nil, fmt.Errorf("%w: vad outputs must be output (probability) and stateN %s", ErrModelMismatch, v.state)
		}
		probs = append(probs, p.Float32()[0])
		if into != nil {
			feeds["state"], outs["stateN"] = ns, feeds["state"] // the new state in, the old one's memory out
		} else {
			state = ns.Float32()
		}
	}
	return probs, nil
}

// probabilitiesBound is Probabilities over two bindings of the same
// tensors, the state crossed: one run's new state is the next run's input
// in place, and the frame is written where the model reads it, so a chunk
// copies nothing in or out of the runtime (Silero VAD through
// runtime/onnx: 1.5 % over onnxruntime_go called directly with the copies,
// see BenchmarkRunOverheadBound). bound is false when the session cannot
// bind these tensors (a VAD model of another shape); the caller then runs
// chunk by chunk as before.
func (v *VAD) probabilitiesBound(ctx context.Context, bd runtime.Binder, samples []float32) (probs []float32, bound bool, err error) {
	n := (len(samples) + v.chunk - 1) / v.chunk
	frame := make([]float32, v.ctxN+v.chunk)
	sr, _ := runtime.NewInt64(runtime.Shape{}, []int64{int64(v.rate)})
	in, _ := runtime.NewFloat32(runtime.Shape{1, int64(len(frame))}, frame)
	s1, _ := runtime.NewFloat32(v.state, make([]float32, v.state.Size()))
	s2, _ := runtime.NewFloat32(v.state, make([]float32, v.state.Size()))
	pr := make([]float32, 1)
	p, _ := runtime.NewFloat32(runtime.Shape{1, 1}, pr)
	var runs [2]runtime.Bound
	for k, st := range [2][2]*runtime.Tensor{{s1, s2}, {s2, s1}} {
		b, err := bd.Bind(map[string]*runtime.Tensor{"input": in, "state": st[0], "sr": sr},
			map[string]*runtime.Tensor{"output": p, "stateN": st[1]})
		if err != nil {
			if k == 1 {
				runs[0].Close()
			}
			return nil, false, nil
		}
		defer b.Close()
		runs[k] = b
	}
	probs = make([]float32, 0, n)
	for i := 0; i < n; i++ {
		// frame = [last ctxN samples of previous chunk | this chunk]
		copy(frame, frame[v.chunk:])
		chunk := samples[i*v.chunk : min((i+1)*v.chunk, len(samples))]
		clear(frame[v.ctxN+copy(frame[v.ctxN:], chunk):])
		if err := runs[i%2].Run(ctx); err != nil {
			return nil, true, fmt.Errorf("models: vad chunk %d: %w", i, err)
		}
		probs = append(probs, pr[0])
	}
	return probs, true, nil
}

// Detect finds speech segments in a.
func (v *VAD) Detect(ctx context.Context, a *Audio) (*VADResult, error) {
	samples := a.Samples
	if a.SampleRate != v.rate {
		samples = Resample(samples, a.SampleRate, v.rate)
	}
	probs, err := v.Probabilities(ctx, samples)
	if err != nil {
		return nil, err
	}
	return Segments(probs, v.chunk, v.rate, len(samples), v.opts), nil
}

// Segments turns per-chunk probabilities into speech segments with
// hysteresis, minimum durations and padding (the logic of Silero's
// get_speech_timestamps, on chunk boundaries).
func Segments(probs []float32, chunk, rate, total int, o VADOptions) *VADResult {
	o = o.WithDefaults()
	toS := func(d Duration) int { return int(time.Duration(d).Seconds() * float64(rate)) }
	minSpeech, minSilence, pad := toS(o.MinSpeech), toS(o.MinSilence), toS(o.SpeechPad)

	type seg struct{ start, end int }
	var segs []seg
	triggered := false
	var cur seg
	tempEnd := -1
	for i, p := range probs {
		pos := i * chunk
		if p >= o.Threshold && tempEnd >= 0 {
			tempEnd = -1
		}
		if p >= o.Threshold && !triggered {
			triggered, cur.start = true, pos
			continue
		}
		if p < o.NegThreshold && triggered {
			if tempEnd < 0 {
				tempEnd = pos
			}
			if pos+chunk-tempEnd < minSilence {
				continue
			}
			cur.end = tempEnd
			if cur.end-cur.start >= minSpeech {
				segs = append(segs, cur)
			}
			triggered, tempEnd = false, -1
		}
	}
	if triggered && total-cur.start >= minSpeech {
		segs = append(segs, seg{cur.start, total})
	}
	// Pad, splitting the gap when neighbours are closer than two pads.
	for i := range segs {
		if i == 0 {
			segs[i].start = max(0, segs[i].start-pad)
		}
		if i+1 < len(segs) {
			gap := segs[i+1].start - segs[i].end
			if gap < 2*pad {
				segs[i].end += gap / 2
				segs[i+1].start -= gap - gap/2
			} else {
				segs[i].end += pad
				segs[i+1].start -= pad
			}
		} else {
			segs[i].end = min(total, segs[i].end+pad)
		}
	}
	res := &VADResult{Segments: []Segment{}, Duration: round3(float64(total) / float64(rate))}
	speech := 0
	for _, s := range segs {
		var sum float32
		var n int
		for i := s.start / chunk; i < len(probs) && i*chunk < s.end; i++ {
			sum += probs[i]
			n++
		}
		mean := float32(0)
		if n > 0 {
			mean = sum / float32(n)
		}
		speech += s.end - s.start
		res.Segments = append(res.Segments, Segment{
			Start: round3(float64(s.start) / float64(rate)), End: round3(float64(s.end) / float64(rate)),
			Probability: float32(round3(float64(mean))),
		})
	}
	if total > 0 {
		res.SpeechRatio = round3(float64(speech) / float64(total))
	}
	return res
}

func round3(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }
