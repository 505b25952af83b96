//go:build !cgo

package models

import (
	"bytes"
	"fmt"
	"image"
	"image/draw"
	"image/jpeg"
)

// Without cgo (pure-Go test builds only; release builds use libjpeg-turbo)
// the standard library decodes at full size.
const jpegDecoder = "Go image/jpeg (full size)"

func jpegHeader(b []byte) (w, h int, err error) {
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(b))
	return cfg.Width, cfg.Height, err
}

func jpegScale(w, h, minW, minH int) int { return 1 }

func decodeJPEG(b []byte, div int) (*image.RGBA, error) {
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%v", err)
	}
	out := image.NewRGBA(img.Bounds())
	draw.Draw(out, out.Bounds(), img, img.Bounds().Min, draw.Src)
	return out, nil
}
