package models

import (
	"context"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/runtime"
)

// Input is one thing to run a model on: a file's bytes and a name for it.
type Input struct {
	Name string // file name or other label, echoed in the Result
	Data []byte
}

// Timings of one inference, in milliseconds.
type Timings struct {
	Decode      float64 `json:"decode"`
	Preprocess  float64 `json:"preprocess"`
	Inference   float64 `json:"inference"`
	Postprocess float64 `json:"postprocess"`
	Total       float64 `json:"total"`
}

// Result is what a pipeline produced for one input.
type Result struct {
	ID      string `json:"id,omitempty"` // set once the result is stored durably
	Model   string `json:"model"`
	Version string `json:"version"`
	// Variant is the variant of Model that ran, when the device chose one
	// other than the model itself (device.VariantsFile).
	Variant string  `json:"variant,omitempty"`
	Task    Task    `json:"task"`
	Input   string  `json:"input,omitempty"`
	Output  any     `json:"result"`
	Timings Timings `json:"timings_ms"`
}

// Pipeline turns raw input into a Result with one model.
type Pipeline interface {
	Infer(ctx context.Context, in Input) (*Result, error)
}

// PipelineOptions carry per-task overrides.
type PipelineOptions struct {
	VAD  VADOptions
	Lang string // language for advice text (en, fr, sw, ha, am); default en
	// Segmenter finds speech for keyword spotting (a Silero VAD); nil
	// treats the whole input as one segment.
	Segmenter *VAD
	// Embedding: the speech embedding a keyword model with features
	// "speech-embedding" reads (opened by the caller, who closes it).
	Embedding *SpeechEmbedding
	// Decode bounds the memory image decoding holds at once, shared by
	// every pipeline that is given it; nil: unbounded (one-shot CLI use).
	Decode *DecodeBudget
}

// NewPipeline returns the pipeline for m's task (the task table) around
// an open session.
func NewPipeline(m *Model, sess runtime.Session, opts PipelineOptions) (Pipeline, error) {
	if s, ok := Spec(m.Task); ok && s.New != nil {
		return s.New(m, sess, opts)
	}
	return nil, fmt.Errorf("models: %s: task %q has no pipeline in this build", m.Name, m.Task)
}

type vadPipeline struct {
	m *Model
	v *VAD
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// decodeAudio decodes a WAV input and resamples it to rate, timing both
// steps (t0 start, t1 decoded, t2 resampled).
func decodeAudio(in Input, rate int) (samples []float32, t0, t1, t2 time.Time, err error) {
	t0 = time.Now()
	a, err := DecodeWAV(in.Data)
	if err != nil {
		return nil, t0, t0, t0, fmt.Errorf("%s: %w", in.Name, err)
	}
	t1 = time.Now()
	if len(a.Samples) == 0 {
		return nil, t0, t0, t0, fmt.Errorf("%s: %w: wav has no samples (an empty recording)", in.Name, ErrBadInput)
	}
	samples = a.Samples
	if a.SampleRate != rate {
		samples = Resample(samples, a.SampleRate, rate)
	}
	return samples, t0, t1, time.Now(), nil
}

func (p *vadPipeline) Infer(ctx context.Context, in Input) (*Result, error) {
	samples, t0, t1, t2, err := decodeAudio(in, p.v.rate)
	if err != nil {
		return nil, err
	}
	probs, err := p.v.Probabilities(ctx, samples)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.Name, err)
	}
	t3 := time.Now()
	out := Segments(probs, p.v.chunk, p.v.rate, len(samples), p.v.opts)
	t4 := time.Now()
	return &Result{
		Model: p.m.Name, Version: p.m.Version, Task: p.m.Task, Input: in.Name, Output: out,
		Timings: Timings{Decode: ms(t1.Sub(t0)), Preprocess: ms(t2.Sub(t1)), Inference: ms(t3.Sub(t2)),
			Postprocess: ms(t4.Sub(t3)), Total: ms(t4.Sub(t0))},
	}, nil
}
