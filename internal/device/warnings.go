package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	gosync "sync"
	"time"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
	osync "github.com/outpost-edge/outpost/sync"
)

// WarningsFile keeps the regional warnings this device received, in the
// data dir (written whole, atomically; expired ones are dropped).
const WarningsFile = "warnings.json"

const (
	maxWarnings     = 64
	maxWarningsFile = 4 << 20
)

// Why a warning is refused (besides a bad signature: sync refuses those).
var (
	ErrWarningExpired = errors.New("warning: expired")
	ErrWarningRegion  = errors.New("warning: for another region")
)

type warningStore struct {
	path string
	mu   gosync.Mutex
	list []osync.Warning
}

func openWarnings(dataDir string) (*warningStore, error) {
	s := &warningStore{path: filepath.Join(dataDir, WarningsFile)}
	if err := safefile.LoadJSON(s.path, maxWarningsFile, &s.list); err != nil {
		s.list = nil
		return s, fmt.Errorf("warnings: %w", err)
	}
	return s, nil
}

// add stores w durably when it is for region (any, when the device has
// none configured: the hub chose it by its registry and signed it for this
// device) and still in force at now; the same ID again is a duplicate.
func (s *warningStore) add(w *osync.Warning, region string, now time.Time) error {
	if region != "" && !strings.EqualFold(w.Region, region) {
		return fmt.Errorf("%w: %q, this device is in %q", ErrWarningRegion, w.Region, region)
	}
	if !now.Before(w.Until) {
		return fmt.Errorf("%w: %s", ErrWarningExpired, w.Until.Format(time.RFC3339))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var keep []osync.Warning
	for _, x := range s.list {
		if x.ID == w.ID {
			return osync.ErrDuplicate
		}
		if now.Before(x.Until) {
			keep = append(keep, x)
		}
	}
	keep = append(keep, *w)
	sort.SliceStable(keep, func(i, j int) bool { return keep[i].Issued.After(keep[j].Issued) })
	if len(keep) > maxWarnings {
		keep = keep[:maxWarnings]
	}
	b, _ := json.Marshal(keep)
	if err := atomicfile.WriteBytes(s.path, b, 0o640); err != nil {
		return err
	}
	s.list = keep
	return nil
}

// active lists the warnings in force at now, newest first.
func (s *warningStore) active(now time.Time) []osync.Warning {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []osync.Warning
	for _, w := range s.list {
		if w.Active(now) {
			out = append(out, w)
		}
	}
	return out
}

// Warnings lists the regional warnings in force now, newest first.
func (d *Device) Warnings() []osync.Warning {
	if d.warnings == nil {
		return nil
	}
	return d.warnings.active(d.now())
}

// storeWarning is the one way a warning gets in, over MQTT or on a stick.
func (d *Device) storeWarning(w *osync.Warning) error {
	err := d.warnings.add(w, d.cfg.Region, d.now())
	if err == nil {
		d.log.Info("regional warning received", "region", w.Region, "disease", w.Disease, "until", w.Until)
	}
	return err
}

func (d *Device) now() time.Time { return time.Now() }

// receiptWarnings stores the warnings a bundle receipt carried. Each is
// checked as over MQTT: signed for this device by a pinned hub key (none
// pinned: none taken), in its region, in force, not seen before.
func (d *Device) receiptWarnings(r *osync.Receipt) {
	if len(r.Warnings) == 0 || d.warnings == nil {
		return
	}
	keys := d.cfg.PinnedHubKeys()
	if len(keys) == 0 {
		d.log.Warn("warnings on the stick ignored: this device pins no hub key (hub_keys)", "warnings", len(r.Warnings))
		return
	}
	for _, msg := range r.Warnings {
		w, err := osync.DecodeWarning(msg, d.cfg.DeviceID, keys)
		if err == nil {
			err = d.storeWarning(w)
		}
		if err != nil && !errors.Is(err, osync.ErrDuplicate) {
			d.log.Warn("warning on the stick refused", "err", err)
		}
	}
}
