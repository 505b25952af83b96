package models

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodManifest = `{
  "name": "tiny", "version": "1", "task": "vad", "file": "tiny.onnx",
  "sha256": "ed563c9fc34421bd937c0011e722de11644046d7ac169779d6f59801ce003cc4",
  "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
  "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3]}],
  "preprocessing": {"sample_rate": 16000, "chunk_samples": 512},
  "license": "MIT"
}`

func TestParseManifest(t *testing.T) {
	edit := func(old, new string) string { return strings.Replace(goodManifest, old, new, 1) }
	tests := []struct {
		name, in, want string
	}{
		{"good", goodManifest, ""},
		{"not json", "{", "unexpected EOF"},
		{"unknown field", edit(`"license"`, `"sha265": "x", "license"`), `unknown field "sha265"`},
		{"bad name", edit(`"tiny"`, `"Tiny Model"`), `name "Tiny Model"`},
		{"no version", edit(`"version": "1"`, `"version": ""`), "version is empty"},
		{"bad task", edit(`"vad"`, `"detect"`), `task "detect"`},
		{"traversal", edit(`"tiny.onnx"`, `"../../etc/passwd"`), "relative path inside the model folder"},
		{"absolute", edit(`"tiny.onnx"`, `"/etc/passwd"`), "relative path inside the model folder"},
		{"short sha", edit(`"ed563c9fc34421bd937c0011e722de11644046d7ac169779d6f59801ce003cc4"`, `"abc"`), "64 hex digits"},
		{"bad dtype", edit(`"float32", "shape": [-1, 4]`, `"float16", "shape": [-1, 4]`), `unknown dtype "float16"`},
		{"no license", edit(`"license": "MIT"`, `"license": ""`), "license is empty"},
		{"vad without rate", edit(`"sample_rate": 16000, `, ``), "sample_rate"},
		{"trailing", goodManifest + "{}", "trailing data"},
		{"bad threshold", edit(`"license"`, `"vad": {"threshold": 2}, "license"`), "threshold 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tt.in))
			if tt.want == "" {
				if err != nil || m.Name != "tiny" {
					t.Fatalf("m=%v err=%v", m, err)
				}
				return
			}
			if !errors.Is(err, ErrBadManifest) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrBadManifest containing %q", err, tt.want)
			}
		})
	}
}

func FuzzManifest(f *testing.F) {
	f.Add([]byte(goodManifest))
	f.Add([]byte(`{"name":"a","vad":{"min_speech":"-1s"}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err == nil {
			if !filepath.IsLocal(m.File) || len(m.SHA256) != 64 {
				t.Fatalf("accepted an invalid manifest: %+v", m)
			}
		} else if !errors.Is(err, ErrBadManifest) {
			t.Fatalf("error does not wrap ErrBadManifest: %v", err)
		}
	})
}

// writeModel makes dir/name with a manifest (edited by mod) and tiny.onnx.
func writeModel(t *testing.T, dir, name string, mod func(string) string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "runtime", "testdata", "tiny.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	man := strings.Replace(goodManifest, `"name": "tiny"`, `"name": "`+name+`"`, 1)
	if mod != nil {
		man = mod(man)
	}
	os.WriteFile(filepath.Join(d, ManifestFile), []byte(man), 0o644)
	os.WriteFile(filepath.Join(d, "tiny.onnx"), src, 0o644)
	return d
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	writeModel(t, dir, "good", nil)
	writeModel(t, dir, "badsum", func(s string) string { return strings.Replace(s, "ed563c9f", "00000000", 1) })
	writeModel(t, dir, "missing", func(s string) string { return strings.Replace(s, `"tiny.onnx"`, `"nope.onnx"`, 1) })
	writeModel(t, dir, "broken", func(string) string { return "{not json" })
	esc := writeModel(t, dir, "escape", func(s string) string { return strings.Replace(s, `"tiny.onnx"`, `"link.onnx"`, 1) })
	os.WriteFile(filepath.Join(dir, "outside.onnx"), []byte("x"), 0o644)
	os.Symlink(filepath.Join(dir, "outside.onnx"), filepath.Join(esc, "link.onnx"))
	dup := writeModel(t, dir, "zz-dup", nil)
	b, _ := os.ReadFile(filepath.Join(dup, ManifestFile))
	os.WriteFile(filepath.Join(dup, ManifestFile), []byte(strings.Replace(string(b), `"zz-dup"`, `"good"`, 1)), 0o644)
	os.MkdirAll(filepath.Join(dir, "not-a-model"), 0o755)

	r, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ms := r.Models(); len(ms) != 1 || ms[0].Name != "good" || ms[0].Size != 257 {
		t.Fatalf("models = %v", ms)
	}
	want := map[string]error{"badsum": ErrChecksum, "missing": os.ErrNotExist, "broken": ErrBadManifest, "escape": ErrBadManifest, "zz-dup": ErrBadManifest}
	got := map[string]bool{}
	for _, p := range r.Problems() {
		base := filepath.Base(p.Dir)
		if w, ok := want[base]; !ok || !errors.Is(p.Err, w) {
			t.Errorf("problem %s: %v (want %v)", base, p.Err, want[base])
		}
		got[base] = true
	}
	if len(got) != len(want) {
		t.Fatalf("problems = %v, want one per %v", r.Problems(), want)
	}
	if _, err := r.Get("nope"); !errors.Is(err, ErrUnknownModel) || !strings.Contains(err.Error(), "loaded: good") {
		t.Fatalf("Get(nope) = %v", err)
	}
	if _, err := LoadDir(filepath.Join(dir, "absent")); err == nil {
		t.Fatal("LoadDir of a missing dir succeeded")
	}
}
