package models

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Audio is decoded mono audio in [-1, 1].
type Audio struct {
	SampleRate int
	Channels   int // in the source file; Samples is always mono
	Samples    []float32
}

// Duration in seconds.
func (a *Audio) Duration() float64 {
	if a.SampleRate == 0 {
		return 0
	}
	return float64(len(a.Samples)) / float64(a.SampleRate)
}

// WAV format tags.
const (
	wavPCM        = 1
	wavFloat      = 3
	wavExtensible = 0xFFFE
)

// MaxWAVChannels bounds the channel count a WAV may declare.
const MaxWAVChannels = 8

// DecodeWAV decodes a RIFF/WAVE file: integer PCM (8, 16, 24, 32 bit) or
// IEEE float (32 bit), plain or WAVE_FORMAT_EXTENSIBLE. Several channels are
// averaged to mono. Every malformed input is an error wrapping ErrBadInput
// that names what was wrong; it never panics (see FuzzDecodeWAV).
func DecodeWAV(b []byte) (*Audio, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: wav: %s", ErrBadInput, fmt.Sprintf(format, a...))
	}
	if len(b) < 12 {
		return nil, bad("file is %d bytes, too short for a RIFF header", len(b))
	}
	if string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return nil, bad("not a RIFF/WAVE file (starts with %q)", b[:min(len(b), 4)])
	}
	var (
		haveFmt             bool
		format, channels    uint16
		rate                uint32
		bits, align         uint16
		data                []byte
		haveData, truncated bool
	)
	for p := 12; p+8 <= len(b); {
		id := string(b[p : p+4])
		size := int64(binary.LittleEndian.Uint32(b[p+4 : p+8]))
		body := int64(p + 8)
		end := body + size
		if end > int64(len(b)) {
			if id != "data" {
				return nil, bad("chunk %q declares %d bytes but only %d remain", id, size, int64(len(b))-body)
			}
			// A recorder killed mid-file leaves a data chunk shorter than its
			// header says; keep what is there, as sox and ffmpeg do.
			end, truncated = int64(len(b)), true
		}
		switch id {
		case "fmt ":
			if size < 16 {
				return nil, bad("fmt chunk is %d bytes, want at least 16", size)
			}
			f := b[body:end]
			format = binary.LittleEndian.Uint16(f[0:2])
			channels = binary.LittleEndian.Uint16(f[2:4])
			rate = binary.LittleEndian.Uint32(f[4:8])
			align = binary.LittleEndian.Uint16(f[12:14])
			bits = binary.LittleEndian.Uint16(f[14:16])
			if format == wavExtensible {
				if size < 40 {
					return nil, bad("extensible fmt chunk is %d bytes, want 40", size)
				}
				format = binary.LittleEndian.Uint16(f[24:26]) // sub-format GUID's first two bytes
			}
			haveFmt = true
		case "data":
			data, haveData = b[body:end], true
		}
		if haveFmt && haveData {
			break
		}
		p = int(end + end&1) // chunks are padded to even sizes
	}
	if !haveFmt {
		return nil, bad("no fmt chunk")
	}
	if !haveData {
		return nil, bad("no data chunk")
	}
	if channels == 0 || channels > MaxWAVChannels {
		return nil, bad("%d channels (want 1 to %d)", channels, MaxWAVChannels)
	}
	if rate < 1000 || rate > 384000 {
		return nil, bad("sample rate %d Hz is out of range (1000 to 384000)", rate)
	}
	bps := int(bits / 8)
	switch {
	case format == wavPCM && (bits == 8 || bits == 16 || bits == 24 || bits == 32):
	case format == wavFloat && bits == 32:
	default:
		return nil, bad("unsupported encoding: format tag %d with %d bits (want PCM 8/16/24/32 or float 32)", format, bits)
	}
	if int(align) != bps*int(channels) {
		return nil, bad("block align %d does not match %d channels × %d bytes", align, channels, bps)
	}
	frame := bps * int(channels)
	n := len(data) / frame
	if n == 0 && !truncated && len(data) > 0 {
		return nil, bad("data chunk of %d bytes holds no whole frame", len(data))
	}
	out := make([]float32, n)
	for i := 0; i < n; i++ {
		var sum float32
		for c := 0; c < int(channels); c++ {
			s := data[i*frame+c*bps:]
			sum += sample(s, format, bits)
		}
		out[i] = sum / float32(channels)
	}
	return &Audio{SampleRate: int(rate), Channels: int(channels), Samples: out}, nil
}

func sample(s []byte, format, bits uint16) float32 {
	if format == wavFloat {
		v := math.Float32frombits(binary.LittleEndian.Uint32(s))
		if v != v || v > 1e6 || v < -1e6 { // NaN or absurd: treat as silence, do not poison the model
			return 0
		}
		return v
	}
	switch bits {
	case 8:
		return (float32(s[0]) - 128) / 128
	case 16:
		return float32(int16(binary.LittleEndian.Uint16(s))) / 32768
	case 24:
		v := int32(uint32(s[0])<<8|uint32(s[1])<<16|uint32(s[2])<<24) >> 8
		return float32(v) / 8388608
	default:
		return float32(int32(binary.LittleEndian.Uint32(s))) / 2147483648
	}
}

// EncodeWAV writes mono float samples as 16-bit PCM WAV (tests, samples, exports).
func EncodeWAV(samples []float32, rate int) []byte {
	n := len(samples) * 2
	b := make([]byte, 44+n)
	copy(b[0:], "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+n))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], wavPCM)
	binary.LittleEndian.PutUint16(b[22:], 1)
	binary.LittleEndian.PutUint32(b[24:], uint32(rate))
	binary.LittleEndian.PutUint32(b[28:], uint32(rate*2))
	binary.LittleEndian.PutUint16(b[32:], 2)
	binary.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(n))
	for i, s := range samples {
		v := math.Round(float64(s) * 32767)
		v = math.Max(-32768, math.Min(32767, v))
		binary.LittleEndian.PutUint16(b[44+2*i:], uint16(int16(v)))
	}
	return b
}

// Resample converts x from rate `from` to rate `to` with a windowed-sinc
// (Blackman) low-pass at the lower Nyquist frequency, so downsampling 44.1
// or 48 kHz recordings to 16 kHz does not fold high frequencies into speech.
// Common rate pairs are rational with a small numerator, so the kernel is
// precomputed once per output phase (polyphase) instead of per sample.
func Resample(x []float32, from, to int) []float32 {
	if from == to || len(x) == 0 {
		return append([]float32(nil), x...)
	}
	const zeros = 16 // zero crossings on each side of the kernel
	g := gcd(from, to)
	up, down := to/g, from/g // output i sits at input position i*down/up
	cutoff := math.Min(1, float64(up)/float64(down))
	half := int(math.Ceil(zeros / cutoff))
	taps := 2 * half
	n := int(int64(len(x)) * int64(up) / int64(down))
	out := make([]float32, n)

	var table []float32 // up phases × taps weights, normalised per phase
	if up <= 4096 {
		table = make([]float32, up*taps)
		for ph := 0; ph < up; ph++ {
			frac := float64(ph) / float64(up)
			var sum float64
			for j := 0; j < taps; j++ {
				d := frac - float64(j-half+1)
				w := cutoff * sinc(cutoff*d) * blackman(d/float64(half))
				table[ph*taps+j] = float32(w)
				sum += w
			}
			for j := 0; j < taps; j++ {
				table[ph*taps+j] /= float32(sum)
			}
		}
	}
	for i := range out {
		pos := int64(i) * int64(down)
		c, ph := int(pos/int64(up)), int(pos%int64(up))
		lo := c - half + 1
		if table != nil && lo >= 0 && c+half < len(x) {
			w := table[ph*taps : ph*taps+taps]
			var acc float32
			for j, xv := range x[lo : lo+taps] {
				acc += w[j] * xv
			}
			out[i] = acc
			continue
		}
		// Edges (and exotic ratios): direct evaluation, renormalised over
		// the taps that exist.
		t := float64(pos) / float64(up)
		var sum, wsum float64
		for k := max(lo, 0); k <= min(c+half, len(x)-1); k++ {
			d := t - float64(k)
			w := cutoff * sinc(cutoff*d) * blackman(d/float64(half))
			sum += w * float64(x[k])
			wsum += w
		}
		if wsum != 0 {
			out[i] = float32(sum / wsum)
		}
	}
	return out
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	return math.Sin(math.Pi*x) / (math.Pi * x)
}

// blackman window over u in [-1, 1].
func blackman(u float64) float64 {
	if u <= -1 || u >= 1 {
		return 0
	}
	a := math.Pi * (u + 1)
	return 0.42 - 0.5*math.Cos(a) + 0.08*math.Cos(2*a)
}
