package models

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	gosync "sync"

	"github.com/outpost-edge/outpost/runtime"
)

// Model is a verified entry of a Registry.
type Model struct {
	Manifest
	Dir  string // folder holding manifest.json
	Path string // absolute path of the model file
	Size int64
	// Variant: loaded from a manifest-*.json beside the folder's
	// manifest.json (an FP32 twin of an INT8 model, say); the device may
	// run it for requests naming the folder's model (Variants).
	Variant bool
}

// Problem is a model folder the registry refused, with the reason.
type Problem struct {
	Dir string
	Err error
}

func (p Problem) String() string { return p.Dir + ": " + p.Err.Error() }

// Registry is the set of models found in a directory. Bad models are listed
// in Problems and never stop the good ones from loading.
type Registry struct {
	mu       gosync.RWMutex // Replace swaps a folder's models under a running daemon
	dir      string
	models   map[string]*Model
	problems []Problem
}

// LoadDir reads every subfolder of dir for manifest.json (and manifest-*.json:
// one folder may hold variants, e.g. INT8 and FP32 of the same model),
// verifying each model's checksum. Folders without a manifest are ignored.
// The error is non-nil only when dir itself cannot be read.
func LoadDir(dir string) (*Registry, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("models: read %s: %w", dir, err)
	}
	r := &Registry{dir: dir, models: map[string]*Model{}}
	for _, e := range ents {
		sub := filepath.Join(dir, e.Name())
		// Hidden folders are an install's previous version or one being
		// unpacked (models/pkg): never loaded.
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		mans, _ := filepath.Glob(filepath.Join(sub, "manifest-*.json"))
		if _, err := os.Stat(filepath.Join(sub, ManifestFile)); err == nil {
			mans = append([]string{filepath.Join(sub, ManifestFile)}, mans...)
		}
		for _, man := range mans {
			where := sub
			if filepath.Base(man) != ManifestFile {
				where = man
			}
			m, err := loadModel(sub, man)
			if err != nil {
				r.problems = append(r.problems, Problem{Dir: where, Err: err})
				continue
			}
			m.Variant = filepath.Base(man) != ManifestFile
			if prev, dup := r.models[m.Name]; dup {
				r.problems = append(r.problems, Problem{Dir: where, Err: fmt.Errorf("%w: name %q already used by %s", ErrBadManifest, m.Name, prev.Dir)})
				continue
			}
			r.models[m.Name] = m
		}
	}
	return r, nil
}

func loadModel(dir, manifest string) (*Model, error) {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	man, err := ParseManifest(b)
	if err != nil {
		return nil, err
	}
	m := &Model{Manifest: *man, Dir: dir}
	path, err := resolveInside(dir, man.File)
	if err != nil {
		return nil, err
	}
	m.Path = path
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model file: %w", err)
	}
	m.Size = int64(len(data))
	if err := m.verify(data); err != nil {
		return nil, err
	}
	return m, nil
}

// resolveInside refuses a model file that escapes its folder through a symlink.
func resolveInside(dir, file string) (string, error) {
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	p := filepath.Join(absDir, file)
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("model file: %w", err)
	}
	realDir, err := filepath.EvalSymlinks(absDir)
	if err != nil {
		return "", err
	}
	if rel, err := filepath.Rel(realDir, real); err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("%w: file %q resolves to %s, outside the model folder", ErrBadManifest, file, real)
	}
	return p, nil
}

func (m *Model) verify(data []byte) error {
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, m.SHA256) {
		return fmt.Errorf("%w: %s: manifest says %s, file has %s", ErrChecksum, m.File, m.SHA256, got)
	}
	return nil
}

// Loader turns verified model bytes into a session (runtime/onnx's Env.Loader).
type Loader func(model []byte) (runtime.Session, error)

// Open reads the model file again, re-verifies it (the bytes checked are the
// bytes run), loads it and checks its inputs and outputs against the manifest.
func (m *Model) Open(load Loader) (runtime.Session, error) {
	data, err := os.ReadFile(m.Path)
	if err != nil {
		return nil, fmt.Errorf("models: open %s: %w", m.Name, err)
	}
	if err := m.verify(data); err != nil {
		return nil, fmt.Errorf("models: open %s: %w", m.Name, err)
	}
	s, err := load(data)
	if err != nil {
		return nil, fmt.Errorf("models: open %s: %w", m.Name, err)
	}
	if err := m.CheckIO(s); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// LoadModel loads the one model whose folder is dir (its manifest.json),
// wherever the folder is: a package being installed is checked this way
// before it is swapped in.
func LoadModel(dir string) (*Model, error) {
	return loadModel(dir, filepath.Join(dir, ManifestFile))
}

// Dir is the directory the registry was loaded from.
func (r *Registry) Dir() string { return r.dir }

// Get returns the model called name.
func (r *Registry) Get(name string) (*Model, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if m, ok := r.models[name]; ok {
		return m, nil
	}
	names := make([]string, 0, len(r.models))
	for n := range r.models {
		names = append(names, n)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("%w %q (loaded: %s)", ErrUnknownModel, name, strings.Join(names, ", "))
}

// Models lists the loaded models sorted by name.
func (r *Registry) Models() []*Model {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Model, 0, len(r.models))
	for _, m := range r.models {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Problems lists the folders that were refused and why.
func (r *Registry) Problems() []Problem { return r.problems }
