package models

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

func openEmbedding(t *testing.T) *SpeechEmbedding {
	t.Helper()
	s, err := OpenSpeechEmbedding(filepath.Join(testutil.ModelsDir(t), EmbeddingDir), testutil.ORT(t).Loader(onnx.SessionOptions{}))
	if err != nil {
		t.Fatalf("%v (make deps fetches the speech embedding)", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestSpeechEmbedding_Windowing (issue 28): the frame and window counts
// openWakeWord's AudioFeatures gives — ceil(N/160 − 3) mel frames, one
// embedding per 8 frames once 76 are there — and 96 numbers each.
func TestSpeechEmbedding_Windowing(t *testing.T) {
	s := openEmbedding(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ samples, frames, windows int }{
		{16000, 97, 3}, {32000, 197, 16}, {12000, 72, 0}, {16000 * 3 / 2, 147, 9},
	} {
		pcm := make([]float32, c.samples)
		for i := range pcm {
			pcm[i] = float32(rng.NormFloat64() * 0.05)
		}
		_, frames, err := s.Mel(ctx, pcm)
		if err != nil || frames != c.frames {
			t.Fatalf("%d samples: %d mel frames (%v), openWakeWord gives %d", c.samples, frames, err, c.frames)
		}
		embs, err := s.Embed(ctx, pcm)
		if err != nil || len(embs) != c.windows {
			t.Fatalf("%d samples: %d embeddings (%v), openWakeWord gives %d", c.samples, len(embs), err, c.windows)
		}
		for _, e := range embs {
			if len(e) != EmbeddingDim {
				t.Fatalf("embedding of %d values", len(e))
			}
		}
	}
	if _, err := s.Embed(ctx, make([]float32, 100)); err == nil || !strings.Contains(err.Error(), "100 samples") {
		t.Fatalf("a 100-sample clip: %v", err)
	}
}

// TestSpeechEmbedding_HearsSpeech: the same word from two different voices
// lands closer together than either does to noise of the same loudness —
// what a head trained on synthetic voices relies on to hear a person.
func TestSpeechEmbedding_HearsSpeech(t *testing.T) {
	s := openEmbedding(t)
	ctx := context.Background()
	mean := func(pcm []float32) []float64 {
		embs, err := s.Embed(ctx, pcm)
		if err != nil || len(embs) == 0 {
			t.Fatalf("embed: %d windows, %v", len(embs), err)
		}
		m := make([]float64, EmbeddingDim)
		for _, e := range embs {
			for i, v := range e {
				m[i] += float64(v) / float64(len(embs))
			}
		}
		return m
	}
	clip := func(voice, text string) []float32 {
		b, err := os.ReadFile(testutil.Speak(t, voice, text))
		if err != nil {
			t.Fatal(err)
		}
		a, err := DecodeWAV(b)
		if err != nil {
			t.Fatal(err)
		}
		pcm := Resample(a.Samples, a.SampleRate, 16000)
		return append(pcm, make([]float32, 8000)...) // ≥ 775 ms in all
	}
	a, b := clip("en-us", "outpost"), clip("en-gb-x-rp", "outpost")
	noise := make([]float32, len(a))
	var rms float64
	for _, v := range a {
		rms += float64(v * v)
	}
	rms = math.Sqrt(rms / float64(len(a)))
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range noise {
		noise[i] = float32(rng.NormFloat64() * rms)
	}
	ea, eb, en := mean(a), mean(b), mean(noise)
	same, toNoise := cosine(ea, eb), max(cosine(ea, en), cosine(eb, en))
	t.Logf("cosine: the word by two voices %.3f; either to noise at the same level ≤ %.3f", same, toNoise)
	if same <= toNoise {
		t.Fatalf("the embedding does not tell speech from noise: %.3f vs %.3f", same, toNoise)
	}
}

func cosine(a, b []float64) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += a[i] * b[i]
		aa += a[i] * a[i]
		bb += b[i] * b[i]
	}
	return ab / math.Sqrt(aa*bb)
}
