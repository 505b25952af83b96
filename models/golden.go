package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
)

// GoldenFile lists a model folder's golden inputs with the outputs the
// packaged model gave for them (`outpost models pack --golden`). A device
// runs them on the new model, in a fresh session, before swapping it in:
// the health check.
const GoldenFile = "golden.json"

// Golden is golden.json.
type Golden struct {
	// Tolerance is the largest difference allowed in any number of an
	// output (scores, times); strings and booleans must be equal.
	Tolerance float64      `json:"tolerance"`
	Cases     []GoldenCase `json:"cases"`
}

// GoldenCase is one input of one model (by manifest name).
type GoldenCase struct {
	Model  string          `json:"model"`
	File   string          `json:"file"` // in the model folder
	Lang   string          `json:"lang,omitempty"`
	Output json.RawMessage `json:"output"`
}

// ErrHealth: a model gave other answers than its golden outputs.
var ErrHealth = errors.New("health check failed")

// ReadGolden reads dir's golden.json; (nil, nil) when there is none.
func ReadGolden(dir string) (*Golden, error) {
	b, err := os.ReadFile(filepath.Join(dir, GoldenFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var g Golden
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("%s: %w", GoldenFile, err)
	}
	if g.Tolerance <= 0 {
		g.Tolerance = 0.02
	}
	return &g, nil
}

// GoldenOutput runs p on file and returns its output as stored in
// golden.json.
func GoldenOutput(ctx context.Context, p Pipeline, file string) (json.RawMessage, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	res, err := p.Infer(ctx, Input{Name: filepath.Base(file), Data: data})
	if err != nil {
		return nil, err
	}
	return json.Marshal(res.Output)
}

// Check runs every case of model name through p (opened on the folder
// dir) and compares with the golden output.
func (g *Golden) Check(ctx context.Context, dir, name string, p func(lang string) (Pipeline, error)) (int, error) {
	n := 0
	for _, c := range g.Cases {
		if c.Model != name {
			continue
		}
		pl, err := p(c.Lang)
		if err != nil {
			return n, err
		}
		got, err := GoldenOutput(ctx, pl, filepath.Join(dir, filepath.Base(c.File)))
		if err != nil {
			return n, fmt.Errorf("%w: %s on %s: %v", ErrHealth, name, c.File, err)
		}
		var want, have any
		if err := json.Unmarshal(c.Output, &want); err != nil {
			return n, fmt.Errorf("%s: case %s: %w", GoldenFile, c.File, err)
		}
		json.Unmarshal(got, &have)
		if path, ok := near(want, have, g.Tolerance, "result"); !ok {
			return n, fmt.Errorf("%w: %s on %s: %s differs from the golden output", ErrHealth, name, c.File, path)
		}
		n++
	}
	return n, nil
}

// near compares decoded JSON values: numbers within tol, the rest equal.
// It returns where the first difference is.
func near(a, b any, tol float64, at string) (string, bool) {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return at, ok && math.Abs(x-y) <= tol
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return at, false
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if p, ok := near(x[k], y[k], tol, at+"."+k); !ok {
				return p, false
			}
		}
		return at, true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return at, false
		}
		for i := range x {
			if p, ok := near(x[i], y[i], tol, fmt.Sprintf("%s[%d]", at, i)); !ok {
				return p, false
			}
		}
		return at, true
	default:
		return at, a == b
	}
}

// LoadFolder loads every manifest of one model folder (manifest.json and
// manifest-*.json variants), as LoadDir would.
func LoadFolder(dir string) ([]*Model, error) {
	mans, _ := filepath.Glob(filepath.Join(dir, "manifest-*.json"))
	if _, err := os.Stat(filepath.Join(dir, ManifestFile)); err == nil {
		mans = append([]string{filepath.Join(dir, ManifestFile)}, mans...)
	}
	if len(mans) == 0 {
		return nil, fmt.Errorf("models: %s has no %s", dir, ManifestFile)
	}
	var out []*Model
	for _, man := range mans {
		m, err := loadModel(dir, man)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(man), err)
		}
		out = append(out, m)
	}
	return out, nil
}

// Replace swaps in the models of one folder: every model previously
// loaded from the folder named like dir is dropped, the given ones added.
// It returns the names that were replaced or removed.
func (r *Registry) Replace(dir string, ms []*Model) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var gone []string
	for name, m := range r.models {
		if filepath.Base(m.Dir) == filepath.Base(dir) {
			delete(r.models, name)
			gone = append(gone, name)
		}
	}
	for _, m := range ms {
		r.models[m.Name] = m
	}
	return gone
}
