package models_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models"
)

// TestContentType: the device names evidence as net/http's sniffer would,
// for every kind a pipeline takes, without importing net/http.
func TestContentType(t *testing.T) {
	dir := testutil.ModelsDir(t)
	wavs, _ := filepath.Glob(filepath.Join(dir, "kws", "eval", "*.wav"))
	if len(wavs) == 0 {
		t.Fatal("no WAV in models/kws/eval")
	}
	inputs := map[string][]byte{"random": []byte("not a photo, not a recording"), "empty": nil, "short": {0xff, 0xd8}}
	for _, f := range []string{filepath.Join(dir, "crop-disease", "samples", "rust.jpg"), filepath.Join(dir, "crop-disease", "eval", "000_healthy.png"), wavs[0]} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		inputs[filepath.Base(f)] = b
	}
	for name, b := range inputs {
		if got, want := models.ContentType(b), http.DetectContentType(b); got != want && !(want == "text/plain; charset=utf-8" && got == "application/octet-stream") {
			t.Errorf("%s: %s, net/http says %s", name, got, want)
		}
	}
}
