package models

import (
	"math"
	"math/cmplx"
	gosync "sync"
)

// Log-mel features for keyword spotting: 40 mel bins (20–7600 Hz, HTK
// scale, triangular filters), 25 ms periodic-Hann windows every 10 ms, 512-
// point FFT, log(power + 1e-6). models/kws/mel.py is the reference the
// model was trained with; TestLogMel_MatchesReference keeps the two equal.
const (
	melRate  = 16000
	melFFT   = 512
	melWin   = 400
	melHop   = 160
	MelBins  = 40
	melFMin  = 20.0
	melFMaxH = 7600.0
)

var (
	melOnce   gosync.Once
	melFB     []melBand // triangular filters, stored sparse
	melWindow []float64
	fftTw     []complex128
)

func melInit() {
	melOnce.Do(func() {
		hzToMel := func(f float64) float64 { return 2595 * math.Log10(1+f/700) }
		melToHz := func(m float64) float64 { return 700 * (math.Pow(10, m/2595) - 1) }
		lo, hi := hzToMel(melFMin), hzToMel(melFMaxH)
		hz := make([]float64, MelBins+2)
		for i := range hz {
			hz[i] = melToHz(lo + (hi-lo)*float64(i)/float64(MelBins+1))
		}
		melFB = make([]melBand, MelBins)
		for m := range melFB {
			band := melBand{first: -1}
			for k := 0; k <= melFFT/2; k++ {
				f := float64(k) * melRate / melFFT
				up := (f - hz[m]) / (hz[m+1] - hz[m])
				down := (hz[m+2] - f) / (hz[m+2] - hz[m+1])
				if w := math.Max(0, math.Min(up, down)); w > 0 {
					if band.first < 0 {
						band.first = k
					}
					// Weights are contiguous: pad any interior zero.
					for len(band.w) < k-band.first {
						band.w = append(band.w, 0)
					}
					band.w = append(band.w, w)
				}
			}
			melFB[m] = band
		}
		melWindow = make([]float64, melWin)
		for i := range melWindow {
			melWindow[i] = 0.5 - 0.5*math.Cos(2*math.Pi*float64(i)/melWin)
		}
		fftTw = make([]complex128, melFFT/2)
		for i := range fftTw {
			fftTw[i] = cmplx.Exp(complex(0, -2*math.Pi*float64(i)/melFFT))
		}
	})
}

// melBand is one filter's non-zero weights, starting at FFT bin first.
type melBand struct {
	first int
	w     []float64
}

// fft512 is an in-place iterative radix-2 FFT of length 512.
func fft512(a []complex128) {
	n := len(a)
	for i, j := 1, 0; i < n; i++ {
		bit := n >> 1
		for ; j&bit != 0; bit >>= 1 {
			j ^= bit
		}
		j ^= bit
		if i < j {
			a[i], a[j] = a[j], a[i]
		}
	}
	for size := 2; size <= n; size <<= 1 {
		step := n / size
		for start := 0; start < n; start += size {
			for k := 0; k < size/2; k++ {
				w := fftTw[k*step]
				u, v := a[start+k], a[start+k+size/2]*w
				a[start+k], a[start+k+size/2] = u+v, u-v
			}
		}
	}
}

// LogMel returns [frames][MelBins] features of 16 kHz samples, frames =
// 1 + (len − 400)/160 (0 if shorter than one window), row-major in one slice.
func LogMel(x []float32) (feats []float32, frames int) {
	melInit()
	if len(x) < melWin {
		return nil, 0
	}
	frames = 1 + (len(x)-melWin)/melHop
	feats = make([]float32, frames*MelBins)
	buf := make([]complex128, melFFT)
	power := make([]float64, melFFT/2+1)
	for f := 0; f < frames; f++ {
		clear(buf)
		for i := 0; i < melWin; i++ {
			buf[i] = complex(float64(x[f*melHop+i])*melWindow[i], 0)
		}
		fft512(buf)
		for k := range power {
			re, im := real(buf[k]), imag(buf[k])
			power[k] = re*re + im*im
		}
		for m, band := range melFB {
			var s float64
			if band.first >= 0 {
				for i, w := range band.w {
					s += w * power[band.first+i]
				}
			}
			feats[f*MelBins+m] = float32(math.Log(s + 1e-6))
		}
	}
	return feats, frames
}
