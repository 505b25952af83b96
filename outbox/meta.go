package outbox

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// Counters in the meta bucket, updated in the same transaction as the data
// they count, so stats are exact after any crash.
var (
	mSeq      = []byte("seq")      // last assigned Record.Seq
	mLastID   = []byte("last_id")  // newest ID ever appended (seeds IDGen)
	mAppended = []byte("appended") // records ever appended
	mAcked    = []byte("acked")    // records ever acked
	mLastAck  = []byte("last_ack") // unix ms of the last ack that deleted records
	mRefused  = []byte("refused")  // appends refused by a cap (ErrFull, ErrTooLarge)
	mEvBytes  = []byte("evidence_bytes")
)

func countKey(p Priority) []byte   { return []byte{'c', byte(p)} }
func bytesKey(p Priority) []byte   { return []byte{'b', byte(p)} }
func evictedKey(p Priority) []byte { return []byte{'e', byte(p)} }
func expiredKey(p Priority) []byte { return []byte{'x', byte(p)} }

type meta struct {
	b   *bolt.Bucket
	err error
}

func newMeta(tx *bolt.Tx) *meta { return &meta{b: tx.Bucket(bMeta)} }

func (m *meta) get(k []byte) uint64 {
	v := m.b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (m *meta) set(k []byte, v uint64) {
	if err := m.b.Put(k, putUint64(v)); err != nil && m.err == nil {
		m.err = err
	}
}

// add adjusts a counter, flooring at zero.
func (m *meta) add(k []byte, d int64) {
	v := int64(m.get(k)) + d
	if v < 0 {
		v = 0
	}
	m.set(k, uint64(v))
}

func (m *meta) raw(k []byte) []byte { return m.b.Get(k) }

func (m *meta) putRaw(k, v []byte) error { return m.b.Put(k, v) }

func (m *meta) total(key func(Priority) []byte) int64 {
	var t int64
	for p := Priority(0); p < NumPriorities; p++ {
		t += int64(m.get(key(p)))
	}
	return t
}
