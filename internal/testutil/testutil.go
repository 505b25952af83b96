// Package testutil holds helpers shared by outpost's tests: the process-wide
// ONNX Runtime environment, the repository root, and generated audio.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	gosync "sync"
	"testing"

	"github.com/outpost-edge/outpost/runtime/onnx"
)

var (
	envOnce gosync.Once
	env     *onnx.Env
	envErr  error
)

// ORT returns the shared ONNX Runtime environment. A missing library fails
// the test (never skips): `make test` fetches it with `make deps`.
func ORT(t testing.TB) *onnx.Env {
	t.Helper()
	envOnce.Do(func() {
		env, envErr = onnx.NewEnv(onnx.Options{LibraryPath: LibPath(t)})
	})
	if envErr != nil {
		t.Fatalf("onnxruntime: %v (run 'make deps')", envErr)
	}
	return env
}

// LibPath is OUTPOST_ORT_LIB if set, else the library in the cache `make
// deps` fills, independent of the working directory.
func LibPath(t testing.TB) string {
	if lib := os.Getenv("OUTPOST_ORT_LIB"); lib != "" {
		return lib
	}
	return filepath.Join(Root(t), ".cache", "onnxruntime", onnx.Version, "linux-"+goruntime.GOARCH, onnx.LibraryName)
}

// Root is the repository root (the directory holding go.mod), found from
// this source file so tests that change directory still find it.
func Root(t testing.TB) string {
	t.Helper()
	_, file, _, ok := goruntime.Caller(0)
	if !ok {
		t.Fatal("testutil: cannot locate source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// ModelsDir is the repository's bundled models directory.
func ModelsDir(t testing.TB) string { return filepath.Join(Root(t), "models") }

// SileroPath is the Silero VAD model fetched by `make deps`.
func SileroPath(t testing.TB) string {
	t.Helper()
	p := filepath.Join(ModelsDir(t), "silero-vad", "silero_vad_v5.onnx")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("silero model: %v (run 'make deps')", err)
	}
	return p
}

// Speak renders text with espeak-ng to a 16 kHz mono PCM16 WAV and returns its
// path. It fails the test when espeak-ng is missing: CI installs it.
func Speak(t testing.TB, voice, text string) string {
	t.Helper()
	bin, err := exec.LookPath("espeak-ng")
	if err != nil {
		t.Fatalf("espeak-ng not installed (scripts/sysdeps.sh installs it): %v", err)
	}
	out := filepath.Join(t.TempDir(), "speech.wav")
	// espeak-ng writes 22.05 kHz; callers resample, which is part of what they test.
	cmd := exec.Command(bin, "-v", voice, "-s", "150", "-w", out, text)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("espeak-ng: %v: %s", err, b)
	}
	return out
}
