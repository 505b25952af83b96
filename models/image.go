package models

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	_ "image/jpeg" // registered decoders: the formats the kiosk and watch folder accept
	_ "image/png"

	"golang.org/x/image/draw"

	"github.com/outpost-edge/outpost/runtime"
)

// MaxImagePixels bounds a decoded image (width × height). A 12 MP phone
// photo is fine; a decompression bomb declaring 50,000 × 50,000 is refused
// before any pixel is allocated.
const MaxImagePixels = 40_000_000

// DecodeImage decodes a JPEG or PNG, refusing oversized images from their
// header alone, and applies the JPEG's EXIF orientation so a phone photo
// taken in portrait is seen upright.
func DecodeImage(b []byte) (image.Image, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %v (want JPEG or PNG)", ErrBadInput, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > MaxImagePixels {
		return nil, fmt.Errorf("%w: image: %dx%d %s is outside 1 to %d pixels", ErrBadInput, cfg.Width, cfg.Height, format, MaxImagePixels)
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: image: %s: %v", ErrBadInput, format, err)
	}
	if format == "jpeg" {
		img = orient(img, exifOrientation(b))
	}
	return img, nil
}

// exifOrientation returns the EXIF Orientation (1–8) of a JPEG, or 1. It
// reads only the APP1 segment's first IFD and never panics on bad data.
func exifOrientation(b []byte) int {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return 1
	}
	p := 2
	for p+4 <= len(b) {
		if b[p] != 0xFF {
			return 1
		}
		marker := b[p+1]
		if marker == 0xDA || marker == 0xD9 { // start of scan / end: no EXIF before the image data
			return 1
		}
		size := int(binary.BigEndian.Uint16(b[p+2:]))
		if size < 2 || p+2+size > len(b) {
			return 1
		}
		seg := b[p+4 : p+2+size]
		if marker == 0xE1 && len(seg) > 14 && string(seg[:6]) == "Exif\x00\x00" {
			return tiffOrientation(seg[6:])
		}
		p += 2 + size
	}
	return 1
}

func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 1
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 1
	}
	ifd := int(bo.Uint32(t[4:]))
	if ifd < 8 || ifd+2 > len(t) {
		return 1
	}
	n := int(bo.Uint16(t[ifd:]))
	for i := 0; i < n; i++ {
		e := ifd + 2 + 12*i
		if e+12 > len(t) {
			return 1
		}
		if bo.Uint16(t[e:]) == 0x0112 {
			if v := int(bo.Uint16(t[e+8:])); v >= 1 && v <= 8 {
				return v
			}
			return 1
		}
	}
	return 1
}

// orient rotates/flips img so EXIF orientation o becomes upright.
func orient(img image.Image, o int) image.Image {
	if o <= 1 || o > 8 {
		return img
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	ow, oh := w, h
	if o >= 5 {
		ow, oh = h, w
	}
	dst := image.NewRGBA(image.Rect(0, 0, ow, oh))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var dx, dy int
			switch o {
			case 2:
				dx, dy = w-1-x, y
			case 3:
				dx, dy = w-1-x, h-1-y
			case 4:
				dx, dy = x, h-1-y
			case 5:
				dx, dy = y, x
			case 6:
				dx, dy = h-1-y, x
			case 7:
				dx, dy = h-1-y, w-1-x
			case 8:
				dx, dy = y, w-1-x
			}
			dst.Set(dx, dy, img.At(b.Min.X+x, b.Min.Y+y))
		}
	}
	return dst
}

// boxDown averages f×f blocks of src (dropping a partial edge block).
func boxDown(src *image.RGBA, f int) *image.RGBA {
	w, h := src.Bounds().Dx()/f, src.Bounds().Dy()/f
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	area := uint32(f * f)
	acc := make([]uint32, 4*w)
	for y := 0; y < h; y++ {
		clear(acc)
		for sy := y * f; sy < (y+1)*f; sy++ {
			row := src.Pix[sy*src.Stride:]
			for x := 0; x < w; x++ {
				a := acc[4*x : 4*x+4]
				for sx := x * f; sx < (x+1)*f; sx++ {
					p := row[4*sx : 4*sx+4]
					a[0] += uint32(p[0])
					a[1] += uint32(p[1])
					a[2] += uint32(p[2])
					a[3] += uint32(p[3])
				}
			}
		}
		out := dst.Pix[y*dst.Stride:]
		for i, v := range acc {
			out[i] = uint8((v + area/2) / area)
		}
	}
	return dst
}

// ImageTensor center-crops img to the model's aspect ratio, resizes it with
// Catmull-Rom (sharp, no aliasing on downscale), normalises each channel as
// (v/255 − mean)/std and lays it out as NCHW or NHWC with a batch of one.
func ImageTensor(img image.Image, p Preprocessing) (*runtime.Tensor, error) {
	w, h := p.Width, p.Height
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("models: image model needs preprocessing.width and height")
	}
	b := img.Bounds()
	// Largest centred crop with the target aspect.
	cw, ch := b.Dx(), b.Dx()*h/w
	if ch > b.Dy() {
		cw, ch = b.Dy()*w/h, b.Dy()
	}
	origin := image.Pt(b.Min.X+(b.Dx()-cw)/2, b.Min.Y+(b.Dy()-ch)/2)
	crop := image.Rectangle{Min: origin, Max: origin.Add(image.Pt(cw, ch))}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	switch {
	case cw == w && ch == h:
		draw.Draw(dst, dst.Bounds(), img, crop.Min, draw.Src)
	case cw >= 4*w && ch >= 4*h:
		// A phone photo is 40x the model's input or more: Catmull-Rom's
		// kernel grows with the ratio. Average f×f boxes first (exact
		// low-pass, linear time), then Catmull-Rom the last ≤4x.
		f := min(cw/(2*w), ch/(2*h))
		src := image.NewRGBA(image.Rect(0, 0, cw, ch))
		draw.Draw(src, src.Bounds(), img, crop.Min, draw.Src)
		small := boxDown(src, f)
		draw.CatmullRom.Scale(dst, dst.Bounds(), small, small.Bounds(), draw.Src, nil)
	default:
		draw.CatmullRom.Scale(dst, dst.Bounds(), img, crop, draw.Src, nil)
	}
	mean, std := [3]float32{0, 0, 0}, [3]float32{1, 1, 1}
	for c := 0; c < 3; c++ {
		if c < len(p.Mean) {
			mean[c] = p.Mean[c]
		}
		if c < len(p.Std) && p.Std[c] != 0 {
			std[c] = p.Std[c]
		}
	}
	data := make([]float32, 3*w*h)
	nhwc := p.Layout == "NHWC"
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			o := dst.PixOffset(x, y)
			for c := 0; c < 3; c++ {
				v := (float32(dst.Pix[o+c])/255 - mean[c]) / std[c]
				if nhwc {
					data[(y*w+x)*3+c] = v
				} else {
					data[c*w*h+y*w+x] = v
				}
			}
		}
	}
	shape := runtime.Shape{1, 3, int64(h), int64(w)}
	if nhwc {
		shape = runtime.Shape{1, int64(h), int64(w), 3}
	}
	return runtime.NewFloat32(shape, data)
}
