package device

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	gosync "sync"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
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

// maxReviewsFile bounds reviews.json (maxReviews of at most a few KiB).
const maxReviewsFile = 8 << 20

// openReviews loads reviews.json; a damaged one is moved aside and the
// error (wrapping safefile.ErrDamaged) is only logged by the caller: a
// torn file stopped the daemon from starting before.
func openReviews(dataDir string) (*reviewStore, error) {
	s := &reviewStore{path: filepath.Join(dataDir, ReviewsFile)}
	if err := safefile.LoadJSON(s.path, maxReviewsFile, &s.list); err != nil {
		s.list = nil
		return s, fmt.Errorf("reviews: %w", err)
	}
	if len(s.list) > maxReviews {
		s.list = s.list[len(s.list)-maxReviews:]
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
