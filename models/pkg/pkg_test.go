package pkg

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"errors"
	"io"
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

// countingZeros yields zeros forever and counts what was read.
type countingZeros struct{ n int64 }

func (c *countingZeros) Read(p []byte) (int, error) {
	clear(p)
	c.n += int64(len(p))
	return len(p), nil
}

// TestOpen_BoundedBeforeSignature (issue 25, crash 1): an unsigned package
// whose tar claims an 800 MiB model took 1.42 GB before the signature was
// checked and OOM-killed the daemon on every restart. Now the signature
// is checked on the first two entries: at most a few KiB are read.
func TestOpen_BoundedBeforeSignature(t *testing.T) {
	_, stranger, _ := ed25519.GenerateKey(nil)
	pub, _, _ := ed25519.GenerateKey(nil)
	meta := []byte(`{"format":"outpost-model-package/1","name":"m","version":"9","seq":99,"files":[{"path":"m.onnx","size":838860800,"sha256":"00"}]}`)
	var head bytes.Buffer
	tw := tar.NewWriter(&head)
	tw.WriteHeader(&tar.Header{Name: "package.json", Mode: 0o644, Size: int64(len(meta)), Typeflag: tar.TypeReg})
	tw.Write(meta)
	sig := ed25519.Sign(stranger, meta)
	tw.WriteHeader(&tar.Header{Name: "package.sig", Mode: 0o644, Size: int64(len(sig)), Typeflag: tar.TypeReg})
	tw.Write(sig)
	tw.WriteHeader(&tar.Header{Name: "files/m.onnx", Mode: 0o644, Size: 800 << 20, Typeflag: tar.TypeReg})
	tw.Flush()
	zeros := &countingZeros{}
	_, err := Install(io.MultiReader(&head, zeros), t.TempDir(), []ed25519.PublicKey{pub}, nil)
	if !errors.Is(err, ErrSignature) || zeros.n > 1<<20 {
		t.Fatalf("unsigned 800 MiB package: %v after reading %d bytes of its model", err, zeros.n)
	}
	// Signed metadata first is the rule: a model entry before it is refused unread.
	var early bytes.Buffer
	tw = tar.NewWriter(&early)
	tw.WriteHeader(&tar.Header{Name: "files/m.onnx", Mode: 0o644, Size: 800 << 20, Typeflag: tar.TypeReg})
	tw.Flush()
	zeros = &countingZeros{}
	if _, _, err := Open(io.MultiReader(&early, zeros), []ed25519.PublicKey{pub}); !errors.Is(err, ErrMalformed) || zeros.n > 1<<20 {
		t.Fatalf("model before metadata: %v after %d bytes", err, zeros.n)
	}
}

// TestInstall_FloorsOnlyRise (issue 25, hole 4): 2 → rollback 1 → replay
// 2 → 3 → replay rollback → replay 3 were all accepted. A rollback is now
// older content under a new, higher seq, and no package installs twice.
func TestInstall_FloorsOnlyRise(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	keys := []ed25519.PublicKey{pub}
	models := t.TempDir()
	pack := func(version string, seq int64, rollback bool) []byte {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"name":"m"}`), 0o644)
		os.WriteFile(filepath.Join(dir, "m.onnx"), []byte("model "+version), 0o644)
		var buf bytes.Buffer
		if _, err := Pack(&buf, dir, "m", version, seq, rollback, key, nil); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	v1, v2, back, v3 := pack("1", 1, false), pack("2", 2, false), pack("1", 3, true), pack("3", 4, false)
	step := func(what string, p []byte, ok bool, version string) {
		t.Helper()
		_, err := Install(bytes.NewReader(p), models, keys, nil)
		if ok != (err == nil) || (err != nil && !errors.Is(err, ErrDowngrade)) {
			t.Fatalf("%s: %v (want accepted %v)", what, err, ok)
		}
		if m, _ := Installed(filepath.Join(models, "m")); m.Version != version {
			t.Fatalf("%s: installed %s, want %s", what, m.Version, version)
		}
	}
	step("v1", v1, true, "1")
	step("v2", v2, true, "2")
	step("rollback to 1 (seq 3)", back, true, "1")
	step("replay v2", v2, false, "1")
	step("v3 (seq 4)", v3, true, "3")
	step("replay the rollback", back, false, "3")
	step("replay v3", v3, false, "3")
	// A crash-loop rollback to .m.prev keeps the floor: v3 never returns.
	if _, err := Rollback(models, "m"); err != nil {
		t.Fatal(err)
	}
	if f := Floor(models, "m"); f != 4 {
		t.Fatalf("floor after a local rollback: %d, want 4", f)
	}
	step("replay v3 after the local rollback", v3, false, "1")
}
