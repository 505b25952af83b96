package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	gosync "sync"
	"time"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/models/pkg"
	osync "github.com/outpost-edge/outpost/sync"
)

// Shelf holds the model packages published to devices, in a directory:
// <offer id>.opkg (the package as signed by the program) and
// <offer id>.json (the offer and who it is for). `outpost collect models
// publish` adds to it, also while a collector runs: the collector rereads
// the directory when it changes.
type Shelf struct {
	dir string

	mu    gosync.Mutex
	stamp time.Time
	items map[string]*Published
}

// Published is one package on the shelf.
type Published struct {
	Offer     *osync.Offer `json:"offer"`
	To        []string     `json:"to"` // device IDs, registry regions, or "all"
	Published time.Time    `json:"published"`
}

// OpenShelf opens (creating) a shelf directory.
func OpenShelf(dir string) (*Shelf, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("hub: packages dir: %w", err)
	}
	s := &Shelf{dir: dir}
	return s, s.reload()
}

func (s *Shelf) reload() error {
	fi, err := os.Stat(s.dir)
	if err != nil {
		return fmt.Errorf("hub: packages dir: %w", err)
	}
	if s.items != nil && fi.ModTime().Equal(s.stamp) {
		return nil
	}
	items := map[string]*Published{}
	files, _ := filepath.Glob(filepath.Join(s.dir, "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var p Published
		if err := json.Unmarshal(b, &p); err != nil || p.Offer == nil {
			return fmt.Errorf("hub: package %s: %v", f, err)
		}
		items[p.Offer.ID] = &p
	}
	s.items, s.stamp = items, fi.ModTime()
	return nil
}

// Publish puts a package on the shelf for the given targets. The package
// is described, not verified: the hub does not hold the program's keys;
// devices verify.
func (s *Shelf) Publish(data []byte, to []string, chunk int) (*Published, error) {
	m, meta, sig, err := pkg.Peek(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if len(to) == 0 {
		return nil, fmt.Errorf("hub: publish %s: no targets (device IDs, regions or \"all\")", m.Name)
	}
	o := osync.NewOffer(data, m.Name, m.Version, m.Seq, m.Rollback, meta, sig, chunk)
	p := &Published{Offer: o, To: to, Published: time.Now().UTC()}
	if err := atomicfile.WriteBytes(filepath.Join(s.dir, o.ID+".opkg"), data, 0o640); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	if err := atomicfile.WriteBytes(filepath.Join(s.dir, o.ID+".json"), b, 0o640); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.items = nil
	s.mu.Unlock()
	return p, nil
}

// List returns what is on the shelf, newest first.
func (s *Shelf) List() ([]*Published, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.reload(); err != nil {
		return nil, err
	}
	var out []*Published
	for _, p := range s.items {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Published.After(out[j].Published) })
	return out, nil
}

func (p *Published) targets(device, region string) bool {
	return slices.ContainsFunc(p.To, func(t string) bool {
		return t == "all" || t == device || (region != "" && strings.EqualFold(t, region))
	})
}

// For picks the offer a device should get now, from its status: the
// newest package for a model it has, targeted at it, with a sequence
// number above the installed one (or a signed rollback to another), and
// not one it is already handling or has refused.
func (s *Shelf) For(device, region string, st *osync.Status) *osync.Offer {
	list, err := s.List()
	if err != nil || st == nil {
		return nil
	}
	for _, p := range list {
		o := p.Offer
		have, ok := st.Models[o.Model]
		switch {
		case !ok || !p.targets(device, region):
			continue
		case o.Seq <= have: // floors only rise: a rollback comes under a higher seq
			continue
		case st.Update != nil && st.Update.Offer == o.ID:
			// Downloading, installing, installed, refused or rolled back:
			// the device knows this offer; saying it again costs bytes.
			return nil
		}
		return o
	}
	return nil
}

// Chunk reads chunk i of a published package for device.
func (s *Shelf) Chunk(id, device, region string, i int) ([]byte, error) {
	s.mu.Lock()
	err := s.reload()
	p := s.items[id]
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if p == nil || !p.targets(device, region) {
		return nil, fmt.Errorf("no package %s published for %s", id, device)
	}
	if i < 0 || i >= p.Offer.NumChunks() {
		return nil, fmt.Errorf("package %s has no chunk %d (%d chunks)", id, i, p.Offer.NumChunks())
	}
	f, err := os.Open(filepath.Join(s.dir, id+".opkg"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, p.Offer.ChunkLen(i))
	if _, err := f.ReadAt(b, int64(i)*int64(p.Offer.ChunkSize)); err != nil {
		return nil, fmt.Errorf("package %s chunk %d: %w", id, i, err)
	}
	return b, nil
}
