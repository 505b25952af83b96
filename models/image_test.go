package models

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"strings"
	"testing"

	"golang.org/x/image/draw"
)

// withOrientation splices an EXIF APP1 segment with the given Orientation
// into a JPEG right after SOI.
func withOrientation(jpg []byte, o uint16, order binary.AppendByteOrder) []byte {
	tiff := []byte("II*\x00\x08\x00\x00\x00")
	if order == binary.AppendByteOrder(binary.BigEndian) {
		tiff = []byte("MM\x00*\x00\x00\x00\x08")
	}
	tiff = order.AppendUint16(tiff, 1)      // one IFD entry
	tiff = order.AppendUint16(tiff, 0x0112) // Orientation
	tiff = order.AppendUint16(tiff, 3)      // SHORT
	tiff = order.AppendUint32(tiff, 1)
	tiff = order.AppendUint16(tiff, o)
	tiff = append(tiff, 0, 0, 0, 0, 0, 0)
	seg := append([]byte("Exif\x00\x00"), tiff...)
	app1 := []byte{0xFF, 0xE1}
	app1 = binary.BigEndian.AppendUint16(app1, uint16(len(seg)+2))
	app1 = append(app1, seg...)
	return append(append(append([]byte{}, jpg[:2]...), app1...), jpg[2:]...)
}

// marker is a 40x20 image: red left half, blue right half.
func marker(t *testing.T) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 40, 20))
	for y := 0; y < 20; y++ {
		for x := 0; x < 40; x++ {
			c := color.RGBA{220, 20, 20, 255}
			if x >= 20 {
				c = color.RGBA{20, 20, 220, 255}
			}
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestDecodeImage_EXIFOrientation(t *testing.T) {
	j := marker(t)
	tests := []struct {
		o       uint16
		order   binary.AppendByteOrder
		w, h    int
		redTopL bool // is the top-left pixel red after orientation?
	}{
		{1, binary.LittleEndian, 40, 20, true},
		{3, binary.BigEndian, 40, 20, false},   // rotated 180°: blue half top-left
		{6, binary.LittleEndian, 20, 40, true}, // rotate 90° CW: red half on top
		{8, binary.BigEndian, 20, 40, false},   // rotate 90° CCW: blue half on top
	}
	for _, tt := range tests {
		img, err := DecodeImage(withOrientation(j, tt.o, tt.order))
		if err != nil {
			t.Fatal(err)
		}
		b := img.Bounds()
		r, _, bl, _ := img.At(b.Min.X+2, b.Min.Y+2).RGBA()
		if b.Dx() != tt.w || b.Dy() != tt.h || (r > bl) != tt.redTopL {
			t.Errorf("orientation %d: %dx%d, top-left red=%v", tt.o, b.Dx(), b.Dy(), r > bl)
		}
	}
}

func TestDecodeImage_Bad(t *testing.T) {
	// A PNG header that declares 100000 x 100000 pixels: refused from the header.
	ihdr := binary.BigEndian.AppendUint32(nil, 100000)
	ihdr = binary.BigEndian.AppendUint32(ihdr, 100000)
	ihdr = append(ihdr, 8, 2, 0, 0, 0)
	chunk := append([]byte("IHDR"), ihdr...)
	bomb := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0d"), chunk...)
	bomb = binary.BigEndian.AppendUint32(bomb, crc32.ChecksumIEEE(chunk))
	var good bytes.Buffer
	png.Encode(&good, image.NewRGBA(image.Rect(0, 0, 30, 30)))
	tests := map[string]struct {
		in   []byte
		want string
	}{
		"empty":     {nil, "want JPEG or PNG"},
		"text":      {[]byte("hello, this is not an image"), "want JPEG or PNG"},
		"bomb":      {bomb, "100000x100000"},
		"truncated": {good.Bytes()[:good.Len()/2], "image: png"},
		"wav":       {EncodeWAV(make([]float32, 100), 16000), "want JPEG or PNG"},
	}
	for name, tt := range tests {
		_, err := DecodeImage(tt.in)
		if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want ErrBadInput containing %q", name, err, tt.want)
		}
	}
}

func FuzzEXIFOrientation(f *testing.F) {
	f.Add(withOrientation([]byte{0xFF, 0xD8, 0xFF, 0xD9}, 6, binary.LittleEndian))
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x02})
	f.Fuzz(func(t *testing.T, b []byte) {
		if o := exifOrientation(b); o < 1 || o > 8 {
			t.Fatalf("orientation %d", o)
		}
	})
}

func TestImageTensor_CropResizeLayout(t *testing.T) {
	// 200x100: left quarter black, middle half white, right quarter black.
	// A centre square crop (50..150) is all white.
	img := image.NewRGBA(image.Rect(0, 0, 200, 100))
	for y := 0; y < 100; y++ {
		for x := 50; x < 150; x++ {
			img.Set(x, y, color.White)
		}
	}
	for _, layout := range []string{"NCHW", "NHWC"} {
		tt, err := ImageTensor(img, Preprocessing{Width: 8, Height: 8, Layout: layout, Mean: []float32{0.5, 0.5, 0.5}, Std: []float32{0.25, 0.25, 0.25}})
		if err != nil {
			t.Fatal(err)
		}
		want := "[1 3 8 8]"
		if layout == "NHWC" {
			want = "[1 8 8 3]"
		}
		if tt.Shape.String() != want {
			t.Fatalf("%s shape %s", layout, tt.Shape)
		}
		for i, v := range tt.Float32() {
			if v < 1.99 || v > 2.01 { // (1 - 0.5) / 0.25
				t.Fatalf("%s: element %d = %v, want 2 (white after normalisation)", layout, i, v)
			}
		}
	}
}

func TestSoftmax(t *testing.T) {
	p := Softmax([]float32{1000, 1000, -1000}, 1)
	if p[0] < 0.499 || p[0] > 0.501 || p[2] != 0 {
		t.Fatalf("%v", p)
	}
	sharp, soft := Softmax([]float32{2, 0}, 1), Softmax([]float32{2, 0}, 2)
	if soft[0] >= sharp[0] {
		t.Fatalf("temperature 2 must soften: %v vs %v", soft, sharp)
	}
}

// TestImageTensor_LargePhoto: a 4000x3000 photo takes the box-then-Catmull-Rom
// path and gives nearly the same tensor as direct Catmull-Rom.
func TestImageTensor_LargePhoto(t *testing.T) {
	big := image.NewRGBA(image.Rect(0, 0, 4000, 3000))
	for y := 0; y < 3000; y++ {
		for x := 0; x < 4000; x++ {
			big.Set(x, y, color.RGBA{uint8(x / 16), uint8(y / 12), uint8((x + y) / 28), 255})
		}
	}
	p := Preprocessing{Width: 96, Height: 96}
	fast, err := ImageTensor(big, p)
	if err != nil {
		t.Fatal(err)
	}
	// Reference: Catmull-Rom straight from the 3000x3000 centre crop.
	ref := image.NewRGBA(image.Rect(0, 0, 96, 96))
	draw.CatmullRom.Scale(ref, ref.Bounds(), big, image.Rect(500, 0, 3500, 3000), draw.Src, nil)
	var maxd float32
	for i, v := range fast.Float32() {
		c, y, x := i/(96*96), i/96%96, i%96
		d := v - float32(ref.Pix[ref.PixOffset(x, y)+c])/255
		if d < 0 {
			d = -d
		}
		maxd = max(maxd, d)
	}
	if maxd > 2.0/255 { // two grey levels
		t.Fatalf("two-stage resize differs from direct by %.4f", maxd)
	}
}
