package models

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"

	"golang.org/x/image/draw"
)

// Downscale re-encodes a photo as a JPEG whose longest side is at most
// maxSide pixels (quality 80): what leaves the device when the sharing
// policy says "downscaled". EXIF (location, camera) is not carried over.
func Downscale(photo []byte, maxSide int) ([]byte, error) {
	if maxSide <= 0 {
		maxSide = 512
	}
	img, err := DecodeImageScaled(photo, maxSide/2, maxSide/2)
	if err != nil {
		return nil, err
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if s := max(w, h); s > maxSide {
		w, h = max(1, w*maxSide/s), max(1, h*maxSide/s)
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.ApproxBiLinear.Scale(dst, dst.Bounds(), img, b, draw.Src, nil)
	var out bytes.Buffer
	if err := jpeg.Encode(&out, dst, &jpeg.Options{Quality: 80}); err != nil {
		return nil, fmt.Errorf("downscale: %w", err)
	}
	return out.Bytes(), nil
}

// ContentType names what an input is by its first bytes — the kinds the
// pipelines take (JPEG, PNG, WAV), else application/octet-stream — with
// the names net/http's sniffer gives them, without the device importing it.
func ContentType(b []byte) string {
	switch {
	case len(b) >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff:
		return "image/jpeg"
	case len(b) >= 8 && string(b[:8]) == "\x89PNG\r\n\x1a\n":
		return "image/png"
	case len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WAVE":
		return "audio/wave"
	}
	return "application/octet-stream"
}
