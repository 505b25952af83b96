package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models/pkg"
)

// TestModelPackages: pack signs a model folder; install verifies and swaps
// it in, keeping the previous version; it refuses an unknown key, a
// tampered file, a downgrade (unless the package is a signed rollback)
// and a model that does not load — each with the installed model
// untouched.
func TestModelPackages(t *testing.T) {
	dir := t.TempDir()
	pub, _, _ := run(t, nil, "keys", "generate", "--out", filepath.Join(dir, "program.key"))
	run(t, nil, "keys", "generate", "--out", filepath.Join(dir, "stranger.key"))
	pub = strings.TrimSpace(pub)
	src := filepath.Join(dir, "src", "crop-disease")
	os.MkdirAll(src, 0o755)
	for _, f := range []string{"manifest.json", "crop_disease_int8.onnx", "advice.json"} {
		b, err := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(src, f), b, 0o644)
	}
	pack := func(name, key string, seq string, extra ...string) string {
		out := filepath.Join(dir, name)
		args := append([]string{"models", "pack", "--key", filepath.Join(dir, key), "--seq", seq, "--out", out}, extra...)
		if o, e, code := run(t, nil, append(args, src)...); code != ExitOK {
			t.Fatalf("pack %s: %s%s", name, o, e)
		}
		return out
	}
	models := filepath.Join(dir, "models")
	os.MkdirAll(models, 0o755)
	install := func(p string) (string, int) {
		o, e, code := run(t, nil, "models", "install", p, "--dir", models, "--model-key", pub)
		return o + e, code
	}
	seqNow := func() int64 {
		m, err := pkg.Installed(filepath.Join(models, "crop-disease"))
		if err != nil {
			t.Fatal(err)
		}
		return m.Seq
	}
	if out, code := install(pack("p2.opkg", "program.key", "2")); code != ExitOK || !strings.Contains(out, "installed crop-disease") {
		t.Fatalf("install seq 2: %s", out)
	}
	if out, _, code := run(t, nil, "models", "verify", "--dir", models); code != ExitOK || !strings.Contains(out, "crop-disease") {
		t.Fatalf("the installed model does not verify:\n%s", out)
	}
	for _, c := range []struct {
		name, pkg, want string
	}{
		{"downgrade", pack("p1.opkg", "program.key", "1"), "not newer"},
		{"same seq again", filepath.Join(dir, "p2.opkg"), "not newer"},
		{"unknown key", pack("s3.opkg", "stranger.key", "3"), "not signed by a trusted key"},
		{"tampered", tamper(t, pack("t3.opkg", "program.key", "3")), "does not match its digest"},
	} {
		if out, code := install(c.pkg); code == ExitOK || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d: %s", c.name, code, out)
		}
		if s := seqNow(); s != 2 {
			t.Fatalf("%s changed the installed model (seq %d)", c.name, s)
		}
	}
	// A model that does not load: refused after unpacking, nothing swapped.
	junk := []byte("this is not an onnx model at all")
	sum := sha256.Sum256(junk)
	man, _ := os.ReadFile(filepath.Join(src, "manifest.json"))
	good := string(man)
	os.WriteFile(filepath.Join(src, "crop_disease_int8.onnx"), junk, 0o644)
	old := good[strings.Index(good, `"sha256": "`)+11:]
	old = old[:64]
	os.WriteFile(filepath.Join(src, "manifest.json"), []byte(strings.Replace(good, old, hex.EncodeToString(sum[:]), 1)), 0o644)
	if out, code := install(pack("bad4.opkg", "program.key", "4")); code == ExitOK || !strings.Contains(out, "does not work here") {
		t.Errorf("a model that does not load: %d %s", code, out)
	}
	if s := seqNow(); s != 2 {
		t.Fatalf("a broken package replaced the model (seq %d)", s)
	}
	// A signed rollback to seq 1 is allowed; seq 2 stays as .prev.
	b, _ := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", "crop_disease_int8.onnx"))
	os.WriteFile(filepath.Join(src, "crop_disease_int8.onnx"), b, 0o644)
	os.WriteFile(filepath.Join(src, "manifest.json"), []byte(good), 0o644)
	// A model whose answers differ from its golden outputs: refused by
	// the health check, nothing swapped.
	leaf, _ := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples", "leaf_spot.jpg"))
	os.WriteFile(filepath.Join(src, "golden-1.jpg"), leaf, 0o644)
	os.WriteFile(filepath.Join(src, "golden.json"), []byte(`{"cases":[{"model":"crop-disease","file":"golden-1.jpg","output":{"label":"healthy"}}]}`), 0o644)
	if out, code := install(pack("sick5.opkg", "program.key", "5")); code == ExitOK || !strings.Contains(out, "health check failed") {
		t.Errorf("a model failing its golden inputs: %d %s", code, out)
	}
	if s := seqNow(); s != 2 {
		t.Fatalf("a package failing its health check replaced the model (seq %d)", s)
	}
	os.Remove(filepath.Join(src, "golden.json"))
	os.Remove(filepath.Join(src, "golden-1.jpg"))
	// A rollback under an old seq is refused (floors only rise); signed
	// under a new, higher seq it installs the older content.
	if out, code := install(pack("r1.opkg", "program.key", "1", "--rollback")); code == ExitOK || !strings.Contains(out, "not newer") {
		t.Fatalf("a rollback under seq 1 after seq 2: %d %s", code, out)
	}
	if out, code := install(pack("r6.opkg", "program.key", "6", "--rollback")); code != ExitOK {
		t.Fatalf("signed rollback: %s", out)
	}
	prev, err := pkg.Installed(filepath.Join(models, ".crop-disease.prev"))
	if s := seqNow(); s != 6 || err != nil || prev.Seq != 2 {
		t.Fatalf("after the rollback: seq %d, previous %v %v", s, prev, err)
	}
}

// tamper flips one byte inside the packaged model file.
func tamper(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	model, _ := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", "crop_disease_int8.onnx"))
	i := bytes.Index(b, model[:256])
	if i < 0 {
		t.Fatal("model bytes not found in the package")
	}
	b[i+1000] ^= 0xff
	out := p + ".tampered"
	os.WriteFile(out, b, 0o644)
	return out
}
