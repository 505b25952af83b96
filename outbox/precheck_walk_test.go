package outbox

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpen_BucketPastEnd: a bucket whose root page id lies past the end of
// the file (a torn power cut) must be caught before bbolt's own check,
// which would fault the process; the file is moved aside and a fresh
// outbox starts.
func TestOpen_BucketPastEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	ob := open(t, path, Options{})
	for i := 0; i < 200; i++ {
		if _, err := ob.Append(context.Background(), rec(Normal, strings.Repeat("x", 200)), nil); err != nil {
			t.Fatal(err)
		}
	}
	ob.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := readMeta(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	if m1, err := readMeta(f, int64(m.pageSize)); err == nil && m1.txid > m.txid {
		m = m1
	}
	// The root bucket's leaf names each top-level bucket with its root page:
	// point the first one past the end.
	page := make([]byte, m.pageSize)
	f.ReadAt(page, int64(m.root)*int64(m.pageSize))
	le := binary.LittleEndian
	if le.Uint16(page[8:]) != leafPage {
		t.Fatalf("root page type %#x", le.Uint16(page[8:]))
	}
	done := false
	for i := 0; i < int(le.Uint16(page[10:])) && !done; i++ {
		e := pageHeader + i*elemSize
		pos, ksize := int(le.Uint32(page[e+4:])), int(le.Uint32(page[e+8:]))
		v := e + pos + ksize
		if le.Uint32(page[e:])&bucketLeafFlag != 0 && le.Uint64(page[v:]) != 0 {
			le.PutUint64(page[v:], m.pgid+100)
			done = true
		}
	}
	if !done {
		t.Fatal("no bucket with its own root page to corrupt")
	}
	f.WriteAt(page, int64(m.root)*int64(m.pageSize))
	f.Close()
	if err := precheck(path); err == nil || !strings.Contains(err.Error(), "outside the file") {
		t.Fatalf("precheck: %v", err)
	}
	ob2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("open after corruption: %v", err)
	}
	defer ob2.Close()
	if st, _ := ob2.Stats(); st.Count != 0 {
		t.Fatalf("fresh outbox holds %d", st.Count)
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 1 {
		t.Fatalf("corrupt file not kept aside: %v", aside)
	}
}
