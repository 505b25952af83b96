package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// precheck validates a bbolt file's meta pages and size before bbolt maps
// it. bbolt trusts the meta page: a file cut short (a half-copied backup,
// an SD card that lost its tail) makes it read past the end of the mapping
// and the process dies with SIGBUS/SIGSEGV, which recover() cannot catch.
// Seen on arm64: so check first, and treat a failure as corruption.
func precheck(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size == 0 {
		return nil // bbolt initialises an empty file
	}
	m0, err0 := readMeta(f, 0)
	pageSize := int64(os.Getpagesize())
	if err0 == nil {
		pageSize = int64(m0.pageSize)
	}
	m1, err1 := readMeta(f, pageSize)
	var m *boltMeta
	switch {
	case err0 == nil && err1 == nil:
		m = m0
		if m1.txid > m0.txid {
			m = m1
		}
	case err0 == nil:
		m = m0
	case err1 == nil:
		m = m1
	default:
		return fmt.Errorf("not a bbolt file or both meta pages damaged: %v; %v", err0, err1)
	}
	if need := int64(m.pgid) * int64(m.pageSize); size < need {
		return fmt.Errorf("file is %d bytes but its meta page (txid %d) needs %d: truncated", size, m.txid, need)
	}
	if m.root >= m.pgid || (m.freelist != noFreelist && m.freelist >= m.pgid) {
		return fmt.Errorf("meta page points past the end of the file (root %d, freelist %d, pages %d)", m.root, m.freelist, m.pgid)
	}
	return nil
}

const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2
	noFreelist  = 0xFFFFFFFFFFFFFFFF
	pageHeader  = 16
	metaSize    = 64
)

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// readMeta parses the meta page at off (bbolt's layout, native little-endian
// on every platform outpost supports).
func readMeta(r io.ReaderAt, off int64) (*boltMeta, error) {
	b := make([]byte, pageHeader+metaSize)
	if _, err := r.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("meta page at %d: %w", off, err)
	}
	m := b[pageHeader:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic {
		return nil, fmt.Errorf("meta page at %d: bad magic", off)
	}
	if v := le.Uint32(m[4:]); v != boltVersion {
		return nil, fmt.Errorf("meta page at %d: version %d", off, v)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != le.Uint64(m[56:]) {
		return nil, fmt.Errorf("meta page at %d: checksum mismatch", off)
	}
	ps := le.Uint32(m[8:])
	if ps < 512 || ps > 1<<20 || ps&(ps-1) != 0 {
		return nil, fmt.Errorf("meta page at %d: page size %d", off, ps)
	}
	return &boltMeta{pageSize: ps, root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, nil
}
