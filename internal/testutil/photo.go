package testutil

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// BigJPEG returns a w×h phone-sized JPEG (quality 90): a green leaf-like
// field with veins, spots and sensor-like noise, so it compresses like a
// photo rather than a flat test card. It is made once per size and kept in
// the OS temp dir (a 48 MP one takes a few seconds to encode).
func BigJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	path := filepath.Join(os.TempDir(), fmt.Sprintf("outpost-test-%dx%d-v1.jpg", w, h))
	if b, err := os.ReadFile(path); err == nil {
		return b
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(uint64(w), uint64(h)))
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride:]
		for x := 0; x < w; x++ {
			n := uint8(r.IntN(24))
			g := uint8(90 + (x*7/(w/16+1)+y*5/(h/16+1))%60)
			if (x+y)%97 < 3 {
				g += 40 // veins
			}
			if ((x/40)*31+(y/40)*17)%53 == 0 {
				g = 60 // spots
			}
			row[4*x], row[4*x+1], row[4*x+2], row[4*x+3] = 30+n, g+n, 20+n, 255
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err == nil {
		os.Rename(tmp, path)
	}
	return buf.Bytes()
}
