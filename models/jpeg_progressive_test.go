//go:build cgo

package models

import (
	"image"
	"runtime"
	"testing"
)

// TestDecodeImage_ProgressiveScaled (issue 31): a progressive phone photo
// (most camera files in one wallpaper package are) is decoded scaled in
// the DCT domain like a baseline one, up to 50 MP: a 17.9 MP one was
// refused ("outside 1 to 16000000 pixels"). Its cost counts the
// coefficients libjpeg keeps, and the Go heap holds only the small image.
func TestDecodeImage_ProgressiveScaled(t *testing.T) {
	const w, h = 5640, 3172 // the size of the wallpaper that was refused
	src := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			o := src.PixOffset(x, y)
			src.Pix[o], src.Pix[o+1], src.Pix[o+2], src.Pix[o+3] = uint8(x/22), uint8(90+(x+y)%60), uint8(y/13), 255
		}
	}
	b, err := encodeProgressiveJPEG(src)
	if err != nil {
		t.Fatal(err)
	}
	src = nil
	if !jpegProgressive(b) {
		t.Fatal("not progressive")
	}
	cost, err := ImageDecodeCost(b, 224, 224)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	img, err := DecodeImageScaled(b, 224, 224)
	if err != nil {
		t.Fatalf("a 17.9 MP progressive photo: %v", err)
	}
	runtime.ReadMemStats(&after)
	if got := img.Bounds().Size(); got != image.Pt(1410, 793) {
		t.Fatalf("decoded at %v, want 1410x793 (1/4: at least twice the model on each side)", got)
	}
	heap := after.TotalAlloc - before.TotalAlloc
	t.Logf("17.9 MP progressive: decoded at 1/4 (1410x793); Go heap %.1f MB; planned cost %.0f MB (libjpeg's coefficients included)", float64(heap)/1e6, float64(cost)/1e6)
	if heap > 8<<20 {
		t.Errorf("the Go heap took %d bytes for a 1410x793 image", heap)
	}
	if cost < 3*w*h {
		t.Errorf("cost %d does not count the %d bytes of coefficients", cost, 3*w*h)
	}
}
