package models

import (
	"testing"
	"time"
)

func TestSegments(t *testing.T) {
	o := VADOptions{Threshold: 0.5, NegThreshold: 0.35, MinSpeech: Duration(250 * time.Millisecond),
		MinSilence: Duration(100 * time.Millisecond), SpeechPad: Duration(30 * time.Millisecond)}
	rep := func(p float32, n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = p
		}
		return s
	}
	cat := func(parts ...[]float32) (out []float32) {
		for _, p := range parts {
			out = append(out, p...)
		}
		return
	}
	const chunk, rate = 512, 16000 // 32 ms chunks
	tests := []struct {
		name  string
		probs []float32
		want  [][2]float64
	}{
		{"silence", rep(0.01, 50), nil},
		{"one", cat(rep(0, 31), rep(0.9, 31), rep(0, 31)), [][2]float64{{0.962, 2.014}}},
		{"too short", cat(rep(0, 10), rep(0.9, 5), rep(0, 10)), nil},
		// a dip to 0.4 (between the thresholds) does not end speech: hysteresis
		{"hysteresis", cat(rep(0, 10), rep(0.9, 10), rep(0.4, 10), rep(0.9, 10), rep(0, 10)), [][2]float64{{0.29, 1.310}}},
		// a 64 ms gap is shorter than min_silence: one segment
		{"short gap", cat(rep(0, 10), rep(0.9, 10), rep(0.1, 2), rep(0.9, 10), rep(0, 10)), [][2]float64{{0.29, 1.054}}},
		{"two", cat(rep(0, 10), rep(0.9, 10), rep(0.1, 20), rep(0.9, 10), rep(0, 10)), [][2]float64{{0.29, 0.67}, {1.25, 1.63}}},
		{"until end", cat(rep(0, 10), rep(0.9, 20)), [][2]float64{{0.29, 0.96}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Segments(tt.probs, chunk, rate, len(tt.probs)*chunk, o)
			if len(r.Segments) != len(tt.want) {
				t.Fatalf("segments = %+v, want %v", r.Segments, tt.want)
			}
			for i, w := range tt.want {
				s := r.Segments[i]
				if s.Start != w[0] || s.End != w[1] {
					t.Errorf("segment %d = %.3f–%.3f, want %.3f–%.3f", i, s.Start, s.End, w[0], w[1])
				}
				if s.Probability < 0.5 {
					t.Errorf("segment %d probability %.3f", i, s.Probability)
				}
			}
		})
	}
}
