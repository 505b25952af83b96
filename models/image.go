package models

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	_ "image/jpeg" // DecodeConfig for JPEG headers; decoding goes through jpegDecode
	_ "image/png"
	gosync "sync"

	"golang.org/x/image/draw"

	"github.com/outpost-edge/outpost/runtime"
)

// Image limits, checked from the header before any pixel is allocated.
// JPEGs are decoded at reduced scale in the DCT domain (libjpeg-turbo), so
// a 48–50 MP phone photo costs the memory of a small image. A progressive
// JPEG is scaled too, but libjpeg keeps every DCT coefficient of the whole
// image until the last scan (about 3 bytes a pixel at 4:2:0): its cost says
// so, and a decode budget refuses what it cannot hold. PNGs are decoded at
// full size, so they are capped lower.
const (
	MaxImagePixels       = 64_000_000 // JPEG, baseline: today's 48–50 MP phone photos fit
	MaxProgressivePixels = 50_000_000 // progressive JPEG: ~150 MB of coefficients at the cap
	MaxPNGPixels         = 12_000_000 // PNG: decoded at full size by image/png
)

// DecodeImage decodes a JPEG or PNG at full size, refusing oversized
// images from their header alone, and applies the JPEG's EXIF orientation
// so a phone photo taken in portrait is seen upright.
func DecodeImage(b []byte) (image.Image, error) { return DecodeImageScaled(b, 0, 0) }

// imagePlan is what decoding b will do and cost, from its header alone.
type imagePlan struct {
	format      string
	w, h        int // declared size
	div         int // JPEG reduction (1, 2, 4, 8)
	progressive bool
	cost        int64 // bytes the decode and the pipeline's copy hold at once
}

func planImage(b []byte, minW, minH int) (imagePlan, error) {
	var cfg image.Config
	format := "jpeg"
	var err error
	if len(b) >= 2 && b[0] == 0xFF && b[1] == 0xD8 {
		// The decoder that will decode it reads the header too.
		cfg.Width, cfg.Height, err = jpegHeader(b)
	} else {
		cfg, format, err = image.DecodeConfig(bytes.NewReader(b))
	}
	if err != nil {
		return imagePlan{}, fmt.Errorf("%w: %v (want JPEG or PNG)", ErrBadInput, err)
	}
	p := imagePlan{format: format, w: cfg.Width, h: cfg.Height, div: 1}
	limit := MaxImagePixels
	switch format {
	case "png":
		limit = MaxPNGPixels
	case "jpeg":
		if p.progressive = jpegProgressive(b); p.progressive {
			limit = MaxProgressivePixels
		}
	}
	if p.w <= 0 || p.h <= 0 || int64(p.w)*int64(p.h) > int64(limit) {
		return p, fmt.Errorf("%w: image: %dx%d %s is outside 1 to %d pixels", ErrBadInput, p.w, p.h, format, limit)
	}
	sw, sh := p.w, p.h
	if format == "jpeg" {
		// Keep at least twice the model's input on each side: the
		// pipeline's box filter then Catmull-Rom does the rest.
		p.div = jpegScale(p.w, p.h, 2*minW, 2*minH)
		sw, sh = (p.w+p.div-1)/p.div, (p.h+p.div-1)/p.div
	}
	p.cost = 2 * 4 * int64(sw) * int64(sh) // decoded RGBA + the pipeline's crop copy
	if p.progressive {
		p.cost += 2 * 3 * int64(p.w) * int64(p.h) / 2 // whole-image coefficients (4:2:0)
	}
	if format == "png" {
		p.cost += 4 * int64(p.w) * int64(p.h) // image/png's own buffer before conversion
	}
	return p, nil
}

// ImageDecodeCost is the memory decoding b for a minW × minH model holds,
// from its header alone (for a decode budget across concurrent requests).
func ImageDecodeCost(b []byte, minW, minH int) (int64, error) {
	p, err := planImage(b, minW, minH)
	return p.cost, err
}

// DecodeImageScaled decodes like DecodeImage but may reduce a JPEG by 1/2,
// 1/4 or 1/8 while decoding, as long as it stays at least twice minW ×
// minH (0, 0: full size).
func DecodeImageScaled(b []byte, minW, minH int) (image.Image, error) {
	p, err := planImage(b, minW, minH)
	if err != nil {
		return nil, err
	}
	var img image.Image
	if p.format == "jpeg" {
		rgba, err := decodeJPEG(b, p.div)
		if err != nil {
			return nil, fmt.Errorf("%w: image: jpeg: %v", ErrBadInput, err)
		}
		return orient(rgba, exifOrientation(b)), nil
	}
	img, _, err = image.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: image: %s: %v", ErrBadInput, p.format, err)
	}
	return img, nil
}

// jpegProgressive reports whether a JPEG's frame is progressive (SOF2),
// walking its markers only; bad data reads as baseline.
func jpegProgressive(b []byte) bool {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return false
	}
	for p := 2; p+4 <= len(b); {
		if b[p] != 0xFF {
			return false
		}
		marker := b[p+1]
		switch {
		case marker == 0xFF:
			p++ // fill byte
			continue
		case marker == 0xC2 || marker == 0xC6 || marker == 0xCA || marker == 0xCE:
			return true
		case marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC:
			return false // another SOF: not progressive
		case marker == 0xDA || marker == 0xD9:
			return false
		}
		size := int(binary.BigEndian.Uint16(b[p+2:]))
		if size < 2 {
			return false
		}
		p += 2 + size
	}
	return false
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

// scalers keeps Catmull-Rom scalers by size. A device's camera gives the
// same sizes photo after photo, and a kept Scaler reuses its weights and
// its scratch rows; draw.CatmullRom.Scale made both afresh per photo (for
// a 896-row source, 6 MB allocated and zeroed: ~110 µs of each request).
var scalers struct {
	mu    gosync.Mutex
	m     map[[4]int]draw.Scaler
	order [][4]int // oldest first; at most maxScalers
}

const maxScalers = 8

func catmullRom(dw, dh, sw, sh int) draw.Scaler {
	k := [4]int{dw, dh, sw, sh}
	scalers.mu.Lock()
	defer scalers.mu.Unlock()
	if z, ok := scalers.m[k]; ok {
		return z
	}
	if scalers.m == nil {
		scalers.m = map[[4]int]draw.Scaler{}
	}
	if len(scalers.order) == maxScalers {
		delete(scalers.m, scalers.order[0])
		scalers.order = scalers.order[1:]
	}
	z := draw.CatmullRom.NewScaler(dw, dh, sw, sh)
	scalers.m[k], scalers.order = z, append(scalers.order, k)
	return z
}

// ImageTensor center-crops img to the model's aspect ratio, resizes it with
// Catmull-Rom (sharp, no aliasing on downscale), normalises each channel as
// (v/255 − mean)/std and lays it out as NCHW or NHWC with a batch of one.
func ImageTensor(img image.Image, p Preprocessing) (*runtime.Tensor, error) {
	shape, err := imageShape(p)
	if err != nil {
		return nil, err
	}
	data := getF32(3 * p.Width * p.Height) // every value written by imageInto
	imageInto(img, p, data)
	return runtime.NewFloat32(shape, data)
}

// imageShape is the tensor shape ImageTensor makes for p.
func imageShape(p Preprocessing) (runtime.Shape, error) {
	w, h := p.Width, p.Height
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("models: image model needs preprocessing.width and height")
	}
	if p.Layout == "NHWC" {
		return runtime.Shape{1, int64(h), int64(w), 3}, nil
	}
	return runtime.Shape{1, 3, int64(h), int64(w)}, nil
}

// imageInto is ImageTensor writing into data (3·width·height values, every
// one written): the classifier's bound input, which the model reads in
// place.
func imageInto(img image.Image, p Preprocessing, data []float32) {
	w, h := p.Width, p.Height
	b := img.Bounds()
	// Largest centred crop with the target aspect.
	cw, ch := b.Dx(), b.Dx()*h/w
	if ch > b.Dy() {
		cw, ch = b.Dy()*w/h, b.Dy()
	}
	origin := image.Pt(b.Min.X+(b.Dx()-cw)/2, b.Min.Y+(b.Dy()-ch)/2)
	crop := image.Rectangle{Min: origin, Max: origin.Add(image.Pt(cw, ch))}
	dst := getRGBA(image.Rect(0, 0, w, h)) // draw.Src writes every pixel
	defer putRGBA(dst)
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
		catmullRom(w, h, small.Bounds().Dx(), small.Bounds().Dy()).Scale(dst, dst.Bounds(), small, small.Bounds(), draw.Src, nil)
	default:
		catmullRom(w, h, cw, ch).Scale(dst, dst.Bounds(), img, crop, draw.Src, nil)
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
}
