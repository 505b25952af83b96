// Package testutil holds helpers shared by outpost's tests: the process-wide
// ONNX Runtime environment, the repository root, and generated audio.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
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
		env, envErr = onnx.NewEnv(onnx.Options{LibraryPath: os.Getenv("OUTPOST_ORT_LIB")})
	})
	if envErr != nil {
		t.Fatalf("onnxruntime: %v (run 'make deps')", envErr)
	}
	return env
}

// Root is the repository root (the directory holding go.mod).
func Root(t testing.TB) string {
	t.Helper()
	d, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatal("go.mod not found above the working directory")
		}
		d = filepath.Dir(d)
	}
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
