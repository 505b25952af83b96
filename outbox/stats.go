package outbox

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// PriorityStats are one priority's figures.
type PriorityStats struct {
	Count   int64         `json:"count"`
	Bytes   int64         `json:"bytes"`
	Oldest  time.Time     `json:"oldest,omitzero"`
	Age     time.Duration `json:"oldest_age_ns"`
	Evicted int64         `json:"evicted"`
	Expired int64         `json:"expired"`
}

// Stats describe the outbox. Counters survive restarts exactly: they are
// written in the same transactions as the data.
type Stats struct {
	Count         int64         `json:"count"`
	Bytes         int64         `json:"bytes"`
	EvidenceBytes int64         `json:"evidence_bytes"`
	Leased        int           `json:"leased"`
	OldestAge     time.Duration `json:"oldest_age_ns"`
	Appended      int64         `json:"appended_total"`
	Acked         int64         `json:"acked_total"`
	LastAck       time.Time     `json:"last_ack,omitzero"` // when the hub last acknowledged records (persisted)
	Evicted       int64         `json:"evicted_total"`
	Expired       int64         `json:"expired_total"`
	// Refused: appends refused because a cap was reached (counted on disk)
	// or the disk was full (counted since this process started).
	Refused    int64                    `json:"refused_total"`
	LastSeq    uint64                   `json:"last_seq"`
	FileBytes  int64                    `json:"file_bytes"`
	Priorities map[string]PriorityStats `json:"priorities"`
	MaxBytes   int64                    `json:"max_bytes"`
	MaxRecords int64                    `json:"max_records"`
	Policy     Policy                   `json:"policy"`
	// Commits and AvgBatch: group commits by this process and records per commit.
	Commits  int64   `json:"commits"`
	AvgBatch float64 `json:"avg_batch"`
}

// Stats reads the counters and the oldest record of each priority.
func (o *Outbox) Stats() (Stats, error) {
	now := o.opts.Now()
	boot, mono := o.opts.Clock()
	s := Stats{Priorities: map[string]PriorityStats{}, MaxBytes: o.opts.MaxBytes, MaxRecords: o.opts.MaxRecords, Policy: o.opts.Policy}
	o.mu.RLock()
	defer o.mu.RUnlock()
	err := o.db.View(func(tx *bolt.Tx) error {
		m := newMeta(tx)
		c := tx.Bucket(bRecords).Cursor()
		for p := Priority(0); p < NumPriorities; p++ {
			ps := PriorityStats{Count: int64(m.get(countKey(p))), Bytes: int64(m.get(bytesKey(p))),
				Evicted: int64(m.get(evictedKey(p))), Expired: int64(m.get(expiredKey(p)))}
			if k, v := c.Seek([]byte{byte(p)}); k != nil && k[0] == byte(p) {
				// The first in delivery order; its age by the boot clock
				// (a wall-clock jump does not make it new or ancient).
				if r, err := DecodeRecord(v); err == nil {
					ps.Oldest = r.Created.UTC()
					ps.Age = age(r, now, boot, mono)
					s.OldestAge = max(s.OldestAge, ps.Age)
				}
			}
			s.Count += ps.Count
			s.Bytes += ps.Bytes
			s.Evicted += ps.Evicted
			s.Expired += ps.Expired
			s.Priorities[p.String()] = ps
		}
		s.EvidenceBytes = int64(m.get(mEvBytes))
		s.Appended, s.Acked = int64(m.get(mAppended)), int64(m.get(mAcked))
		s.Refused = int64(m.get(mRefused)) + o.refusedDiskFull.Load()
		if ms := m.get(mLastAck); ms > 0 {
			s.LastAck = time.UnixMilli(int64(ms)).UTC()
		}
		s.LastSeq = m.get(mSeq)
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("outbox: stats: %w", err)
	}
	o.leaseMu.Lock()
	for _, exp := range o.leases {
		if exp.After(now) {
			s.Leased++
		}
	}
	o.leaseMu.Unlock()
	s.FileBytes = o.fileSize()
	if s.Commits = o.commits.Load(); s.Commits > 0 {
		s.AvgBatch = float64(o.committed.Load()) / float64(s.Commits)
	}
	return s, nil
}

// Get returns one record.
func (o *Outbox) Get(id ID) (*Record, error) {
	var r *Record
	o.mu.RLock()
	defer o.mu.RUnlock()
	err := o.db.View(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bRecords)
		k, ok := findKey(recs, id)
		if !ok {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		v := recs.Get(k)
		var err error
		r, err = DecodeRecord(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: get: %w", err)
	}
	return r, nil
}

// Evidence returns the raw evidence stored with a record (nil if none).
func (o *Outbox) Evidence(id ID) ([]byte, error) {
	var b []byte
	o.mu.RLock()
	defer o.mu.RUnlock()
	err := o.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bEvidence).Get(id[:]); v != nil {
			b = append([]byte(nil), v...)
		}
		return nil
	})
	return b, err
}

// Each calls fn for every record in delivery order (priority, then age).
// fn must not call other Outbox methods that write.
func (o *Outbox) Each(fn func(*Record) error) error {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bRecords).ForEach(func(k, v []byte) error {
			r, err := DecodeRecord(v)
			if err != nil {
				return fmt.Errorf("outbox: record %x: %w", k[1:], err)
			}
			return fn(r)
		})
	})
}
