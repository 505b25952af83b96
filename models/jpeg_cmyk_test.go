//go:build cgo

package models

import (
	"image/color"
	"testing"
)

// TestDecodeImage_CMYK (issue 25 regression): CMYK JPEGs decoded before
// libjpeg-turbo and were then refused with "Unsupported color conversion
// request". A green leaf written as inverted CMYK comes back green.
func TestDecodeImage_CMYK(t *testing.T) {
	const w, h = 64, 48
	cmyk := make([]byte, 4*w*h)
	for i := 0; i < w*h; i++ {
		// RGB (40, 160, 60) as inverted CMYK (libjpeg-turbo's rgb_to_cmyk): K = max(R,G,B).
		cmyk[4*i], cmyk[4*i+1], cmyk[4*i+2], cmyk[4*i+3] = 64, 255, 96, 160
	}
	b, err := encodeCMYKJPEG(cmyk, w, h)
	if err != nil {
		t.Fatal(err)
	}
	img, err := DecodeImageScaled(b, 0, 0)
	if err != nil {
		t.Fatalf("CMYK JPEG refused: %v", err)
	}
	c := color.RGBAModel.Convert(img.At(w/2, h/2)).(color.RGBA)
	if d := func(a, b uint8) int { x := int(a) - int(b); return x * x }; d(c.R, 40)+d(c.G, 160)+d(c.B, 60) > 3*12*12 {
		t.Fatalf("CMYK leaf decoded as %v, want about (40, 160, 60)", c)
	}
}
