package models

import (
	"image"
	gosync "sync"
)

// Per-photo scratch buffers, reused from photo to photo. A diagnosis
// allocated ~880 KB of pixels and floats per photo, so the collector ran
// every few photos, beside the next one (issue 31: the HTTP path spent
// 60–100 µs more inside InferAndStore than a direct call, most of it
// that). A buffer handed out is fully overwritten by its user: nothing
// reads what the last photo left in it.
var (
	bytePool, f32Pool gosync.Pool
)

func getBytes(n int) []byte {
	if p, _ := bytePool.Get().(*[]byte); p != nil && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n)
}

func putBytes(b []byte) {
	if cap(b) > 0 {
		bytePool.Put(&b)
	}
}

func getF32(n int) []float32 {
	if p, _ := f32Pool.Get().(*[]float32); p != nil && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]float32, n)
}

func putF32(b []float32) {
	if cap(b) > 0 {
		f32Pool.Put(&b)
	}
}

// getRGBA is image.NewRGBA from the pool; every pixel must be written.
func getRGBA(r image.Rectangle) *image.RGBA {
	return &image.RGBA{Pix: getBytes(4 * r.Dx() * r.Dy()), Stride: 4 * r.Dx(), Rect: r}
}

// putRGBA returns m's pixels; m must not be used after.
func putRGBA(m image.Image) {
	if m, ok := m.(*image.RGBA); ok {
		putBytes(m.Pix)
	}
}
