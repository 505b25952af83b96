package models

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
)

// The crop model's input: what a photo is decoded for.
var cropPre = Preprocessing{Width: 224, Height: 224, Mean: []float32{0.5, 0.5, 0.5}, Std: []float32{0.5, 0.5, 0.5}}

// decodeStd is the path before libjpeg-turbo: image/jpeg at full size.
func decodeStd(b []byte) (image.Image, error) {
	img, _, err := image.Decode(bytes.NewReader(b))
	return img, err
}

// TestDecodeRSSChild is run by BenchmarkLargeJPEG in a child process, so
// each decoder's peak RSS is measured alone. It does nothing otherwise.
func TestDecodeRSSChild(t *testing.T) {
	spec := os.Getenv("OUTPOST_RSS_CHILD") // mode:path
	if spec == "" {
		return
	}
	mode, path, _ := strings.Cut(spec, ":")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var img image.Image
	if mode == "std" {
		img, err = decodeStd(b)
	} else {
		img, err = DecodeImageScaled(b, cropPre.Width, cropPre.Height)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ImageTensor(img, cropPre); err != nil {
		t.Fatal(err)
	}
	st, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			fmt.Println("RSS", strings.Fields(l)[1])
		}
	}
}

func childRSS(b *testing.B, mode, path string) int64 {
	cmd := exec.Command(os.Args[0], "-test.run=^TestDecodeRSSChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "OUTPOST_RSS_CHILD="+mode+":"+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("child %s: %v\n%s", mode, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f, ok := strings.CutPrefix(l, "RSS "); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
			return kb << 10
		}
	}
	b.Fatalf("child printed no RSS:\n%s", out)
	return 0
}

// BenchmarkLargeJPEG: a 12 MP and a 48 MP phone JPEG to the crop model's
// input tensor, image/jpeg at full size (the baseline, before) against
// libjpeg-turbo scaled in the DCT domain (after): time per photo and each
// path's peak RSS in a child process, with the ratio after/before.
func BenchmarkLargeJPEG(b *testing.B) {
	for _, sz := range []struct{ w, h int }{{4000, 3000}, {8000, 6000}} {
		photo := testutil.BigJPEG(b, sz.w, sz.h)
		path := b.TempDir() + "/photo.jpg"
		os.WriteFile(path, photo, 0o644)
		name := fmt.Sprintf("%dMP", sz.w*sz.h/1_000_000)
		b.Run(name, func(b *testing.B) {
			timeOf := func(dec func([]byte) (image.Image, error)) time.Duration {
				t0 := time.Now()
				for i := 0; i < b.N; i++ {
					img, err := dec(photo)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := ImageTensor(img, cropPre); err != nil {
						b.Fatal(err)
					}
				}
				return time.Since(t0) / time.Duration(b.N)
			}
			before := timeOf(decodeStd)
			after := timeOf(func(p []byte) (image.Image, error) { return DecodeImageScaled(p, cropPre.Width, cropPre.Height) })
			rb, ra := childRSS(b, "std", path), childRSS(b, "turbo", path)
			b.ReportMetric(float64(after.Milliseconds()), "ms/photo")
			b.ReportMetric(float64(after)/float64(before), "time_ratio")
			b.ReportMetric(float64(ra)/float64(rb), "rss_ratio")
			b.Logf("%s (%d KB): image/jpeg full size %v, peak RSS %d MiB; %s %v, peak RSS %d MiB",
				name, len(photo)>>10, before.Round(time.Millisecond), rb>>20, jpegDecoder, after.Round(time.Millisecond), ra>>20)
		})
	}
}

func TestDecodeImage_ScaledAndLimits(t *testing.T) {
	photo := testutil.BigJPEG(t, 4000, 3000)
	img, err := DecodeImageScaled(photo, 224, 224)
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds().Size(); got != image.Pt(1000, 750) {
		// 1/8 would leave 375 rows, under twice the model's 224: 1/4 it is.
		t.Fatalf("12 MP for a 224 model decoded at %v, want 1000x750 (1/4 scale)", got)
	}
	// A progressive JPEG header over 50 MP is refused from its header.
	sof2 := []byte{0xFF, 0xD8, 0xFF, 0xC2, 0x00, 0x11, 0x08, 0x17, 0x70, 0x27, 0x10, 0x03,
		0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, // 10000x6000
		0xFF, 0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00, 0x00, 0x00, 0xFF, 0xD9}
	if !jpegProgressive(sof2) {
		t.Fatal("SOF2 not seen as progressive")
	}
	if _, err := DecodeImageScaled(sof2, 224, 224); !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), "50000000") {
		t.Fatalf("progressive 60 MP: %v", err)
	}
	if jpegProgressive(photo) {
		t.Fatal("baseline JPEG seen as progressive")
	}
	// A decode budget smaller than one image's need refuses it clearly.
	cost, err := ImageDecodeCost(photo, 224, 224)
	if err != nil || cost != 2*4*1000*750 {
		t.Fatalf("cost %d, %v", cost, err)
	}
	if err := NewDecodeBudget(1<<20).acquire(context.Background(), cost); !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), "decode budget") {
		t.Fatalf("over budget: %v", err)
	}
}

func FuzzDecodeImage(f *testing.F) {
	f.Add(testutil.BigJPEG(f, 64, 48))
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xC2, 0x00, 0x11, 0x08, 0x00, 0x10, 0x00, 0x10, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xD9})
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := DecodeImageScaled(b, 16, 16)
		if err != nil {
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("unwrapped error: %v", err)
			}
			return
		}
		if s := img.Bounds().Size(); s.X <= 0 || s.Y <= 0 {
			t.Fatalf("empty image %v", s)
		}
	})
}
