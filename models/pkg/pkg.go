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
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Meta is package.json: what the signature covers.
type Meta struct {
	Format   string `json:"format"` // "outpost-model-package/1"
	Name     string `json:"name"`   // the model's manifest name
	Version  string `json:"version"`
	Seq      int64  `json:"seq"`                // strictly increasing per model name
	Rollback bool   `json:"rollback,omitempty"` // older content on purpose (still under a new, higher seq: floors only rise)
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
// Memory is bounded by what the signer declared (walk).
func Open(r io.Reader, keys []ed25519.PublicKey) (*Meta, map[string][]byte, error) {
	files := map[string][]byte{}
	m, err := walk(r, keys, func(f File, rd io.Reader) error {
		b, err := io.ReadAll(rd)
		files[f.Path] = b
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return m, files, nil
}

// maxMeta bounds package.json (a model folder lists a handful of files).
const maxMeta = 1 << 20

// walk reads a package as a stream: package.json and package.sig come
// first and the signature is checked before any other byte is read, so
// an unsigned or foreign package costs at most maxMeta bytes whatever its
// tar headers claim (an 800 MiB one OOM-killed the daemon before). Then
// each file must be listed in the signed metadata with the size its tar
// header gives; fn reads it through a reader that hashes it, and the
// digest is checked when fn returns. fn must consume the whole reader.
func walk(r io.Reader, keys []ed25519.PublicKey, fn func(File, io.Reader) error) (*Meta, error) {
	tr := tar.NewReader(r)
	next := func(want string, max int64) ([]byte, error) {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("%w: no %s first: %v", ErrMalformed, want, err)
		}
		if h.Name != want || h.Typeflag != tar.TypeReg || h.Size > max {
			return nil, fmt.Errorf("%w: entry %q (%d bytes) where %s of at most %d bytes belongs", ErrMalformed, h.Name, h.Size, want, max)
		}
		return io.ReadAll(io.LimitReader(tr, h.Size))
	}
	meta, err := next("package.json", maxMeta)
	if err != nil {
		return nil, err
	}
	sig, err := next("package.sig", ed25519.SignatureSize)
	if err != nil {
		return nil, err
	}
	m, err := VerifyMeta(meta, sig, keys)
	if err != nil {
		return nil, err
	}
	listed := map[string]File{}
	for _, f := range m.Files {
		if f.Path == "" || f.Path != path.Base(f.Path) || strings.HasPrefix(f.Path, ".") || f.Size < 0 || f.Size > maxFile {
			return nil, fmt.Errorf("%w: listed file %q (%d bytes)", ErrMalformed, f.Path, f.Size)
		}
		listed[f.Path] = f
	}
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		p, ok := strings.CutPrefix(h.Name, "files/")
		f, listedOK := listed[p]
		if !ok || !listedOK || seen[p] || h.Typeflag != tar.TypeReg || h.Size != f.Size {
			return nil, fmt.Errorf("%w: entry %q (%d bytes) is not a file the signed metadata lists with that size", ErrDigest, h.Name, h.Size)
		}
		seen[p] = true
		hr := &hashReader{r: io.LimitReader(tr, h.Size), h: sha256.New()}
		if err := fn(f, hr); err != nil {
			return nil, fmt.Errorf("model package: %s: %w", p, err)
		}
		if hr.n != f.Size || hex.EncodeToString(hr.h.Sum(nil)) != f.SHA256 {
			return nil, fmt.Errorf("%w: %s", ErrDigest, p)
		}
	}
	if len(seen) != len(listed) {
		return nil, fmt.Errorf("%w: %d files listed, %d present", ErrDigest, len(listed), len(seen))
	}
	return m, nil
}

type hashReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// FloorFile (".NAME.floor" in the models folder) holds the highest
// package sequence number ever installed for a model. It only rises: a
// crash-loop rollback to .NAME.prev leaves it where it is, and a signed
// rollback package carries older content under a new, higher sequence
// number — so no package, rollback or not, ever installs twice (a replay
// of an old signed package moved devices back and forth before).
func floorPath(modelsDir, name string) string { return filepath.Join(modelsDir, "."+name+".floor") }

// Floor is the sequence number a package for name must exceed: the
// floor file's, or the installed package's when higher (0: none).
func Floor(modelsDir, name string) int64 {
	var floor int64
	// A few digits: read at most 32 bytes, never through a symlink or a FIFO.
	if f, err := os.OpenFile(floorPath(modelsDir, name), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0); err == nil {
		b, _ := io.ReadAll(io.LimitReader(f, 32))
		f.Close()
		floor, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if cur, err := Installed(filepath.Join(modelsDir, name)); err == nil && cur.Seq > floor {
		floor = cur.Seq
	}
	return floor
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
	// Unpacked while read: into a staging folder named for no model yet.
	stage, err := os.MkdirTemp(modelsDir, ".incoming-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	m, err := walk(r, keys, func(f File, rd io.Reader) error {
		return writeSynced(filepath.Join(stage, f.Path), rd)
	})
	if err != nil {
		return nil, err
	}
	var man struct {
		Name string `json:"name"`
	}
	manifest, _ := os.ReadFile(filepath.Join(stage, "manifest.json"))
	if err := json.Unmarshal(manifest, &man); err != nil || man.Name != m.Name {
		return nil, fmt.Errorf("%w: manifest.json names %q, the package %q", ErrMalformed, man.Name, m.Name)
	}
	if m.Name != path.Base(m.Name) || strings.HasPrefix(m.Name, ".") {
		return nil, fmt.Errorf("%w: model name %q", ErrMalformed, m.Name)
	}
	target := filepath.Join(modelsDir, m.Name)
	if floor := Floor(modelsDir, m.Name); m.Seq <= floor {
		return nil, fmt.Errorf("%w: %s seq %d (%s), the model has had seq %d (a rollback is signed under a new, higher seq)", ErrDowngrade, m.Name, m.Seq, m.Version, floor)
	}
	tmp := filepath.Join(modelsDir, fmt.Sprintf(".%s.new-%d", m.Name, m.Seq))
	os.RemoveAll(tmp)
	meta, _ := json.MarshalIndent(m, "", "  ")
	if err := writeSynced(filepath.Join(stage, ".package.json"), bytes.NewReader(meta)); err != nil {
		return nil, err
	}
	if err := syncDir(stage); err != nil {
		return nil, err
	}
	if err := os.Rename(stage, tmp); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
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
	// The floor rises after the swap: until it is written, the installed
	// .package.json already holds the new seq (Floor takes the higher), and
	// a crash before the swap leaves the download installable again.
	floor := floorPath(modelsDir, m.Name)
	if err := writeSynced(floor+".tmp", strings.NewReader(strconv.FormatInt(m.Seq, 10))); err != nil {
		return m, err
	}
	if err := os.Rename(floor+".tmp", floor); err != nil {
		return m, err
	}
	return m, syncDir(modelsDir)
}

func writeSynced(p string, r io.Reader) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
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
		if strings.HasPrefix(e.Name(), ".") && (strings.Contains(e.Name(), ".new-") || strings.HasPrefix(e.Name(), ".incoming-")) {
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
