package models

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/runtime"
)

// Detection is one keyword heard in the input.
type Detection struct {
	Keyword string  `json:"keyword"`
	Start   float64 `json:"start"` // seconds: the speech segment it was heard in
	End     float64 `json:"end"`
	Score   float32 `json:"score"`
}

// KWSResult is the answer of the keyword-spotting pipeline.
type KWSResult struct {
	Keywords []Detection `json:"keywords"`
	Segments int         `json:"segments"` // speech segments examined
	Duration float64     `json:"duration"`
	// With a wake word in the manifest: Woke says it was heard, and
	// Command is the first other keyword heard after it, within the
	// command window. A keyword without the wake word before it is listed
	// in Keywords but is never a Command — conversation near a kiosk must
	// not drive it.
	Woke    bool   `json:"woke,omitempty"`
	Command string `json:"command,omitempty"`
}

// command finds the wake word and the keyword after it.
func (r *KWSResult) command(wake string, window float64) {
	if wake == "" {
		return
	}
	end := -1.0
	for _, d := range r.Keywords {
		switch {
		case d.Keyword == wake:
			r.Woke, end = true, d.End
		case end >= 0 && d.Start >= end-0.05 && d.Start-end <= window:
			r.Command = d.Keyword
			return
		}
	}
}

// KWS spots keywords: speech segments from a VAD, a window of
// preprocessing.window_samples centred on each, log-mel features (LogMel),
// normalised with the manifest's mean/std, classified. Labels starting with
// "_" (_unknown_, _silence_) are never reported.
type KWS struct {
	m      *Model
	sess   runtime.Session
	vad    *VAD // nil: the whole input is one segment
	in     string
	window int
}

// NewKWS checks the model; vad may be nil.
func NewKWS(m *Model, sess runtime.Session, vad *VAD) (*KWS, error) {
	if m.Preprocessing.SampleRate != melRate {
		return nil, fmt.Errorf("%w: %s: keyword models run at %d Hz (log-mel frontend), manifest says %d", ErrModelMismatch, m.Name, melRate, m.Preprocessing.SampleRate)
	}
	if len(sess.Inputs()) != 1 {
		return nil, fmt.Errorf("%w: %s: one input expected", ErrModelMismatch, m.Name)
	}
	return &KWS{m: m, sess: sess, vad: vad, in: sess.Inputs()[0].Name, window: m.Preprocessing.WindowSamples}, nil
}

// Classify scores one window of samples (zero-padded or cut to the window).
func (k *KWS) Classify(ctx context.Context, win []float32) ([]float32, error) {
	buf := make([]float32, k.window)
	copy(buf, win)
	feats, frames := LogMel(buf)
	mean, std := float32(0), float32(1)
	if len(k.m.Preprocessing.Mean) > 0 {
		mean = k.m.Preprocessing.Mean[0]
	}
	if len(k.m.Preprocessing.Std) > 0 && k.m.Preprocessing.Std[0] != 0 {
		std = k.m.Preprocessing.Std[0]
	}
	for i := range feats {
		feats[i] = (feats[i] - mean) / std
	}
	t, err := runtime.NewFloat32(runtime.Shape{1, 1, int64(frames), MelBins}, feats)
	if err != nil {
		return nil, err
	}
	out, err := k.sess.Run(ctx, map[string]*runtime.Tensor{k.in: t})
	if err != nil {
		return nil, err
	}
	o := out[k.sess.Outputs()[0].Name].Float32()
	if len(o) != len(k.m.Labels) {
		return nil, fmt.Errorf("%w: %s: %d outputs for %d labels", ErrModelMismatch, k.m.Name, len(o), len(k.m.Labels))
	}
	if k.m.Postprocessing.Softmax {
		o = Softmax(o, k.m.Postprocessing.Temperature)
	}
	return o, nil
}

// Spot finds keywords in samples at 16 kHz.
func (k *KWS) Spot(ctx context.Context, samples []float32) (*KWSResult, error) {
	type span struct{ start, end int }
	var spans []span
	if k.vad != nil {
		probs, err := k.vad.Probabilities(ctx, samples)
		if err != nil {
			return nil, err
		}
		for _, s := range Segments(probs, k.vad.chunk, k.vad.rate, len(samples), k.vad.opts).Segments {
			spans = append(spans, span{int(s.Start * melRate), int(s.End * melRate)})
		}
	} else {
		spans = []span{{0, len(samples)}}
	}
	thr := k.m.Postprocessing.UncertainBelow
	if thr == 0 {
		thr = 0.5
	}
	res := &KWSResult{Keywords: []Detection{}, Segments: len(spans), Duration: round3(float64(len(samples)) / melRate)}
	for _, sp := range spans {
		// Windows centred on the segment; a long segment gets several,
		// half a window apart, and reports its best keyword once.
		var best Detection
		for c := sp.start + min(k.window, sp.end-sp.start)/2; ; c += k.window / 2 {
			lo := c - k.window/2
			win := make([]float32, k.window)
			for i := range win {
				if j := lo + i; j >= 0 && j < len(samples) {
					win[i] = samples[j]
				}
			}
			p, err := k.Classify(ctx, win)
			if err != nil {
				return nil, err
			}
			for i, s := range p {
				if l := k.m.Labels[i]; !strings.HasPrefix(l, "_") && s >= thr && s > best.Score {
					best = Detection{Keyword: l, Score: round4(s)}
				}
			}
			if c+k.window/2 >= sp.end {
				break
			}
		}
		if best.Keyword != "" {
			best.Start, best.End = round3(float64(sp.start)/melRate), round3(float64(sp.end)/melRate)
			res.Keywords = append(res.Keywords, best)
		}
	}
	pp := k.m.Postprocessing
	window := pp.CommandWindow
	if window == 0 {
		window = 4
	}
	res.command(pp.WakeWord, window)
	return res, nil
}

type kwsPipeline struct{ k *KWS }

func (p *kwsPipeline) Infer(ctx context.Context, in Input) (*Result, error) {
	samples, t0, t1, t2, err := decodeAudio(in, melRate)
	if err != nil {
		return nil, err
	}
	out, err := p.k.Spot(ctx, samples)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.Name, err)
	}
	t3 := time.Now()
	m := p.k.m
	return &Result{Model: m.Name, Version: m.Version, Task: m.Task, Input: in.Name, Output: out,
		Timings: Timings{Decode: ms(t1.Sub(t0)), Preprocess: ms(t2.Sub(t1)), Inference: ms(t3.Sub(t2)), Total: ms(t3.Sub(t0))}}, nil
}
