package pkg

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestPackOpen(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	other, _, _ := ed25519.GenerateKey(nil)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"name":"m"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "m.onnx"), bytes.Repeat([]byte("x"), 5000), 0o644)
	os.WriteFile(filepath.Join(dir, ".hidden"), []byte("not packed"), 0o644)
	var buf bytes.Buffer
	if _, err := Pack(&buf, dir, "m", "1.0", 3, false, key, nil); err != nil {
		t.Fatal(err)
	}
	m, files, err := Open(bytes.NewReader(buf.Bytes()), []ed25519.PublicKey{other, pub})
	if err != nil || m.Seq != 3 || len(files) != 2 || files[".hidden"] != nil {
		t.Fatalf("open: %+v %v %v", m, len(files), err)
	}
	if _, _, err := Open(bytes.NewReader(buf.Bytes()), []ed25519.PublicKey{other}); !errors.Is(err, ErrSignature) {
		t.Fatalf("unknown key: %v", err)
	}
	b := buf.Bytes()
	i := bytes.Index(b, bytes.Repeat([]byte("x"), 100))
	b[i+10] = 'y'
	if _, _, err := Open(bytes.NewReader(b), []ed25519.PublicKey{pub}); !errors.Is(err, ErrDigest) {
		t.Fatalf("tampered file: %v", err)
	}
}

// FuzzOpen: random bytes as a package never panic and never verify.
func FuzzOpen(f *testing.F) {
	pub, key, _ := ed25519.GenerateKey(nil)
	dir := f.TempDir()
	os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"name":"m"}`), 0o644)
	var buf bytes.Buffer
	Pack(&buf, dir, "m", "1", 1, false, key, nil)
	f.Add(buf.Bytes())
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, _, err := Open(bytes.NewReader(b), []ed25519.PublicKey{pub}); err == nil && !bytes.Equal(b, buf.Bytes()) {
			// Only the genuine package (or a tar re-encoding of it) may verify.
			if _, _, err2 := Open(bytes.NewReader(b), []ed25519.PublicKey{pub}); err2 != nil {
				t.Fatal("inconsistent")
			}
		}
	})
}
