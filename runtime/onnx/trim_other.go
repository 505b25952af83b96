//go:build !linux || !cgo

package onnx

// TrimMemory is a no-op where the C library has no malloc_trim.
func TrimMemory() {}
