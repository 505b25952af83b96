package models

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// TestLogMel_MatchesReference compares the Go frontend with the numpy one the
// keyword model was trained with (models/kws/mel.py), on the same chirp.
func TestLogMel_MatchesReference(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("kws", "mel_reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct{ Features [][]float64 }
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 4000)
	for n := range x {
		tt := float64(n) / 16000
		x[n] = float32(0.5 * math.Sin(2*math.Pi*(200*tt+6000*tt*tt)))
	}
	got, frames := LogMel(x)
	if frames != len(ref.Features) {
		t.Fatalf("%d frames, reference %d", frames, len(ref.Features))
	}
	var maxd float64
	for f := range ref.Features {
		for m, want := range ref.Features[f] {
			maxd = math.Max(maxd, math.Abs(float64(got[f*MelBins+m])-want))
		}
	}
	// float32 input vs float64 reference; log of tiny energies amplifies
	// rounding, so compare in log units with a small absolute tolerance.
	if maxd > 2e-3 {
		t.Fatalf("max difference from reference %.6f", maxd)
	}
	t.Logf("%d frames x %d bins, max |Go - numpy| = %.2g", frames, MelBins, maxd)
}

func TestFFT512_Impulse(t *testing.T) {
	melInit()
	a := make([]complex128, 512)
	a[1] = 1
	fft512(a)
	for k, v := range a {
		want := math.Cos(-2 * math.Pi * float64(k) / 512)
		if math.Abs(real(v)-want) > 1e-9 {
			t.Fatalf("bin %d: %v, want %v", k, real(v), want)
		}
	}
}
