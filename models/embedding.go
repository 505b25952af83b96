package models

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/outpost-edge/outpost/runtime"
)

// The speech embedding of openWakeWord (Apache-2.0): a mel front end and
// Google's speech_embedding network, trained on large amounts of real
// speech. Keyword heads trained on its frozen output hear people, not only
// the synthetic voices they were trained on. make deps fetches both files
// (scripts/deps.sh) into models/speech-embedding.
const (
	EmbeddingDir      = "speech-embedding"
	EmbeddingDim      = 96 // one embedding per window
	embeddingMelBins  = 32
	embeddingWindow   = 76 // mel frames per embedding (775 ms)
	embeddingStep     = 8  // mel frames between embeddings (80 ms)
	embeddingMaxBytes = 16 << 20
)

// SpeechEmbedding runs the two feature models with openWakeWord's own
// windowing (openwakeword/utils.py AudioFeatures._get_embeddings): 16 kHz
// samples as int16-valued floats → mel frames (10 ms hop) → x/10 + 2 →
// windows of 76 frames every 8 → one 96-dim embedding per window.
type SpeechEmbedding struct {
	mel, emb runtime.Session
}

// OpenSpeechEmbedding loads melspectrogram.onnx and embedding_model.onnx
// from dir through load (the runtime seam).
func OpenSpeechEmbedding(dir string, load func([]byte) (runtime.Session, error)) (*SpeechEmbedding, error) {
	open := func(name, input string) (runtime.Session, error) {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("speech embedding: %w (make deps fetches it)", err)
		}
		if fi.Size() > embeddingMaxBytes {
			return nil, fmt.Errorf("speech embedding: %s is %d bytes, more than %d", p, fi.Size(), embeddingMaxBytes)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("speech embedding: %w", err)
		}
		s, err := load(b)
		if err != nil {
			return nil, fmt.Errorf("speech embedding: %s: %w", name, err)
		}
		if !hasInput(s.Inputs(), input) {
			s.Close()
			return nil, fmt.Errorf("speech embedding: %s has no input %q", name, input)
		}
		return s, nil
	}
	mel, err := open("melspectrogram.onnx", "input")
	if err != nil {
		return nil, err
	}
	emb, err := open("embedding_model.onnx", "input_1")
	if err != nil {
		mel.Close()
		return nil, err
	}
	return &SpeechEmbedding{mel: mel, emb: emb}, nil
}

// Close releases both sessions.
func (s *SpeechEmbedding) Close() error {
	return errors.Join(s.mel.Close(), s.emb.Close())
}

// Mel returns the transformed mel frames of 16 kHz samples in [-1, 1]:
// frames × 32 values, row-major.
func (s *SpeechEmbedding) Mel(ctx context.Context, pcm []float32) ([]float32, int, error) {
	if len(pcm) < 400 {
		return nil, 0, fmt.Errorf("speech embedding: %d samples, need at least 400 (25 ms)", len(pcm))
	}
	x := make([]float32, len(pcm))
	for i, v := range pcm {
		x[i] = float32(int16(clamp(v) * 32767)) // the int16 PCM openWakeWord feeds it
	}
	in, err := runtime.NewFloat32(runtime.Shape{1, int64(len(x))}, x)
	if err != nil {
		return nil, 0, err
	}
	out, err := s.mel.Run(ctx, map[string]*runtime.Tensor{"input": in})
	if err != nil {
		return nil, 0, fmt.Errorf("speech embedding: mel: %w", err)
	}
	var spec []float32
	for _, t := range out {
		spec = t.Float32()
	}
	if len(spec)%embeddingMelBins != 0 {
		return nil, 0, fmt.Errorf("speech embedding: mel output of %d values is not frames × %d", len(spec), embeddingMelBins)
	}
	for i, v := range spec {
		spec[i] = v/10 + 2 // openWakeWord's transform toward Google's TF front end
	}
	return spec, len(spec) / embeddingMelBins, nil
}

// Embed returns one embedding per 80 ms window of at least 775 ms of
// audio (none for shorter clips).
func (s *SpeechEmbedding) Embed(ctx context.Context, pcm []float32) ([][]float32, error) {
	spec, frames, err := s.Mel(ctx, pcm)
	if err != nil {
		return nil, err
	}
	n := 0
	if frames >= embeddingWindow {
		n = (frames-embeddingWindow)/embeddingStep + 1
	}
	if n == 0 {
		return nil, nil
	}
	batch := make([]float32, 0, n*embeddingWindow*embeddingMelBins)
	for i := 0; i < n; i++ {
		start := i * embeddingStep * embeddingMelBins
		batch = append(batch, spec[start:start+embeddingWindow*embeddingMelBins]...)
	}
	in, err := runtime.NewFloat32(runtime.Shape{int64(n), embeddingWindow, embeddingMelBins, 1}, batch)
	if err != nil {
		return nil, err
	}
	out, err := s.emb.Run(ctx, map[string]*runtime.Tensor{"input_1": in})
	if err != nil {
		return nil, fmt.Errorf("speech embedding: %w", err)
	}
	var flat []float32
	for _, t := range out {
		flat = t.Float32()
	}
	if len(flat) != n*EmbeddingDim {
		return nil, fmt.Errorf("speech embedding: %d values for %d windows, want %d each", len(flat), n, EmbeddingDim)
	}
	embs := make([][]float32, n)
	for i := range embs {
		embs[i] = flat[i*EmbeddingDim : (i+1)*EmbeddingDim : (i+1)*EmbeddingDim]
	}
	return embs, nil
}

func clamp(v float32) float32 {
	switch {
	case v > 1:
		return 1
	case v < -1:
		return -1
	}
	return v
}
