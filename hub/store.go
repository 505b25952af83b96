// Package hub is the hub side of outpost: the Collector that stores what
// devices send (idempotently, acknowledging only after a commit), the Store
// it keeps results in, exports and the device view. Device packages never
// import it; it speaks to devices only through sync's wire format.
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// Store keeps results by (device, record ID) and what the hub knows of
// each device. Implementations: BoltStore (embedded, one machine); the
// PostgreSQL one comes next behind the same interface.
type Store interface {
	// Commit stores every record of the batches not already present and
	// updates each device's counters and last seen, in one durable
	// transaction. It returns, per batch, how many records were new and
	// how many it had already. On error nothing is stored.
	Commit(ctx context.Context, batches []*osync.Batch, received time.Time) ([]Counts, error)
	// UpdateDevice reads, changes and writes one device's view atomically.
	// f returning errSkip leaves it unchanged.
	UpdateDevice(ctx context.Context, device string, f func(*DeviceStatus) error) error
	// Devices lists the device view.
	Devices(ctx context.Context) ([]DeviceStatus, error)
	// DeviceKeys returns the enrolled key ("ed25519:…") of each of devices
	// that has one, in one read (the collector checks a commit group's
	// signers at once).
	DeviceKeys(ctx context.Context, devices []string) (map[string]string, error)
	// Each calls fn for every stored result, by device then ID.
	Each(ctx context.Context, fn func(StoredResult) error) error
	// Count is the number of stored results.
	Count(ctx context.Context) (int, error)
	// DailyCounts are the diagnoses (CountedLabel) received per UTC day, device,
	// model and label since the day of since: kept as each commit stores
	// its results, so the hub page never scans every result.
	DailyCounts(ctx context.Context, since time.Time) ([]DeviceDayCount, error)
	// Recent is the newest results matching f, newest first, read through
	// a received-time index (bounded by f.Limit and the time range).
	Recent(ctx context.Context, f ResultFilter) ([]StoredResult, error)
	// PutEvidence adds one uploaded chunk of a device's evidence (by the
	// evidence record's ID) following applyChunk's rule, durably, and
	// returns the state after it.
	PutEvidence(ctx context.Context, device string, c *osync.EvidenceChunk, received time.Time) (EvidenceInfo, error)
	// Evidence returns the complete evidence of result `of`, or nil.
	Evidence(ctx context.Context, device string, of outbox.ID) (*EvidenceInfo, []byte, error)
	// EvidenceList lists complete evidence (for review).
	EvidenceList(ctx context.Context) ([]EvidenceInfo, error)
	// Result returns one stored result, or nil.
	Result(ctx context.Context, device string, id outbox.ID) (*StoredResult, error)
	// PutReview stores a review (ErrReviewed if the result has one).
	PutReview(ctx context.Context, r *osync.Review) error
	// ReviewOf returns the review of a result, or nil.
	ReviewOf(ctx context.Context, device string, of outbox.ID) (*StoredReview, error)
	// Reviews lists reviews of one device ("" all), only undelivered ones
	// when asked, oldest first.
	Reviews(ctx context.Context, device string, undelivered bool) ([]StoredReview, error)
	// MarkDelivered records the device's receipt of a review.
	MarkDelivered(ctx context.Context, device string, of outbox.ID) error
	// PutWarning stores a regional warning; the same ID replaces it (an
	// edit), keeping who confirmed it.
	PutWarning(ctx context.Context, w *osync.Warning) error
	// Warnings lists the warnings still in force at `at` (Until after
	// it; the zero time: all), newest first, each with the devices that
	// confirmed it.
	Warnings(ctx context.Context, at time.Time) ([]StoredWarning, error)
	// MarkWarningDelivered records device's receipt of warning id.
	MarkWarningDelivered(ctx context.Context, id outbox.ID, device string, at time.Time) error
	// ClientID is this hub's MQTT client id: made once, then kept.
	ClientID(ctx context.Context) (string, error)
	Close() error
}

// DeviceDayCount is one (day, device, model, label) aggregate.
type DeviceDayCount struct {
	Day                  string // UTC date of receipt, 2006-01-02
	Device, Model, Label string
	Count                int64
}

// Counts are one batch's outcome in a Commit. Conflicts names records
// whose ID the store already holds with other bytes (a copy someone else
// published first): they are neither stored nor acknowledged as stored,
// so the device keeps its own (Collector: refusal code "conflict").
type Counts struct {
	New, Duplicate int64
	Conflicts      map[outbox.ID]bool
}

// conflict marks id in c.
func (c *Counts) conflict(id outbox.ID) {
	if c.Conflicts == nil {
		c.Conflicts = map[outbox.ID]bool{}
	}
	c.Conflicts[id] = true
}

// ErrSkip, returned by an UpdateDevice callback, leaves the device unchanged.
var ErrSkip = errors.New("hub: skip update")

// ErrLocked: the store is open in another process (a running collector);
// the embedded bbolt store allows one at a time.
var ErrLocked = errors.New("hub: store in use by another process")

// DeviceStatus is what the hub knows about one device.
type DeviceStatus struct {
	Device      string    `json:"device"`
	LastSeen    time.Time `json:"last_seen"`
	State       string    `json:"state,omitempty"` // from the device's retained status: online/offline
	Backlog     int64     `json:"backlog"`         // device's queue depth at its last status
	ClockOffset int64     `json:"clock_offset_ms"` // hub receive time − device send time (includes transit)
	Stored      int64     `json:"stored"`
	Duplicates  int64     `json:"duplicates"`
	Version     string    `json:"version,omitempty"`
	StatusTime  time.Time `json:"status_time,omitzero"` // device clock of the newest status applied
	LastSync    time.Time `json:"last_sync,omitzero"`   // device's last acknowledged sync, by its clock
	// What the device lost by policy, as its last status said (totals).
	Evicted int64 `json:"evicted_total"`
	Expired int64 `json:"expired_total"`
	Refused int64 `json:"refused_total"` // results the device could not store (queue full)
	// Installed models (name → package seq) and the latest model update.
	Models map[string]int64    `json:"models,omitempty"`
	Update *osync.UpdateStatus `json:"update,omitempty"`
	// Boots anchors the device's recent boots to hub time: when each began
	// (hub receive time − the boot clock in a live status; the earliest
	// estimate kept, the one with the least transit). Record times are
	// corrected with them (CorrectedTime).
	Boots      map[string]time.Time `json:"boots,omitempty"`
	ClockJumps int                  `json:"clock_jumps,omitempty"`
	// Key is the device key its batches and bundles are signed with
	// ("ed25519:…"), enrolled on first contact or by `collect enroll`;
	// KeyFingerprint names it for a person to compare with the device's.
	Key            string    `json:"key,omitempty"`
	KeyFingerprint string    `json:"key_fingerprint,omitempty"`
	Enrolled       time.Time `json:"enrolled,omitzero"`
}

// maxBoots bounds DeviceStatus.Boots.
const maxBoots = 16

// CorrectedTime is when r was made by the hub's clock: its boot's start as
// the hub saw it plus the boot clock, when the hub has seen that boot
// (trusted); else the device's wall clock as it was (not trusted).
func (d *DeviceStatus) CorrectedTime(r *outbox.Record) (time.Time, bool) {
	if d != nil && r.Boot != (outbox.ID{}) {
		if start, ok := d.Boots[r.Boot.String()]; ok {
			return start.Add(r.Mono).UTC(), true
		}
	}
	return r.Created, false
}

// StoredWarning is a warning as the hub keeps it.
type StoredWarning struct {
	osync.Warning
	Delivered map[string]time.Time `json:"delivered"` // device -> when it confirmed
}

// StoredResult is one record as the hub keeps it.
type StoredResult struct {
	Received time.Time
	Record   *outbox.Record
	// Set by exports: the record's time by the hub's clock, and whether
	// the hub could correct it (it has seen the record's boot).
	Corrected time.Time
	Trusted   bool
}

// MarshalJSON flattens the record and adds "received".
func (s StoredResult) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(s.Record)
	if err != nil {
		return nil, err
	}
	rcv, _ := json.Marshal(s.Received)
	head := append([]byte(`{"received":`), rcv...)
	if !s.Corrected.IsZero() {
		corr, _ := json.Marshal(s.Corrected)
		head = append(append(append(head, `,"created_corrected":`...), corr...), fmt.Sprintf(`,"time_trusted":%t`, s.Trusted)...)
	}
	return append(append(head, ','), b[1:]...), nil
}
