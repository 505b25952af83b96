package models

import (
	"image"
	"math"

	"golang.org/x/image/draw"
)

// The photo quality gate runs before an image classifier: a frame the
// model cannot judge (lens cap, sun in the lens, out of focus, no plant in
// it) gets "retake the photo" with the reason, never a diagnosis. It works
// on the same centre crop the model sees, averaged down to gateSize (never
// enlarged), so it costs well under a millisecond whatever the photo's size.

// Retake reasons (ClassResult.Reason), in the order the gate checks them.
const (
	ReasonTooDark     = "too_dark"
	ReasonTooBright   = "too_bright"
	ReasonLowContrast = "low_contrast"
	ReasonNoPlant     = "no_plant"
	ReasonBlurry      = "blurry"
)

// gateSize is the side of the square the gate measures on.
const gateSize = 128

// Quality is what the gate measured.
type Quality struct {
	Brightness float32 `json:"brightness"` // mean luma, 0 (black) – 1 (white)
	Clipped    float32 `json:"clipped"`    // share of pixels blown out to white (every channel ≥ 245)
	Contrast   float32 `json:"contrast"`   // luma standard deviation, 0 – 0.5
	Sharpness  float32 `json:"sharpness"`  // 1 − Crete's blur effect: ~0.5–0.7 crisp, towards 0 defocused
	Plant      float32 `json:"plant"`      // share of leaf-coloured pixels: green, yellow or brown tissue
	Green      float32 `json:"green"`      // share of green pixels (yellow-green to green-cyan): the cue a refusal needs
}

// QualitySpec is the manifest's "quality" section. Every field is
// optional; a missing one takes the default below, which was measured on
// the crop-disease generator's held-out leaves and on bad frames made from
// them (docs/MODELS.md, "The photo quality gate"). Set a minimum to 0 (or
// a maximum to 1) to switch that check off; "off": true skips the gate.
type QualitySpec struct {
	Off           bool     `json:"off,omitempty"`
	MinBrightness *float32 `json:"min_brightness,omitempty"`
	MaxBrightness *float32 `json:"max_brightness,omitempty"`
	MaxClipped    *float32 `json:"max_clipped,omitempty"`
	MinContrast   *float32 `json:"min_contrast,omitempty"`
	MinSharpness  *float32 `json:"min_sharpness,omitempty"`
	// MinPlant: share of the frame that must look like plant tissue
	// (green, yellow or brown: a diseased or dried leaf counts); set 0 for
	// models of things that are not plants.
	MinPlant *float32 `json:"min_plant,omitempty"`
}

// Gate defaults (see QualitySpec).
const (
	DefaultMinBrightness = 0.10
	DefaultMaxBrightness = 0.90
	DefaultMaxClipped    = 0.40
	DefaultMinContrast   = 0.02
	DefaultMinSharpness  = 0.35
	DefaultMinPlant      = 0.03
)

// QualityGate holds resolved thresholds.
type QualityGate struct {
	Off                          bool
	MinBrightness, MaxBrightness float32
	MaxClipped, MinContrast      float32
	MinSharpness, MinPlant       float32
}

// Gate resolves a manifest's quality section against the defaults.
func (q *QualitySpec) Gate() QualityGate {
	g := QualityGate{MinBrightness: DefaultMinBrightness, MaxBrightness: DefaultMaxBrightness,
		MaxClipped: DefaultMaxClipped, MinContrast: DefaultMinContrast,
		MinSharpness: DefaultMinSharpness, MinPlant: DefaultMinPlant}
	if q == nil {
		return g
	}
	g.Off = q.Off
	set := func(dst *float32, v *float32) {
		if v != nil {
			*dst = *v
		}
	}
	set(&g.MinBrightness, q.MinBrightness)
	set(&g.MaxBrightness, q.MaxBrightness)
	set(&g.MaxClipped, q.MaxClipped)
	set(&g.MinContrast, q.MinContrast)
	set(&g.MinSharpness, q.MinSharpness)
	set(&g.MinPlant, q.MinPlant)
	return g
}

// Check returns the first reason q fails the gate, or "".
func (g QualityGate) Check(q Quality) string {
	switch {
	case g.Off:
		return ""
	case q.Brightness < g.MinBrightness:
		return ReasonTooDark
	case q.Brightness > g.MaxBrightness || q.Clipped > g.MaxClipped:
		return ReasonTooBright
	case q.Contrast < g.MinContrast:
		return ReasonLowContrast
	case q.Plant < g.MinPlant:
		return ReasonNoPlant
	case q.Sharpness < g.MinSharpness:
		return ReasonBlurry
	}
	return ""
}

// MeasureQuality measures img's centre crop with the aspect w:h (the part
// the model sees).
func MeasureQuality(img image.Image, w, h int) Quality {
	b := img.Bounds()
	if w <= 0 || h <= 0 {
		w, h = 1, 1
	}
	cw, ch := b.Dx(), b.Dx()*h/w
	if ch > b.Dy() {
		cw, ch = b.Dy()*w/h, b.Dy()
	}
	origin := image.Pt(b.Min.X+(b.Dx()-cw)/2, b.Min.Y+(b.Dy()-ch)/2)
	crop := image.Rectangle{Min: origin, Max: origin.Add(image.Pt(cw, ch))}
	src, ok := img.(*image.RGBA)
	if !ok { // PNGs and the like: one conversion of the crop
		src = image.NewRGBA(image.Rect(0, 0, cw, ch))
		draw.Draw(src, src.Bounds(), img, crop.Min, draw.Src)
		crop = src.Bounds()
	}
	// Photos smaller than the gate's square are measured as they are:
	// enlarging would invent blur.
	dst := areaDown(src, crop, max(1, min(gateSize, cw, ch)))
	defer putRGBA(dst)
	return measureRGBA(dst)
}

// areaDown averages the source pixels under each of n×n destination
// pixels (a box filter of the exact ratio): every source pixel is read
// once, and nothing aliases — a blurred photo must not look sharp because
// the downscale skipped pixels.
func areaDown(src *image.RGBA, r image.Rectangle, n int) *image.RGBA {
	dst := getRGBA(image.Rect(0, 0, n, n)) // every pixel written below
	cw, ch := r.Dx(), r.Dy()
	// Where each destination pixel covers step×step source pixels or more,
	// one of each step×step block is enough to average (step² cheaper).
	step := max(1, min(cw, ch)/n)      // every destination pixel keeps at least one sample per axis
	col := make([]int32, 0, cw/step+1) // byte offset of each sampled source column
	dcol := make([]int32, 0, cw/step+1)
	cnt := make([]uint32, n) // sampled columns per destination column
	for x := 0; x < cw; x += step {
		col = append(col, int32(4*(r.Min.X-src.Rect.Min.X+x)))
		d := int32(x * n / cw)
		dcol = append(dcol, 3*d)
		cnt[d]++
	}
	acc := make([]uint32, 3*n)
	pix := src.Pix
	y := 0
	for dy := 0; dy < n; dy++ {
		clear(acc)
		rows := uint32(0)
		for ; y < ch && y*n/ch == dy; y += step {
			rows++
			row := (r.Min.Y + y - src.Rect.Min.Y) * src.Stride
			for i, o := range col {
				p := row + int(o)
				a := dcol[i]
				acc[a] += uint32(pix[p])
				acc[a+1] += uint32(pix[p+1])
				acc[a+2] += uint32(pix[p+2])
			}
		}
		out := dst.Pix[dy*dst.Stride : dy*dst.Stride+4*n]
		for dx := 0; dx < n; dx++ {
			k := max(cnt[dx]*rows, 1)
			out[4*dx] = uint8((acc[3*dx] + k/2) / k)
			out[4*dx+1] = uint8((acc[3*dx+1] + k/2) / k)
			out[4*dx+2] = uint8((acc[3*dx+2] + k/2) / k)
			out[4*dx+3] = 255
		}
	}
	return dst
}

func measureRGBA(m *image.RGBA) Quality {
	w, h := m.Bounds().Dx(), m.Bounds().Dy()
	luma := getF32(w * h)
	defer putF32(luma)
	var sum, sum2 float64
	var clipped, plant, green int
	for y := 0; y < h; y++ {
		row := m.Pix[y*m.Stride:]
		for x := 0; x < w; x++ {
			r, g, bl := float32(row[4*x]), float32(row[4*x+1]), float32(row[4*x+2])
			l := (0.299*r + 0.587*g + 0.114*bl) / 255
			luma[y*w+x] = l
			sum += float64(l)
			sum2 += float64(l) * float64(l)
			if min(r, g, bl) >= 245 {
				clipped++
			}
			switch leafColour(r, g, bl) {
			case colourGreen:
				green++
				plant++
			case colourLeaf:
				plant++
			}
		}
	}
	px := float64(w * h)
	mean := sum / px
	std := math.Sqrt(max(0, sum2/px-mean*mean))
	// Sharpness: Crete et al.'s no-reference blur metric (2007, also
	// skimage's blur_effect): blur the picture again with a 9-pixel box and
	// see how much of the variation between neighbours that removes. A
	// sharp photo loses much of it, a defocused one hardly any. 1 − blur,
	// worst direction: ~0.5–0.7 crisp, towards 0 as the defocus grows.
	sharp := 1 - max(blurEffect(luma, w, h, 1, w), blurEffect(luma, w, h, w, h))
	return Quality{Brightness: float32(mean), Clipped: float32(float64(clipped) / px), Contrast: float32(std),
		Sharpness: float32(sharp), Plant: float32(float64(plant) / px), Green: float32(float64(green) / px)}
}

// blurEffect is Crete's blur along one direction: step is the index
// distance to the next pixel along it (1: rows, w: columns), n the
// number of pixels along it.
func blurEffect(l []float32, w, h, step, n int) float64 {
	const k = 9
	lines, stride := h, w // rows: h lines, w pixels apart
	if step != 1 {
		lines, stride = w, 1
	}
	var sumF, sumV float64
	re := make([]float32, n)
	pad := make([]float32, n+k) // one line padded with its end values; reused line after line
	for line := 0; line < lines; line++ {
		base := line * stride
		// box mean of k pixels, clamped at the ends, as a running sum
		line := pad
		for i := range line {
			line[i] = l[base+min(max(i-k/2, 0), n-1)*step]
		}
		var acc float32
		for d := 0; d < k; d++ {
			acc += line[d]
		}
		for i := 0; i < n; i++ {
			re[i] = acc / k
			acc += line[i+k] - line[i]
		}
		for i := 1; i < n; i++ {
			dF := math.Abs(float64(l[base+i*step] - l[base+(i-1)*step]))
			dB := math.Abs(float64(re[i] - re[i-1]))
			sumF += dF
			sumV += max(0, dF-dB)
		}
	}
	if sumF < 1e-9 {
		return 1
	}
	return (sumF - sumV) / sumF
}

// Pixel colours as the gate counts them.
const (
	colourOther = iota
	colourLeaf  // brown, tan or yellow: dried or diseased leaf tissue (also soil, wood, skin)
	colourGreen // yellow-green to green-cyan: living leaf tissue
)

// leafColour sorts a pixel by hue. Green is hue 50°–170° with some
// saturation and not black (mosaic's yellow-green counts, lesions do not);
// leaf-coloured widens that down to 15° (orange-brown), so a leaf browned or
// yellowed by disease or drying still counts as plant for the gate. Greys,
// blues, purples and reds count as neither.
func leafColour(r, g, b float32) int {
	mx := max(r, g, b)
	mn := min(r, g, b)
	if mx < 25 || mx-mn < 0.15*mx {
		return colourOther
	}
	d := mx - mn
	var hue float32
	switch mx {
	case r:
		hue = 60 * (g - b) / d
	case g:
		hue = 60 * ((b-r)/d + 2)
	default:
		hue = 60 * ((r-g)/d + 4)
	}
	if hue < 0 {
		hue += 360
	}
	switch {
	case hue >= 50 && hue <= 170 && (g == mx || r == mx && g >= 0.85*r):
		return colourGreen
	case hue >= 15 && hue <= 170:
		return colourLeaf
	}
	return colourOther
}
