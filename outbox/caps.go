package outbox

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// makeRoom checks the caps for a new record of size bytes and, under
// drop-lowest, evicts the lowest-priority oldest records to fit. It finds
// every victim before deleting any, so a failed attempt changes nothing.
func (o *Outbox) makeRoom(tx *bolt.Tx, m *meta, r *appendReq, size int64) error {
	count, bytes := m.total(countKey), m.total(bytesKey)
	evBytes := int64(m.get(mEvBytes))
	evNeed := int64(len(r.evidence))
	needCount := count + 1 - o.opts.MaxRecords
	needBytes := bytes + size - o.opts.MaxBytes
	needEv := evBytes + evNeed - o.opts.EvidenceMaxBytes
	if needCount <= 0 && needBytes <= 0 && needEv <= 0 {
		return nil
	}
	full := func() error {
		return fmt.Errorf("%w: %d records, %d bytes, %d evidence bytes (caps %d, %d, %d); policy %s",
			ErrFull, count, bytes, evBytes, o.opts.MaxRecords, o.opts.MaxBytes, o.opts.EvidenceMaxBytes, o.opts.Policy)
	}
	if o.opts.Policy != PolicyDropLowest {
		return full()
	}
	type victim struct {
		key  []byte
		size int64
		ev   int64
	}
	var victims []victim
	recs, evs := tx.Bucket(bRecords), tx.Bucket(bEvidence)
	// Least urgent first; within a priority, oldest first. Never evict a
	// record more urgent than the newcomer.
	for p := Priority(NumPriorities - 1); p >= r.rec.Priority && p < NumPriorities; p-- {
		c := recs.Cursor()
		for k, v := c.Seek([]byte{byte(p)}); k != nil && k[0] == byte(p); k, v = c.Next() {
			if needCount <= 0 && needBytes <= 0 && needEv <= 0 {
				break
			}
			ev := int64(len(evs.Get(k[1:])))
			vs := int64(len(k) + len(v))
			victims = append(victims, victim{append([]byte(nil), k...), vs, ev})
			needCount--
			needBytes -= vs
			needEv -= ev
		}
		if p == 0 {
			break
		}
	}
	if needCount > 0 || needBytes > 0 || needEv > 0 {
		return full()
	}
	for _, v := range victims {
		if err := o.deleteKey(tx, m, v.key); err != nil {
			return err
		}
		m.add(evictedKey(Priority(v.key[0])), 1)
		var id ID
		copy(id[:], v.key[1:])
		r.evicted = append(r.evicted, id)
	}
	return nil
}

// deleteKey removes one record (by records-bucket key) with its index entry,
// evidence and counters.
func (o *Outbox) deleteKey(tx *bolt.Tx, m *meta, key []byte) error {
	recs := tx.Bucket(bRecords)
	v := recs.Get(key)
	if v == nil {
		return nil
	}
	p := Priority(key[0])
	size := int64(len(key) + len(v))
	id := key[1:]
	evs := tx.Bucket(bEvidence)
	if ev := evs.Get(id); ev != nil {
		m.add(mEvBytes, -int64(len(ev)))
		if err := evs.Delete(id); err != nil {
			return err
		}
	}
	if err := recs.Delete(key); err != nil {
		return err
	}
	m.add(countKey(p), -1)
	m.add(bytesKey(p), -size)
	return m.err
}
