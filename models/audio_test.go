package models

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
)

func sine(freq float64, rate, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(0.5 * math.Sin(2*math.Pi*freq*float64(i)/float64(rate)))
	}
	return x
}

// wav builds a WAV with an arbitrary fmt, for decoder tests.
func wav(format, channels uint16, rate uint32, bits uint16, data []byte) []byte {
	align := channels * bits / 8
	b := []byte("RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00")
	b = binary.LittleEndian.AppendUint16(b, format)
	b = binary.LittleEndian.AppendUint16(b, channels)
	b = binary.LittleEndian.AppendUint32(b, rate)
	b = binary.LittleEndian.AppendUint32(b, rate*uint32(align))
	b = binary.LittleEndian.AppendUint16(b, align)
	b = binary.LittleEndian.AppendUint16(b, bits)
	b = append(b, "LIST\x04\x00\x00\x00INFO"...) // an unrelated chunk to skip
	b = append(b, "data"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
	return b
}

func TestDecodeWAV_Formats(t *testing.T) {
	f32 := binary.LittleEndian.AppendUint32(nil, math.Float32bits(0.25))
	f32 = binary.LittleEndian.AppendUint32(f32, math.Float32bits(-0.75))
	tests := []struct {
		name string
		in   []byte
		want []float32
		ch   int
	}{
		{"pcm16", wav(1, 1, 16000, 16, []byte{0x00, 0x40, 0x00, 0xC0}), []float32{0.5, -0.5}, 1},
		{"pcm8", wav(1, 1, 8000, 8, []byte{192, 64}), []float32{0.5, -0.5}, 1},
		{"pcm24", wav(1, 1, 16000, 24, []byte{0, 0, 0x40}), []float32{0.5}, 1},
		{"pcm32", wav(1, 1, 16000, 32, []byte{0, 0, 0, 0x40}), []float32{0.5}, 1},
		{"float32", wav(3, 1, 16000, 32, f32), []float32{0.25, -0.75}, 1},
		{"stereo averaged", wav(3, 2, 16000, 32, f32), []float32{-0.25}, 2},
		{"truncated data kept", wav(1, 1, 16000, 16, []byte{0x00, 0x40, 0x00, 0xC0})[:58], []float32{0.5}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := DecodeWAV(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if a.Channels != tt.ch || len(a.Samples) != len(tt.want) {
				t.Fatalf("got %d ch %v", a.Channels, a.Samples)
			}
			for i := range tt.want {
				if math.Abs(float64(a.Samples[i]-tt.want[i])) > 1e-6 {
					t.Fatalf("samples = %v, want %v", a.Samples, tt.want)
				}
			}
		})
	}
}

func TestDecodeWAV_Bad(t *testing.T) {
	good := EncodeWAV(sine(440, 16000, 100), 16000)
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"random", []byte("this is not audio at all, just words"), "not a RIFF/WAVE"},
		{"header only", good[:12], "no fmt chunk"},
		{"no data", good[:36], "no data chunk"},
		{"cut fmt", good[:30], `chunk "fmt " declares 16 bytes`},
		{"mp3 tag", wav(85, 1, 16000, 16, []byte{1, 2}), "format tag 85"},
		{"zero channels", wav(1, 0, 16000, 16, []byte{1, 2}), "0 channels"},
		{"absurd rate", wav(1, 1, 5, 16, []byte{1, 2}), "sample rate 5 Hz"},
		{"odd bits", wav(1, 1, 16000, 12, []byte{1, 2}), "12 bits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeWAV(tt.in)
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrBadInput containing %q", err, tt.want)
			}
		})
	}
}

func TestEncodeWAV_RoundTrip(t *testing.T) {
	x := sine(300, 16000, 1000)
	a, err := DecodeWAV(EncodeWAV(x, 16000))
	if err != nil || a.SampleRate != 16000 || len(a.Samples) != len(x) {
		t.Fatalf("a=%v err=%v", a, err)
	}
	for i := range x {
		if math.Abs(float64(a.Samples[i]-x[i])) > 1.0/16000 {
			t.Fatalf("sample %d: %v vs %v", i, a.Samples[i], x[i])
		}
	}
}

func FuzzDecodeWAV(f *testing.F) {
	f.Add(EncodeWAV(sine(440, 16000, 64), 16000))
	f.Add(wav(3, 2, 48000, 32, make([]byte, 16)))
	f.Add(wav(0xFFFE, 1, 16000, 16, nil))
	f.Add([]byte("RIFF\xff\xff\xff\xffWAVEdata\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeWAV(b)
		if err != nil {
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("error does not wrap ErrBadInput: %v", err)
			}
			return
		}
		if len(a.Samples) > len(b) {
			t.Fatalf("%d samples from %d bytes", len(a.Samples), len(b))
		}
		for _, s := range a.Samples {
			if s != s || s > 1e6 || s < -1e6 {
				t.Fatalf("sample out of range: %v", s)
			}
		}
	})
}

// power of x at freq (Goertzel), for checking what resampling keeps and removes.
func power(x []float32, freq float64, rate int) float64 {
	w := 2 * math.Pi * freq / float64(rate)
	var s1, s2 float64
	for _, v := range x {
		s1, s2 = float64(v)+2*math.Cos(w)*s1-s2, s1
	}
	return (s1*s1 + s2*s2 - 2*math.Cos(w)*s1*s2) / float64(len(x)*len(x))
}

func TestResample(t *testing.T) {
	for _, from := range []int{8000, 22050, 44100, 48000} {
		x := sine(1000, from, from) // 1 s of 1 kHz
		y := Resample(x, from, 16000)
		if len(y) != 16000 {
			t.Fatalf("%d Hz: %d samples, want 16000", from, len(y))
		}
		// 1 kHz survives at the same amplitude (power of 0.5 sine = 0.0625).
		if p := power(y[1000:15000], 1000, 16000); math.Abs(p-0.0625) > 0.005 {
			t.Errorf("%d Hz: 1 kHz power %.4f, want 0.0625", from, p)
		}
	}
	// 11 kHz is above the new Nyquist (8 kHz): it must be filtered, not folded to 5 kHz.
	y := Resample(sine(11000, 48000, 48000), 48000, 16000)
	if p := power(y[1000:15000], 5000, 16000); p > 0.0625*0.01 {
		t.Errorf("alias of 11 kHz at 5 kHz has power %.5f, want < 1%% of the tone", p)
	}
}
