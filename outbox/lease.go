package outbox

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// LeaseOptions narrow what Lease hands out.
type LeaseOptions struct {
	Max      int // records; <= 0 means 100
	MaxBytes int // encoded bytes; <= 0 means no limit (at least one record is always returned)
	// MaxTier: only records with Tier <= MaxTier (TierLabels: labels only).
	MaxTier Tier
	// MinTier: only records with Tier >= MinTier (TierEvidence: evidence only).
	MinTier Tier
	// MaxPriority: only records at least this urgent (Alert: alerts only, Bulk: all).
	MaxPriority Priority
}

// Lease hands out up to n records (at most maxBytes encoded, but always at
// least one if any is available) in delivery order: priority, then age.
// Leased records are skipped by later Leases until acked, released, or the
// lease times out — so a crashed or stalled uplink never loses them.
func (o *Outbox) Lease(n, maxBytes int) ([]*Record, error) {
	return o.LeaseWith(LeaseOptions{Max: n, MaxBytes: maxBytes, MaxTier: TierEvidence, MaxPriority: Bulk})
}

// LeaseWith is Lease with filters (tier, priority) for budgeted uplinks.
func (o *Outbox) LeaseWith(lo LeaseOptions) ([]*Record, error) {
	if lo.Max <= 0 {
		lo.Max = 100
	}
	now := o.opts.Now()
	o.mu.RLock()
	defer o.mu.RUnlock()
	o.leaseMu.Lock()
	defer o.leaseMu.Unlock()
	var out []*Record
	total := 0
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bRecords).Cursor()
		for k, v := c.First(); k != nil && len(out) < lo.Max; k, v = c.Next() {
			if Priority(k[0]) > lo.MaxPriority {
				break // keys are priority-ordered: nothing further qualifies
			}
			var id ID
			copy(id[:], k[1:])
			if exp, ok := o.leases[id]; ok && exp.After(now) {
				continue
			}
			if lo.MaxBytes > 0 && len(out) > 0 && total+len(v) > lo.MaxBytes {
				break
			}
			r, err := DecodeRecord(v)
			if err != nil {
				// Should not happen (bbolt checksums pages); skip rather than
				// wedge the uplink forever, and say so.
				o.log.Error("outbox: undecodable record skipped", "id", id.String(), "err", err)
				continue
			}
			if r.Tier > lo.MaxTier || r.Tier < lo.MinTier {
				continue
			}
			out = append(out, r)
			total += len(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: lease: %w", err)
	}
	exp := now.Add(o.opts.LeaseTimeout)
	for _, r := range out {
		o.leases[r.ID] = exp
	}
	return out, nil
}

// Release returns leased records to the queue before their lease times out.
func (o *Outbox) Release(ids []ID) { o.forgetLeases(ids) }

// Defer keeps records out of Lease until the given time: the hub refused
// them and asked, in effect, to be asked again later. Like leases, it lives
// in memory only; a restart makes them eligible again at once.
func (o *Outbox) Defer(ids []ID, until time.Time) {
	o.leaseMu.Lock()
	for _, id := range ids {
		o.leases[id] = until
	}
	o.leaseMu.Unlock()
}

func (o *Outbox) forgetLeases(ids []ID) {
	o.leaseMu.Lock()
	for _, id := range ids {
		delete(o.leases, id)
	}
	o.leaseMu.Unlock()
}

// Ack deletes records the hub has durably stored and returns how many were
// present. Unknown IDs (already acked, evicted, expired) are not an error:
// acks may be redelivered.
func (o *Outbox) Ack(ids []ID) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	n := 0
	o.mu.RLock()
	err := o.db.Update(func(tx *bolt.Tx) error {
		n = 0
		m := newMeta(tx)
		recs := tx.Bucket(bRecords)
		for _, id := range ids {
			key, ok := findKey(recs, id)
			if !ok {
				continue
			}
			if err := o.deleteKey(tx, m, key); err != nil {
				return err
			}
			n++
		}
		m.add(mAcked, int64(n))
		if n > 0 {
			m.set(mLastAck, uint64(o.opts.Now().UnixMilli()))
		}
		return m.flush()
	})
	o.mu.RUnlock()
	if err != nil {
		return 0, fmt.Errorf("outbox: ack %d ids: %w", len(ids), err)
	}
	o.forgetLeases(ids)
	return n, nil
}

// Expire deletes records older than their priority's TTL (by ID time) and
// returns how many. The daemon calls it periodically; it is cheap when
// nothing has expired because keys are age-ordered within a priority.
func (o *Outbox) Expire(now time.Time) (int, error) {
	var gone []ID
	boot, mono := o.opts.Clock()
	o.mu.RLock()
	err := o.db.Update(func(tx *bolt.Tx) error {
		gone = gone[:0]
		m := newMeta(tx)
		c := tx.Bucket(bRecords).Cursor()
		for p := Priority(0); p < NumPriorities; p++ {
			ttl := o.opts.TTL[p]
			if ttl <= 0 {
				continue
			}
			// Every record of the priority is looked at: after a wall-clock
			// jump, ID order is not age order, and only the boot clock says
			// how old a record is (a +40-day jump must not expire a thing).
			var keys [][]byte
			for k, v := c.Seek([]byte{byte(p)}); k != nil && k[0] == byte(p); k, v = c.Next() {
				r, err := DecodeRecord(v)
				if err != nil || age(r, now, boot, mono) <= ttl {
					continue
				}
				keys = append(keys, append([]byte(nil), k...))
				gone = append(gone, r.ID)
			}
			for _, k := range keys {
				if err := o.deleteKey(tx, m, k); err != nil {
					return err
				}
			}
			m.add(expiredKey(p), int64(len(keys)))
		}
		return m.flush()
	})
	o.mu.RUnlock()
	if err != nil {
		return 0, fmt.Errorf("outbox: expire: %w", err)
	}
	if len(gone) > 0 {
		o.forgetLeases(gone)
		o.log.Warn("outbox: expired records past their TTL", "count", len(gone))
	}
	return len(gone), nil
}
