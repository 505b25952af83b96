package outbox

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	gosync "sync"
	"time"
)

// ID is a result's unique, time-ordered identifier in UUIDv7 layout: 48 bits
// of Unix milliseconds, then a 12-bit counter (version nibble 7) and 62 random
// bits (variant 10). Byte order is creation order within a process.
type ID [16]byte

// String renders the canonical 8-4-4-4-12 form.
func (id ID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], id[10:16])
	return string(b[:])
}

// Time is the millisecond timestamp embedded in the ID.
func (id ID) Time() time.Time {
	ms := int64(binary.BigEndian.Uint64(append([]byte{0, 0}, id[0:6]...)))
	return time.UnixMilli(ms)
}

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseID parses the canonical form (hyphens optional).
func ParseID(s string) (ID, error) {
	var id ID
	clean := make([]byte, 0, 32)
	for i := 0; i < len(s); i++ {
		if s[i] != '-' {
			clean = append(clean, s[i])
		}
	}
	if len(clean) != 32 {
		return id, fmt.Errorf("outbox: id %q: want 32 hex digits", s)
	}
	if _, err := hex.Decode(id[:], clean); err != nil {
		return id, fmt.Errorf("outbox: id %q: %w", s, err)
	}
	return id, nil
}

// IDGen makes IDs that increase strictly within a process, even when the
// wall clock steps backwards (NTP after weeks offline, a dead RTC battery):
// it never goes below the last millisecond it used, and counts within one.
type IDGen struct {
	mu   gosync.Mutex
	last int64 // ms
	seq  uint16
	now  func() time.Time
}

// NewIDGen returns a generator on the system clock.
func NewIDGen() *IDGen { return &IDGen{now: time.Now} }

// New returns the next ID.
func (g *IDGen) New() ID {
	g.mu.Lock()
	ms := g.now().UnixMilli()
	if ms > g.last {
		g.last, g.seq = ms, 0
	} else {
		g.seq++
		if g.seq > 0x0fff { // 4096 IDs in one millisecond: borrow the next one
			g.last++
			g.seq = 0
		}
	}
	ms, seq := g.last, g.seq
	g.mu.Unlock()

	var id ID
	binary.BigEndian.PutUint16(id[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(id[2:6], uint32(ms))
	binary.BigEndian.PutUint16(id[6:8], 0x7000|seq)
	rand.Read(id[8:])
	id[8] = id[8]&0x3f | 0x80
	return id
}

// Observe makes later IDs sort after id: the outbox seeds its generator with
// the newest stored ID, so order holds across restarts even if the clock
// went backwards while the device was off.
func (g *IDGen) Observe(id ID) {
	ms := id.Time().UnixMilli()
	seq := binary.BigEndian.Uint16(id[6:8]) & 0x0fff
	g.mu.Lock()
	if ms > g.last || (ms == g.last && seq > g.seq) {
		g.last, g.seq = ms, seq
	}
	g.mu.Unlock()
}
