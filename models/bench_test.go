package models_test

import (
	"context"
	"math"
	"testing"

	"github.com/outpost-edge/outpost/models"
)

// BenchmarkVADPipeline runs 10 s of 44.1 kHz audio (decode, resample to
// 16 kHz, 313 Silero chunks, segmentation) and reports the real-time factor:
// seconds of processing per second of audio (lower is better; a Pi 4 needs
// this well under 1 to keep up with a microphone). The share spent outside
// ORT is the Go pipeline's overhead.
func BenchmarkVADPipeline(b *testing.B) {
	p, _ := sileroPipelineB(b)
	const rate, secs = 44100, 10
	x := make([]float32, rate*secs)
	for i := range x {
		x[i] = float32(0.3 * math.Sin(2*math.Pi*220*float64(i)/rate) * math.Sin(2*math.Pi*0.5*float64(i)/rate))
	}
	wav := models.EncodeWAV(x, rate)
	var infer, total float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := p.Infer(context.Background(), models.Input{Name: "bench.wav", Data: wav})
		if err != nil {
			b.Fatal(err)
		}
		infer += r.Timings.Inference
		total += r.Timings.Total
	}
	b.ReportMetric(total/float64(b.N)/1000/secs, "rtf")
	b.ReportMetric((total-infer)/total, "non-ort-share")
}
