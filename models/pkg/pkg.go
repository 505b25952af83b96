// Package pkg is the signed model package: one file holding a model folder
// (manifest, model, advice…), its metadata with the sha256 of every file
// and a monotonically increasing sequence number, and an ed25519 signature
// over that metadata. The same verification serves every way a package
// arrives (USB today; MQTT distribution is next).
package pkg

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Meta is package.json: what the signature covers.
type Meta struct {
	Format   string `json:"format"` // "outpost-model-package/1"
	Name     string `json:"name"`   // the model's manifest name
	Version  string `json:"version"`
	Seq      int64  `json:"seq"`                // strictly increasing per model name
	Rollback bool   `json:"rollback,omitempty"` // allows installing a lower seq (signed, so deliberate)
	Created  string `json:"created"`
	Files    []File `json:"files"`
}

// File is one file of the model folder.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

const (
	format  = "outpost-model-package/1"
	maxFile = 512 << 20
)

// Sentinel errors (errors.Is).
var (
	ErrSignature = errors.New("model package: not signed by a trusted key")
	ErrDigest    = errors.New("model package: file does not match its digest")
	ErrDowngrade = errors.New("model package: not newer than the installed one")
	ErrMalformed = errors.New("model package: malformed")
)

// Pack writes dir's regular files, and extra ones (golden inputs), as a
// package signed by key.
func Pack(w io.Writer, dir, name, version string, seq int64, rollback bool, key ed25519.PrivateKey, extra map[string][]byte) (*Meta, error) {
	m := &Meta{Format: format, Name: name, Version: version, Seq: seq, Rollback: rollback, Created: time.Now().UTC().Format(time.RFC3339)}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	contents := map[string][]byte{}
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		m.Files = append(m.Files, File{Path: e.Name(), Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
		contents[e.Name()] = b
	}
	for name, b := range extra {
		if name != path.Base(name) || strings.HasPrefix(name, ".") {
			return nil, fmt.Errorf("model package: extra file name %q", name)
		}
		if _, old := contents[name]; old {
			// Replaces the folder's own (golden.json from an earlier pack).
			m.Files = slices.DeleteFunc(m.Files, func(f File) bool { return f.Path == name })
		}
		sum := sha256.Sum256(b)
		m.Files = append(m.Files, File{Path: name, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
		contents[name] = b
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	meta, _ := json.MarshalIndent(m, "", "  ")
	tw := tar.NewWriter(w)
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := put("package.json", meta); err != nil {
		return nil, err
	}
	if err := put("package.sig", ed25519.Sign(key, meta)); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		if err := put("files/"+f.Path, contents[f.Path]); err != nil {
			return nil, err
		}
	}
	return m, tw.Close()
}

// Open reads a package, checks its signature against keys and every
// file against its digest, and returns the metadata and the files.
func Open(r io.Reader, keys []ed25519.PublicKey) (*Meta, map[string][]byte, error) {
	tr := tar.NewReader(r)
	var meta, sig []byte
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if h.Typeflag != tar.TypeReg || h.Size > maxFile {
			return nil, nil, fmt.Errorf("%w: entry %q is not a regular file of at most %d MiB", ErrMalformed, h.Name, maxFile>>20)
		}
		b, err := io.ReadAll(io.LimitReader(tr, h.Size))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrMalformed, h.Name, err)
		}
		switch {
		case h.Name == "package.json":
			meta = b
		case h.Name == "package.sig":
			sig = b
		case strings.HasPrefix(h.Name, "files/"):
			p := strings.TrimPrefix(h.Name, "files/")
			if p == "" || p != path.Base(p) || strings.HasPrefix(p, ".") {
				return nil, nil, fmt.Errorf("%w: file name %q (one plain name per file)", ErrMalformed, p)
			}
			files[p] = b
		default:
			return nil, nil, fmt.Errorf("%w: unexpected entry %q", ErrMalformed, h.Name)
		}
	}
	if meta == nil || len(sig) != ed25519.SignatureSize {
		return nil, nil, fmt.Errorf("%w: no package.json or package.sig", ErrMalformed)
	}
	ok := false
	for _, k := range keys {
		ok = ok || ed25519.Verify(k, meta, sig)
	}
	if !ok {
		return nil, nil, ErrSignature
	}
	var m Meta
	dec := json.NewDecoder(bytes.NewReader(meta))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil || m.Format != format || m.Name == "" || m.Seq <= 0 {
		return nil, nil, fmt.Errorf("%w: package.json (format %q, name %q, seq %d): %v", ErrMalformed, m.Format, m.Name, m.Seq, err)
	}
	if len(files) != len(m.Files) {
		return nil, nil, fmt.Errorf("%w: %d files listed, %d present", ErrDigest, len(m.Files), len(files))
	}
	for _, f := range m.Files {
		b, ok := files[f.Path]
		sum := sha256.Sum256(b)
		if !ok || int64(len(b)) != f.Size || hex.EncodeToString(sum[:]) != f.SHA256 {
			return nil, nil, fmt.Errorf("%w: %s", ErrDigest, f.Path)
		}
	}
	return &m, files, nil
}

// Installed is what the model folder's .package.json says was installed.
func Installed(modelDir string) (*Meta, error) {
	b, err := os.ReadFile(filepath.Join(modelDir, ".package.json"))
	if err != nil {
		return nil, err
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", modelDir, err)
	}
	return &m, nil
}

// Install verifies the package, refuses a downgrade (seq not above the
// installed one) unless it is a signed rollback, unpacks it beside the
// installed version, lets check prove the new folder works (the CLI loads
// it in ONNX Runtime), then swaps it in with renames and keeps the
// previous version as .NAME.prev. On any error the installed model is
// untouched.
func Install(r io.Reader, modelsDir string, keys []ed25519.PublicKey, check func(dir string) error) (*Meta, error) {
	m, files, err := Open(r, keys)
	if err != nil {
		return nil, err
	}
	var man struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(files["manifest.json"], &man); err != nil || man.Name != m.Name {
		return nil, fmt.Errorf("%w: manifest.json names %q, the package %q", ErrMalformed, man.Name, m.Name)
	}
	if m.Name != path.Base(m.Name) || strings.HasPrefix(m.Name, ".") {
		return nil, fmt.Errorf("%w: model name %q", ErrMalformed, m.Name)
	}
	target := filepath.Join(modelsDir, m.Name)
	if cur, err := Installed(target); err == nil && m.Seq <= cur.Seq && !m.Rollback {
		return nil, fmt.Errorf("%w: %s seq %d (%s), installed seq %d (%s)", ErrDowngrade, m.Name, m.Seq, m.Version, cur.Seq, cur.Version)
	}
	tmp := filepath.Join(modelsDir, fmt.Sprintf(".%s.new-%d", m.Name, m.Seq))
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	meta, _ := json.MarshalIndent(m, "", "  ")
	files[".package.json"] = meta
	for name, b := range files {
		if err := writeSynced(filepath.Join(tmp, name), b); err != nil {
			return nil, err
		}
	}
	if err := syncDir(tmp); err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(tmp); err != nil {
			return nil, fmt.Errorf("model package %s %s does not work here, nothing installed: %w", m.Name, m.Version, err)
		}
	}
	prev := filepath.Join(modelsDir, "."+m.Name+".prev")
	if _, err := os.Stat(target); err == nil {
		os.RemoveAll(prev)
		if err := os.Rename(target, prev); err != nil {
			return nil, err
		}
	}
	failpoint("swap") // between the two renames: Recover's case
	if err := os.Rename(tmp, target); err != nil {
		os.Rename(prev, target) // put the old one back
		return nil, err
	}
	ok = true
	return m, syncDir(modelsDir)
}

func writeSynced(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Peek reads a package's metadata and signature without checking them
// (the hub describes a package it relays; devices verify).
func Peek(r io.Reader) (m *Meta, meta, sig []byte, err error) {
	tr := tar.NewReader(r)
	for meta == nil || sig == nil {
		h, err := tr.Next()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w: no package.json or package.sig: %v", ErrMalformed, err)
		}
		if h.Size > maxFile {
			return nil, nil, nil, fmt.Errorf("%w: entry %q too large", ErrMalformed, h.Name)
		}
		switch h.Name {
		case "package.json":
			meta, err = io.ReadAll(tr)
		case "package.sig":
			sig, err = io.ReadAll(tr)
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	m = &Meta{}
	if err := json.Unmarshal(meta, m); err != nil || m.Format != format || m.Name == "" {
		return nil, nil, nil, fmt.Errorf("%w: package.json: %v", ErrMalformed, err)
	}
	return m, meta, sig, nil
}

// VerifyMeta checks a package's metadata and signature (as an offer
// carries them) against the trusted keys, before any download.
func VerifyMeta(meta, sig []byte, keys []ed25519.PublicKey) (*Meta, error) {
	ok := false
	for _, k := range keys {
		ok = ok || (len(sig) == ed25519.SignatureSize && ed25519.Verify(k, meta, sig))
	}
	if !ok {
		return nil, ErrSignature
	}
	var m Meta
	dec := json.NewDecoder(bytes.NewReader(meta))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil || m.Format != format || m.Name == "" || m.Seq <= 0 {
		return nil, fmt.Errorf("%w: package.json: %v", ErrMalformed, err)
	}
	return &m, nil
}

// failpoint kills the process at a named point when OUTPOST_FAILPOINT
// names it: the kill -9 tests of a swap use it (never set in production).
func failpoint(name string) {
	if os.Getenv("OUTPOST_FAILPOINT") == "pkg-"+name {
		p, _ := os.FindProcess(os.Getpid())
		p.Kill()
		select {} // the kill is asynchronous
	}
}

// Recover repairs what a crash during Install can leave in modelsDir: a
// model folder renamed to .NAME.prev with the new one not yet in place
// gets the previous version back (the download is still there and is
// installed again), and unpacked leftovers (.NAME.new-SEQ) are removed.
// It returns the names it put back.
func Recover(modelsDir string) ([]string, error) {
	ents, err := os.ReadDir(modelsDir)
	if err != nil {
		return nil, err
	}
	var back []string
	for _, e := range ents {
		n := e.Name()
		if name, ok := strings.CutSuffix(strings.TrimPrefix(n, "."), ".prev"); ok && strings.HasPrefix(n, ".") {
			if _, err := os.Stat(filepath.Join(modelsDir, name)); os.IsNotExist(err) {
				if err := os.Rename(filepath.Join(modelsDir, n), filepath.Join(modelsDir, name)); err != nil {
					return back, err
				}
				back = append(back, name)
			}
		}
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".new-") {
			os.RemoveAll(filepath.Join(modelsDir, e.Name()))
		}
	}
	if len(back) > 0 {
		return back, syncDir(modelsDir)
	}
	return back, nil
}

// Rollback puts the previous version of a model (.NAME.prev) back in
// place; the version it replaces is kept as .NAME.bad. It returns the
// metadata of the version now installed (nil if it came from no package).
func Rollback(modelsDir, name string) (*Meta, error) {
	target := filepath.Join(modelsDir, name)
	prev := filepath.Join(modelsDir, "."+name+".prev")
	bad := filepath.Join(modelsDir, "."+name+".bad")
	if _, err := os.Stat(prev); err != nil {
		return nil, fmt.Errorf("model package: no previous version of %s to roll back to: %w", name, err)
	}
	os.RemoveAll(bad)
	if err := os.Rename(target, bad); err != nil {
		return nil, err
	}
	if err := os.Rename(prev, target); err != nil {
		os.Rename(bad, target)
		return nil, err
	}
	if err := syncDir(modelsDir); err != nil {
		return nil, err
	}
	m, _ := Installed(target)
	return m, nil
}
