//go:build cgo

package models

// JPEG decoding through libjpeg-turbo (Debian's libturbojpeg0-dev, linked
// statically so the binary needs no extra library on the device). Its
// decoder scales by 1/2, 1/4 or 1/8 inside the inverse DCT, so a 48 MP
// phone photo bound for a 224-pixel model is never expanded to 48 MP: the
// memory it costs is that of the small image.

/*
#cgo arm64 LDFLAGS: -L${SRCDIR}/../.cache/turbojpeg/arm64
#cgo LDFLAGS: -l:libturbojpeg.a
#include <stdlib.h>
#include <turbojpeg.h>
*/
import "C"

import (
	"fmt"
	"image"
	"unsafe"
)

// jpegDecoder names the JPEG decoder in use (benchmarks, docs).
const jpegDecoder = "libjpeg-turbo (DCT-domain scaling)"

// jpegHeader reads a JPEG's size without decoding it.
func jpegHeader(b []byte) (w, h int, err error) {
	if len(b) == 0 {
		return 0, 0, fmt.Errorf("empty JPEG")
	}
	tj := C.tjInitDecompress()
	if tj == nil {
		return 0, 0, fmt.Errorf("libjpeg-turbo: init failed")
	}
	defer C.tjDestroy(tj)
	var cw, ch, sub, cs C.int
	if C.tjDecompressHeader3(tj, (*C.uchar)(unsafe.Pointer(&b[0])), C.ulong(len(b)), &cw, &ch, &sub, &cs) != 0 {
		return 0, 0, fmt.Errorf("%s", C.GoString(C.tjGetErrorStr2(tj)))
	}
	return int(cw), int(ch), nil
}

// jpegScale picks the largest libjpeg-turbo reduction (1/8, 1/4, 1/2, 1)
// that keeps the image at least minW × minH (0 = full size).
func jpegScale(w, h, minW, minH int) int {
	for _, d := range []int{8, 4, 2} {
		if minW > 0 && minH > 0 && (w+d-1)/d >= minW && (h+d-1)/d >= minH {
			return d
		}
	}
	return 1
}

// decodeJPEG decodes b at 1/div scale into RGBA. Warnings (a truncated or
// damaged file) are errors: a half-grey photo must not get a diagnosis.
func decodeJPEG(b []byte, div int) (*image.RGBA, error) {
	tj := C.tjInitDecompress()
	if tj == nil {
		return nil, fmt.Errorf("libjpeg-turbo: init failed")
	}
	defer C.tjDestroy(tj)
	var cw, ch, sub, cs C.int
	src := (*C.uchar)(unsafe.Pointer(&b[0]))
	if C.tjDecompressHeader3(tj, src, C.ulong(len(b)), &cw, &ch, &sub, &cs) != 0 {
		return nil, fmt.Errorf("%s", C.GoString(C.tjGetErrorStr2(tj)))
	}
	w, h := (int(cw)+div-1)/div, (int(ch)+div-1)/div
	img := getRGBA(image.Rect(0, 0, w, h)) // the decoder writes every pixel
	// STOPONWARNING: a damaged file is refused, not half-decoded.
	// LIMITSCANS: a progressive file with absurdly many scans is refused
	// (a CPU bomb) rather than decoded for minutes.
	flags := C.int(C.TJFLAG_STOPONWARNING | C.TJFLAG_LIMITSCANS)
	pf := C.int(C.TJPF_RGBA)
	if cs == C.TJCS_CMYK || cs == C.TJCS_YCCK {
		// libjpeg-turbo will not convert CMYK to RGB (a print-shop photo
		// was refused with "Unsupported color conversion request"): take
		// the CMYK samples and convert them below.
		pf = C.TJPF_CMYK
	}
	if C.tjDecompress2(tj, src, C.ulong(len(b)), (*C.uchar)(unsafe.Pointer(&img.Pix[0])),
		C.int(w), C.int(img.Stride), C.int(h), pf, flags) != 0 {
		return nil, fmt.Errorf("%s", C.GoString(C.tjGetErrorStr2(tj)))
	}
	if pf == C.TJPF_CMYK {
		cmykToRGBA(img.Pix)
	}
	return img, nil
}

// cmykToRGBA converts, in place, the inverted ("Adobe") CMYK samples
// libjpeg-turbo returns to RGBA, as libjpeg-turbo's own cmyk_to_rgb does:
// R = C·K/255 and so on.
func cmykToRGBA(pix []byte) {
	for i := 0; i+3 < len(pix); i += 4 {
		c, m, y, k := uint32(pix[i]), uint32(pix[i+1]), uint32(pix[i+2]), uint32(pix[i+3])
		pix[i], pix[i+1], pix[i+2], pix[i+3] = byte((c*k+127)/255), byte((m*k+127)/255), byte((y*k+127)/255), 255
	}
}

// encodeCMYKJPEG writes inverted CMYK samples (4 bytes a pixel) as a CMYK
// JPEG: tests make the print-shop files real photos arrive as with it.
func encodeCMYKJPEG(cmyk []byte, w, h int) ([]byte, error) {
	tj := C.tjInitCompress()
	if tj == nil {
		return nil, fmt.Errorf("libjpeg-turbo: init failed")
	}
	defer C.tjDestroy(tj)
	var out *C.uchar
	var size C.ulong
	if C.tjCompress2(tj, (*C.uchar)(unsafe.Pointer(&cmyk[0])), C.int(w), C.int(4*w), C.int(h), C.TJPF_CMYK,
		&out, &size, C.TJSAMP_444, 90, 0) != 0 {
		return nil, fmt.Errorf("%s", C.GoString(C.tjGetErrorStr2(tj)))
	}
	defer C.tjFree(out)
	return C.GoBytes(unsafe.Pointer(out), C.int(size)), nil
}

// encodeProgressiveJPEG writes RGBA pixels as a progressive JPEG (4:2:0):
// tests make the camera files real phones write.
func encodeProgressiveJPEG(img *image.RGBA) ([]byte, error) {
	tj := C.tjInitCompress()
	if tj == nil {
		return nil, fmt.Errorf("libjpeg-turbo: init failed")
	}
	defer C.tjDestroy(tj)
	var out *C.uchar
	var size C.ulong
	b := img.Bounds()
	if C.tjCompress2(tj, (*C.uchar)(unsafe.Pointer(&img.Pix[0])), C.int(b.Dx()), C.int(img.Stride), C.int(b.Dy()), C.TJPF_RGBA,
		&out, &size, C.TJSAMP_420, 85, C.TJFLAG_PROGRESSIVE) != 0 {
		return nil, fmt.Errorf("%s", C.GoString(C.tjGetErrorStr2(tj)))
	}
	defer C.tjFree(out)
	return C.GoBytes(unsafe.Pointer(out), C.int(size)), nil
}
