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
	bytePool slicePool[byte]
	f32Pool  slicePool[float32]
)

// slicePool hands out slices of at least the asked length; a pooled slice
// too short for the ask is dropped for a new one.
type slicePool[T any] struct{ p gosync.Pool }

func (sp *slicePool[T]) get(n int) []T {
	if p, _ := sp.p.Get().(*[]T); p != nil && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]T, n)
}

func (sp *slicePool[T]) put(b []T) {
	if cap(b) > 0 {
		sp.p.Put(&b)
	}
}

func getBytes(n int) []byte  { return bytePool.get(n) }
func putBytes(b []byte)      { bytePool.put(b) }
func getF32(n int) []float32 { return f32Pool.get(n) }
func putF32(b []float32)     { f32Pool.put(b) }

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
