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
	// bbolt's own consistency check follows page ids through the mapping
	// without bounds checks: a page id past the end (a file torn by a power
	// cut) faults the process (found by internal/powercut). Walk the tree
	// here first, with every id and offset checked.
	w := &treeWalk{r: f, m: m, seen: map[uint64]bool{}}
	return w.page(m.root, 0)
}

// treeWalk checks every page reachable from the root bucket: ids inside
// the file, known page types, element offsets inside their page.
type treeWalk struct {
	r    io.ReaderAt
	m    *boltMeta
	seen map[uint64]bool
}

const (
	branchPage     = 0x01
	leafPage       = 0x02
	bucketLeafFlag = 0x01
	elemSize       = 16
	maxWalkPages   = 1 << 22
)

func (w *treeWalk) page(id uint64, depth int) error {
	if depth > 64 {
		return fmt.Errorf("page %d: tree deeper than 64 levels (a cycle?)", id)
	}
	if id < 2 || id >= w.m.pgid {
		return fmt.Errorf("page id %d outside the file's %d pages", id, w.m.pgid)
	}
	if w.seen[id] {
		return fmt.Errorf("page %d reached twice", id)
	}
	if len(w.seen) > maxWalkPages {
		return fmt.Errorf("more than %d pages", maxWalkPages)
	}
	w.seen[id] = true
	ps := int64(w.m.pageSize)
	hdr := make([]byte, pageHeader)
	if _, err := w.r.ReadAt(hdr, int64(id)*ps); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	overflow := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if id+overflow >= w.m.pgid {
		return fmt.Errorf("page %d with %d overflow pages runs past the file's %d pages", id, overflow, w.m.pgid)
	}
	buf := make([]byte, int64(1+overflow)*ps)
	if _, err := w.r.ReadAt(buf, int64(id)*ps); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	return w.nodes(id, buf, depth)
}

// nodes checks one branch or leaf page held in buf (a file page, or an
// inline bucket's page inside a value).
func (w *treeWalk) nodes(id uint64, buf []byte, depth int) error {
	le := binary.LittleEndian
	if len(buf) < pageHeader {
		return fmt.Errorf("page %d: %d bytes", id, len(buf))
	}
	flags, count := le.Uint16(buf[8:]), int(le.Uint16(buf[10:]))
	if pageHeader+count*elemSize > len(buf) {
		return fmt.Errorf("page %d: %d elements do not fit", id, count)
	}
	for i := 0; i < count; i++ {
		e := pageHeader + i*elemSize
		switch flags {
		case branchPage:
			pos, ksize, child := int(le.Uint32(buf[e:])), int(le.Uint32(buf[e+4:])), le.Uint64(buf[e+8:])
			if e+pos+ksize > len(buf) || pos < 0 {
				return fmt.Errorf("page %d: branch element %d outside its page", id, i)
			}
			if err := w.page(child, depth+1); err != nil {
				return err
			}
		case leafPage:
			eflags, pos, ksize, vsize := le.Uint32(buf[e:]), int(le.Uint32(buf[e+4:])), int(le.Uint32(buf[e+8:])), int(le.Uint32(buf[e+12:]))
			end := e + pos + ksize + vsize
			if pos < 0 || ksize < 0 || vsize < 0 || end > len(buf) {
				return fmt.Errorf("page %d: leaf element %d outside its page", id, i)
			}
			if eflags&bucketLeafFlag == 0 {
				continue
			}
			v := buf[e+pos+ksize : end]
			if len(v) < 16 {
				return fmt.Errorf("page %d: bucket header %d bytes", id, len(v))
			}
			if root := le.Uint64(v); root != 0 {
				if err := w.page(root, depth+1); err != nil {
					return err
				}
			} else if err := w.nodes(id, v[16:], depth+1); err != nil { // inline bucket
				return err
			}
		default:
			return fmt.Errorf("page %d: type %#x where a branch or leaf belongs", id, flags)
		}
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
