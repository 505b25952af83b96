package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	gosync "sync"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// ReviewsFile keeps the experts' reviews this device received, in the data
// dir (written whole, atomically; the newest maxReviews).
const ReviewsFile = "reviews.json"

const maxReviews = 1000

type reviewStore struct {
	path string
	mu   gosync.Mutex
	list []osync.Review
}

func openReviews(dataDir string) (*reviewStore, error) {
	s := &reviewStore{path: filepath.Join(dataDir, ReviewsFile)}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reviews: %w", err)
	}
	if err := json.Unmarshal(b, &s.list); err != nil {
		return nil, fmt.Errorf("reviews %s: %w", s.path, err)
	}
	return s, nil
}

// add stores r durably; a second review of the same result is a duplicate.
func (s *reviewStore) add(r *osync.Review) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.list {
		if x.Of == r.Of {
			return osync.ErrDuplicate
		}
	}
	list := append(append([]osync.Review(nil), s.list...), *r)
	sort.SliceStable(list, func(i, j int) bool { return list[i].Time.Before(list[j].Time) })
	if len(list) > maxReviews {
		list = list[len(list)-maxReviews:]
	}
	b, _ := json.Marshal(list)
	if err := atomicfile.WriteBytes(s.path, b, 0o640); err != nil {
		return err
	}
	s.list = list
	return nil
}

func (s *reviewStore) all() []osync.Review {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]osync.Review(nil), s.list...)
}

// Reviews lists the reviews this device received, oldest first.
func (d *Device) Reviews() []osync.Review {
	if d.reviews == nil {
		return nil
	}
	return d.reviews.all()
}

// Review returns the review of result id, if any.
func (d *Device) Review(id outbox.ID) *osync.Review {
	for _, r := range d.Reviews() {
		if r.Of == id {
			return &r
		}
	}
	return nil
}
