package device

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/models/pkg"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestAcceptOffer: before a byte is downloaded, an offer must carry
// metadata signed by a model key, name a model this device has, agree
// with its signed metadata and be newer than the installed version
// (or a signed rollback).
func TestAcceptOffer(t *testing.T) {
	pub, program, _ := ed25519.GenerateKey(rand.Reader)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	models := t.TempDir()
	os.MkdirAll(filepath.Join(models, "crop-disease"), 0o755)
	os.WriteFile(filepath.Join(models, "crop-disease", ".package.json"), []byte(`{"name":"crop-disease","seq":3}`), 0o644)
	offer := func(name string, seq int64, rollback bool, key ed25519.PrivateKey) *osync.Offer {
		src := t.TempDir()
		os.WriteFile(filepath.Join(src, "manifest.json"), []byte(`{"name":"`+name+`"}`), 0o644)
		var buf bytes.Buffer
		if _, err := pkg.Pack(&buf, src, name, "1.0", seq, rollback, key, nil); err != nil {
			t.Fatal(err)
		}
		m, meta, sig, err := pkg.Peek(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		return osync.NewOffer(buf.Bytes(), m.Name, m.Version, m.Seq, m.Rollback, meta, sig, 0)
	}
	d := &Device{cfg: Config{ModelsDir: models, ModelKeys: []string{osync.FormatPublicKey(pub)}}}
	lying := offer("crop-disease", 4, false, program)
	lying.Seq = 9
	for _, c := range []struct {
		name string
		o    *osync.Offer
		want string
	}{
		{"newer", offer("crop-disease", 4, false, program), ""},
		{"unknown key", offer("crop-disease", 4, false, stranger), "not signed by a trusted key"},
		{"unknown model", offer("maize", 4, false, program), "unknown model"},
		{"downgrade", offer("crop-disease", 2, false, program), "not newer"},
		{"signed rollback under an old seq", offer("crop-disease", 2, true, program), "not newer"},
		{"signed rollback under a new seq", offer("crop-disease", 5, true, program), ""},
		{"installed already", offer("crop-disease", 3, false, program), osync.ErrAlreadyInstalled.Error()},
		{"offer disagrees with its metadata", lying, "signed metadata"},
	} {
		err := d.acceptOffer(c.o)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	d.cfg.ModelKeys = nil
	if err := d.acceptOffer(offer("crop-disease", 4, false, program)); err == nil || !strings.Contains(err.Error(), "model_keys") {
		t.Errorf("no model keys: %v", err)
	}
	if err := d.acceptOffer(offer("crop-disease", 3, false, program)); errors.Is(err, osync.ErrAlreadyInstalled) {
		t.Errorf("without model keys nothing is accepted, not even the installed version")
	}
}
