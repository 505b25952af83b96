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
	emb    *SpeechEmbedding // features "speech-embedding"; nil: log-mel
	frames int              // embeddings per window the head reads
}

// FeaturesEmbedding is Preprocessing.Features for heads on SpeechEmbedding.
const FeaturesEmbedding = "speech-embedding"

// NewKWS checks the model; vad may be nil; emb is required by (and only
// used for) a model whose features are the speech embedding.
func NewKWS(m *Model, sess runtime.Session, vad *VAD, emb *SpeechEmbedding) (*KWS, error) {
	if m.Preprocessing.SampleRate != melRate {
		return nil, fmt.Errorf("%w: %s: keyword models run at %d Hz (log-mel frontend), manifest says %d", ErrModelMismatch, m.Name, melRate, m.Preprocessing.SampleRate)
	}
	if len(sess.Inputs()) != 1 {
		return nil, fmt.Errorf("%w: %s: one input expected", ErrModelMismatch, m.Name)
	}
	k := &KWS{m: m, sess: sess, vad: vad, in: sess.Inputs()[0].Name, window: m.Preprocessing.WindowSamples}
	switch m.Preprocessing.Features {
	case "":
	case FeaturesEmbedding:
		if emb == nil {
			return nil, fmt.Errorf("%w: %s reads the speech embedding, which is not open (make deps fetches models/%s)", ErrModelMismatch, m.Name, EmbeddingDir)
		}
		shape := sess.Inputs()[0].Shape
		if len(shape) != 3 || shape[1] <= 0 || shape[2] != EmbeddingDim {
			return nil, fmt.Errorf("%w: %s: input %v, want [batch, frames, %d]", ErrModelMismatch, m.Name, shape, EmbeddingDim)
		}
		k.emb, k.frames = emb, int(shape[1])
	default:
		return nil, fmt.Errorf("%w: %s: unknown features %q", ErrModelMismatch, m.Name, m.Preprocessing.Features)
	}
	return k, nil
}

// Classify scores one window of samples (zero-padded or cut to the window).
func (k *KWS) Classify(ctx context.Context, win []float32) ([]float32, error) {
	buf := make([]float32, k.window)
	copy(buf, win)
	if k.emb != nil {
		return k.classifyEmbedded(ctx, buf)
	}
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
	return k.scores(out)
}

// classifyEmbedded: the window's last k.frames embeddings through the head.
func (k *KWS) classifyEmbedded(ctx context.Context, buf []float32) ([]float32, error) {
	// Past the input's ends the window is digital zeros, which no
	// microphone gives and the head never heard: a fixed dither at the
	// level of a quiet room's noise floor (deterministic: same input,
	// same answer).
	var x uint32 = 2463534242
	for i := range buf {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		buf[i] += (float32(x)/float32(^uint32(0)) - 0.5) * 2e-3
	}
	embs, err := k.emb.Embed(ctx, buf)
	if err != nil {
		return nil, err
	}
	if len(embs) < k.frames {
		return nil, fmt.Errorf("%w: %s: a window of %d samples gives %d embeddings, the head reads %d", ErrModelMismatch, k.m.Name, len(buf), len(embs), k.frames)
	}
	flat := make([]float32, 0, k.frames*EmbeddingDim)
	for _, e := range embs[len(embs)-k.frames:] {
		flat = append(flat, e...)
	}
	t, err := runtime.NewFloat32(runtime.Shape{1, int64(k.frames), EmbeddingDim}, flat)
	if err != nil {
		return nil, err
	}
	out, err := k.sess.Run(ctx, map[string]*runtime.Tensor{k.in: t})
	if err != nil {
		return nil, err
	}
	return k.scores(out)
}

func (k *KWS) scores(out map[string]*runtime.Tensor) ([]float32, error) {
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
	pp := k.m.Postprocessing
	thr := pp.UncertainBelow
	if thr == 0 {
		thr = 0.5
	}
	window := pp.CommandWindow
	if window == 0 {
		window = 4
	}
	// Candidates from the lower of the two thresholds; which count is
	// decided below, in order.
	wakeThr, cmdThr := thr, thr
	if pp.WakeWord != "" && pp.WakeBelow > 0 {
		wakeThr = pp.WakeBelow
	}
	if pp.WakeWord != "" && pp.CommandBelow > 0 {
		cmdThr = pp.CommandBelow
	}
	candThr := min(thr, wakeThr, cmdThr)
	var cands []Detection
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
				if l := k.m.Labels[i]; !strings.HasPrefix(l, "_") && s >= candThr && s > best.Score {
					best = Detection{Keyword: l, Score: round4(s)}
				}
			}
			if c+k.window/2 >= sp.end {
				break
			}
		}
		if best.Keyword != "" {
			best.Start, best.End = round3(float64(sp.start)/melRate), round3(float64(sp.end)/melRate)
			cands = append(cands, best)
		}
	}
	for _, c := range cands {
		afterWake := false
		if n := len(res.Keywords); n > 0 {
			last := res.Keywords[n-1]
			afterWake = last.Keyword == pp.WakeWord && c.Keyword != pp.WakeWord && c.Start-last.End <= window
		}
		switch {
		case c.Keyword == pp.WakeWord && pp.WakeWord != "":
			if c.Score >= wakeThr {
				res.Keywords = append(res.Keywords, c)
			}
		case afterWake && c.Score >= cmdThr, c.Score >= thr:
			res.Keywords = append(res.Keywords, c)
		}
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
