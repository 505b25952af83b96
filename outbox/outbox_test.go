package outbox

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// clock is a settable test clock.
type clock struct {
	mu sync0
	t  time.Time
}

type sync0 = gosync.Mutex

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func open(t *testing.T, path string, o Options) *Outbox {
	t.Helper()
	ob, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close() })
	return ob
}

func rec(p Priority, out string) *Record {
	return &Record{Device: "dev-1", Model: "m", Version: "1", Task: "vad", Priority: p, Output: []byte(out)}
}

func mustAppend(t *testing.T, ob *Outbox, r *Record) ID {
	t.Helper()
	id, err := ob.Append(context.Background(), r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func outputs(rs []*Record) string {
	var s []string
	for _, r := range rs {
		s = append(s, string(r.Output))
	}
	return strings.Join(s, ",")
}

func TestIDGen_Monotonic(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g := &IDGen{now: c.Now}
	var prev ID
	for i := 0; i < 10000; i++ {
		if i == 5000 {
			c.Add(-time.Hour) // NTP yanks the clock back an hour
		}
		if i%100 == 0 {
			c.Add(time.Millisecond)
		}
		id := g.New()
		if bytes.Compare(id[:], prev[:]) <= 0 {
			t.Fatalf("id %d %s not after %s", i, id, prev)
		}
		if id[6]>>4 != 7 || id[8]>>6 != 2 {
			t.Fatalf("not a UUIDv7: %s", id)
		}
		prev = id
	}
	p, err := ParseID(prev.String())
	if err != nil || p != prev {
		t.Fatalf("ParseID(%s) = %s, %v", prev, p, err)
	}
	// A new generator (restart) with the clock still behind continues after
	// the newest ID it is shown.
	g2 := &IDGen{now: c.Now}
	g2.Observe(prev)
	if id := g2.New(); bytes.Compare(id[:], prev[:]) <= 0 {
		t.Fatalf("after Observe: %s not after %s", id, prev)
	}
}

func TestRecord_RoundTrip(t *testing.T) {
	r := &Record{ID: NewIDGen().New(), Seq: 42, Created: time.Unix(1_700_000_000, 123).UTC(), Device: "kiosk-7",
		Model: "silero-vad", Version: "5.0.0", Task: "vad", Priority: Alert, Tier: TierEvidence,
		Output: []byte(`{"segments":[]}`), Evidence: &Evidence{ContentType: "audio/wav", Size: 1234, SHA256: "ab"}}
	b := r.Encode(nil)
	got, err := DecodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(r)
	if !bytes.Equal(gj, wj) {
		t.Fatalf("got %+v\nwant %+v", got, r)
	}
	for i := 0; i < len(b); i++ {
		if _, err := DecodeRecord(b[:i]); !errors.Is(err, ErrCorruptRecord) {
			t.Fatalf("truncated at %d: err = %v", i, err)
		}
	}
	b[0] = 9
	if _, err := DecodeRecord(b); err == nil || !strings.Contains(err.Error(), "version 9") {
		t.Fatalf("version: %v", err)
	}
	// The meaning the device's task table gave it travels with it (v3),
	// with or without a boot.
	for _, boot := range []ID{{}, NewIDGen().New()} {
		m := *r
		m.Boot, m.Mono, m.Outcome, m.Label = boot, 5*time.Second, "diagnosis", "blight"
		b := m.Encode(nil)
		got, err := DecodeRecord(b)
		if err != nil || b[0] != recordV3 || got.Outcome != "diagnosis" || got.Label != "blight" || got.Boot != boot || got.Mono != 5*time.Second {
			t.Fatalf("v3 (boot %v): %+v, %v", boot, got, err)
		}
		for i := 0; i < len(b); i++ {
			if _, err := DecodeRecord(b[:i]); !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("v3 truncated at %d: err = %v", i, err)
			}
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add((&Record{Output: []byte("x"), Evidence: &Evidence{Size: 3}}).Encode(nil))
	f.Add([]byte{1})
	f.Add((&Record{Output: []byte("{}"), Outcome: "diagnosis", Label: "rust", Mono: 7}).Encode(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		// Whatever decodes survives a round trip unchanged (the input may
		// use overlong varints, so compare records, not bytes).
		again, err := DecodeRecord(r.Encode(nil))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		x, _ := json.Marshal(r)
		y, _ := json.Marshal(again)
		if !bytes.Equal(x, y) {
			t.Fatalf("round trip changed the record:\n%s\n%s", x, y)
		}
	})
}

func TestOutbox_LeaseOrderAndAck(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	ob := open(t, filepath.Join(t.TempDir(), "outbox.db"), Options{Now: c.Now, LeaseTimeout: time.Minute})
	for i, p := range []Priority{Bulk, Normal, Alert, Normal, Bulk, Alert} {
		c.Add(time.Millisecond)
		mustAppend(t, ob, rec(p, fmt.Sprintf("%s%d", p, i)))
	}
	got, err := ob.Lease(4, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := outputs(got); s != "alert2,alert5,normal1,normal3" {
		t.Fatalf("lease order %s", s)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq == got[i-1].Seq {
			t.Fatalf("duplicate seq")
		}
	}
	// Leased records are skipped; the rest come next.
	rest, _ := ob.Lease(10, 0)
	if s := outputs(rest); s != "bulk0,bulk4" {
		t.Fatalf("second lease %s", s)
	}
	if more, _ := ob.Lease(10, 0); len(more) != 0 {
		t.Fatalf("everything is leased, got %s", outputs(more))
	}
	// Ack two, release one, let the rest time out.
	n, err := ob.Ack([]ID{got[0].ID, got[1].ID, got[0].ID})
	if err != nil || n != 2 {
		t.Fatalf("ack: %d %v", n, err)
	}
	ob.Release([]ID{got[2].ID})
	if again, _ := ob.Lease(10, 0); outputs(again) != "normal1" {
		t.Fatalf("after release: %s", outputs(again))
	}
	c.Add(2 * time.Minute)
	if again, _ := ob.Lease(10, 0); outputs(again) != "normal1,normal3,bulk0,bulk4" {
		t.Fatalf("after lease timeout: %s", outputs(again))
	}
	if _, err := ob.Get(got[0].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("acked record still there: %v", err)
	}
	st, _ := ob.Stats()
	if st.Count != 4 || st.Appended != 6 || st.Acked != 2 || st.Priorities["bulk"].Count != 2 {
		t.Fatalf("stats %+v", st)
	}
	// maxBytes bounds a lease but never starves it: one record always fits.
	c.Add(2 * time.Minute)
	if one, _ := ob.Lease(10, 1); len(one) != 1 {
		t.Fatalf("lease with tiny maxBytes returned %d", len(one))
	}
}

func TestOutbox_CapPause(t *testing.T) {
	ob := open(t, filepath.Join(t.TempDir(), "outbox.db"), Options{MaxRecords: 3})
	for i := 0; i < 3; i++ {
		mustAppend(t, ob, rec(Bulk, fmt.Sprint(i)))
	}
	_, err := ob.Append(context.Background(), rec(Alert, "late"), nil)
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "policy pause") {
		t.Fatalf("err = %v", err)
	}
	all, _ := ob.Lease(10, 0)
	if outputs(all) != "0,1,2" {
		t.Fatalf("stored records changed: %s", outputs(all))
	}
	ob.Ack([]ID{all[0].ID})
	mustAppend(t, ob, rec(Alert, "late")) // intake resumes when room returns
}

func TestOutbox_CapDropLowest(t *testing.T) {
	ob := open(t, filepath.Join(t.TempDir(), "outbox.db"), Options{MaxRecords: 4, Policy: PolicyDropLowest})
	for _, s := range []struct {
		p Priority
		o string
	}{{Normal, "n1"}, {Bulk, "b1"}, {Alert, "a1"}, {Bulk, "b2"}} {
		mustAppend(t, ob, rec(s.p, s.o))
	}
	mustAppend(t, ob, rec(Normal, "n2")) // evicts b1 (bulk, oldest)
	mustAppend(t, ob, rec(Normal, "n3")) // evicts b2
	mustAppend(t, ob, rec(Alert, "a2"))  // evicts n1 (normal, oldest)
	_, err := ob.Append(context.Background(), rec(Bulk, "b3"), nil)
	if !errors.Is(err, ErrFull) { // a bulk record may not evict more urgent ones
		t.Fatalf("bulk into a full outbox of alerts+normals: %v", err)
	}
	all, _ := ob.Lease(10, 0)
	if outputs(all) != "a1,a2,n2,n3" {
		t.Fatalf("kept %s", outputs(all))
	}
	st, _ := ob.Stats()
	if st.Evicted != 3 || st.Priorities["bulk"].Evicted != 2 || st.Priorities["normal"].Evicted != 1 {
		t.Fatalf("eviction counters %+v", st)
	}
}

func TestOutbox_ByteCapsAndEvidence(t *testing.T) {
	ob := open(t, filepath.Join(t.TempDir(), "outbox.db"), Options{MaxBytes: 1000, EvidenceMaxBytes: 100})
	big := rec(Normal, strings.Repeat("x", 2000))
	if _, err := ob.Append(context.Background(), big, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized record: %v", err)
	}
	id, err := ob.Append(context.Background(), rec(Normal, "photo"), []byte("0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := ob.Evidence(id)
	if string(ev) != "0123456789" {
		t.Fatalf("evidence %q", ev)
	}
	for i := 0; i < 9; i++ {
		if _, err := ob.Append(context.Background(), rec(Normal, "p"), make([]byte, 10)); err != nil {
			t.Fatal(i, err)
		}
	}
	if _, err := ob.Append(context.Background(), rec(Normal, "p"), make([]byte, 10)); !errors.Is(err, ErrFull) {
		t.Fatalf("evidence cap: %v", err)
	}
	st, _ := ob.Stats()
	if st.EvidenceBytes != 100 {
		t.Fatalf("evidence bytes %d", st.EvidenceBytes)
	}
	ob.Ack([]ID{id})
	if st, _ = ob.Stats(); st.EvidenceBytes != 90 {
		t.Fatalf("evidence bytes after ack %d", st.EvidenceBytes)
	}
}

func TestOutbox_TTL(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	var ttl [NumPriorities]time.Duration
	ttl[Bulk] = time.Hour
	start := c.Now()
	boot := ID{7}
	ob := open(t, filepath.Join(t.TempDir(), "outbox.db"), Options{Now: c.Now, TTL: ttl,
		Clock: func() (ID, time.Duration) { return boot, c.Now().Sub(start) }})
	mustAppend(t, ob, rec(Bulk, "old"))
	mustAppend(t, ob, rec(Normal, "keep"))
	c.Add(2 * time.Hour)
	mustAppend(t, ob, rec(Bulk, "new"))
	n, err := ob.Expire(c.Now())
	if err != nil || n != 1 {
		t.Fatalf("expired %d, %v", n, err)
	}
	all, _ := ob.Lease(10, 0)
	if outputs(all) != "keep,new" {
		t.Fatalf("left %s", outputs(all))
	}
	if st, _ := ob.Stats(); st.Expired != 1 {
		t.Fatalf("expired counter %d", st.Expired)
	}
}

func TestOutbox_Reopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	ob, err := Open(path, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	a := mustAppend(t, ob, rec(Normal, "a"))
	if err := ob.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ob.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := ob.Append(context.Background(), rec(Normal, "x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	c.Add(-24 * time.Hour) // the device boots with a dead RTC battery
	ob2 := open(t, path, Options{Now: c.Now})
	b := mustAppend(t, ob2, rec(Normal, "b"))
	if bytes.Compare(b[:], a[:]) <= 0 {
		t.Fatalf("ID after restart %s sorts before %s", b, a)
	}
	all, _ := ob2.Lease(10, 0)
	if outputs(all) != "a,b" || all[1].Seq != all[0].Seq+1 {
		t.Fatalf("after reopen: %s seqs %d %d", outputs(all), all[0].Seq, all[1].Seq)
	}
}

func TestOutbox_CorruptFileMovedAside(t *testing.T) {
	for name, content := range map[string][]byte{
		"garbage":   bytes.Repeat([]byte("not a bbolt file "), 1000),
		"truncated": nil, // filled below from a real DB
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "outbox.db")
			if content == nil {
				ob, _ := Open(path, Options{})
				for i := 0; i < 500; i++ {
					mustAppend(t, ob, rec(Normal, strings.Repeat("y", 200)))
				}
				ob.Close()
				b, _ := os.ReadFile(path)
				content = b[:len(b)/3]
				if err := precheck(path); err != nil {
					t.Fatalf("a good file fails precheck: %v", err)
				}
			}
			os.WriteFile(path, content, 0o600)
			var logs bytes.Buffer
			ob := open(t, path, Options{Logger: newTextLogger(&logs)})
			mustAppend(t, ob, rec(Normal, "fresh"))
			matches, _ := filepath.Glob(path + ".corrupt-*")
			if len(matches) != 1 {
				t.Fatalf("corrupt file not moved aside: %v", matches)
			}
			kept, _ := os.ReadFile(matches[0])
			if !bytes.Equal(kept, content) {
				t.Fatal("the moved-aside file differs from the original")
			}
			if !strings.Contains(logs.String(), "moved aside") {
				t.Fatalf("not logged: %q", logs.String())
			}
		})
	}
}

func TestOutbox_Compact(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	ob := open(t, path, Options{})
	var keep []ID
	for i := 0; i < 3000; i++ {
		id := mustAppend(t, ob, rec(Normal, strings.Repeat("z", 1000)))
		if i%100 == 0 {
			keep = append(keep, id)
		}
	}
	all, _ := ob.Lease(3000, 0)
	var drop []ID
	for _, r := range all {
		if !containsID(keep, r.ID) {
			drop = append(drop, r.ID)
		}
	}
	ob.Ack(drop)
	before, after, err := ob.Compact()
	if err != nil {
		t.Fatal(err)
	}
	if after >= before/2 {
		t.Fatalf("compaction %d -> %d bytes", before, after)
	}
	for _, id := range keep {
		if _, err := ob.Get(id); err != nil {
			t.Fatalf("lost %s in compaction: %v", id, err)
		}
	}
	mustAppend(t, ob, rec(Normal, "after"))
	t.Logf("compacted %d -> %d bytes", before, after)
}

func containsID(ids []ID, id ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func TestOutbox_ConcurrentAppend(t *testing.T) {
	ob := open(t, filepath.Join(t.TempDir(), "outbox.db"), Options{})
	const producers, each = 64, 50
	var wg gosync.WaitGroup
	ids := make(chan ID, producers*each)
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id, err := ob.Append(context.Background(), rec(Normal, fmt.Sprintf("%d/%d", p, i)), nil)
				if err != nil {
					t.Error(err)
					return
				}
				ids <- id
			}
		}(p)
	}
	wg.Wait()
	close(ids)
	seen := map[ID]bool{}
	for id := range ids {
		seen[id] = true
	}
	st, _ := ob.Stats()
	if len(seen) != producers*each || st.Count != producers*each || st.LastSeq != producers*each {
		t.Fatalf("%d ids, stats %+v", len(seen), st)
	}
}

func TestOptions_Validate(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{Policy: "yolo"}); err == nil || !strings.Contains(err.Error(), `policy "yolo"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestOpen_TruncatedAnywhere cuts a real outbox file at many lengths: Open
// must never crash (bbolt would fault reading past the mapping) and must
// either open the data or move the file aside and start fresh.
func TestOpen_TruncatedAnywhere(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src.db")
	ob, _ := Open(src, Options{})
	for i := 0; i < 300; i++ {
		mustAppend(t, ob, rec(Normal, strings.Repeat("q", 300)))
	}
	ob.Close()
	full, _ := os.ReadFile(src)
	for _, cut := range []int{1, 15, 100, 4095, 4096, 4097, 8192, 8200, 12288, len(full) / 4, len(full) / 2, len(full) - 4096, len(full) - 1} {
		path := filepath.Join(t.TempDir(), "outbox.db")
		os.WriteFile(path, full[:cut], 0o600)
		ob, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		mustAppend(t, ob, rec(Normal, "after"))
		ob.Close()
	}
}

// TestOutbox_TTLIgnoresWallClockJumps: a Pi without an RTC may boot with
// its clock months off and then be corrected: ages and TTLs follow the
// boot clock, so a +40-day wall jump expires nothing and the oldest age
// reads what really passed; a record of an earlier boot counts as at
// least as old as this boot, never older.
func TestOutbox_TTLIgnoresWallClockJumps(t *testing.T) {
	wall := &clock{t: time.Unix(1_700_000_000, 0)}
	boot, mono := ID{1}, time.Hour
	var ttl [NumPriorities]time.Duration
	for p := range ttl {
		ttl[p] = 7 * 24 * time.Hour
	}
	ob := open(t, filepath.Join(t.TempDir(), "outbox.db"), Options{Now: wall.Now, TTL: ttl,
		Clock: func() (ID, time.Duration) { return boot, mono }})
	mustAppend(t, ob, rec(Normal, "before-the-jump"))
	mono += time.Hour
	wall.Add(40 * 24 * time.Hour) // NTP arrives, or a bad RTC battery
	mustAppend(t, ob, rec(Normal, "after-the-jump"))
	if n, err := ob.Expire(wall.Now()); err != nil || n != 0 {
		t.Fatalf("a wall-clock jump expired %d records (%v)", n, err)
	}
	if st, _ := ob.Stats(); st.OldestAge != time.Hour {
		t.Fatalf("oldest age %v after a 40-day jump, want the 1h that passed", st.OldestAge)
	}
	// A reboot: the old records are at least this boot's age.
	boot, mono = ID{2}, 30*time.Minute
	wall.Add(-60 * 24 * time.Hour) // and the clock now says last month
	if n, _ := ob.Expire(wall.Now()); n != 0 {
		t.Fatalf("expired %d after a reboot with a wrong clock", n)
	}
	if st, _ := ob.Stats(); st.OldestAge != 30*time.Minute {
		t.Fatalf("oldest age %v after a reboot, want this boot's 30m", st.OldestAge)
	}
	mono = 8 * 24 * time.Hour // this boot has now lasted past the TTL
	if n, _ := ob.Expire(wall.Now()); n != 2 {
		t.Fatalf("expired %d after 8 days of this boot, want 2", n)
	}
}

// TestOutbox_KeyedAppend: an idempotency key is kept with its record, in
// the same commit, until it is older than the TTL.
func TestOutbox_KeyedAppend(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	ob, err := Open(filepath.Join(t.TempDir(), "o.db"), Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	id, err := ob.AppendKeyed(context.Background(), &Record{Device: "d", Model: "m", Version: "1", Task: "t", Output: []byte(`{}`)}, nil, "k")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := ob.Keyed("k", time.Hour); !ok || got != id {
		t.Fatalf("keyed: %v %v, want %v", got, ok, id)
	}
	if _, ok := ob.Keyed("other", time.Hour); ok {
		t.Fatal("an unknown key found")
	}
	now = now.Add(2 * time.Hour)
	if _, ok := ob.Keyed("k", time.Hour); ok {
		t.Fatal("a key past its TTL found")
	}
	if n, err := ob.ExpireKeys(time.Hour); err != nil || n != 1 {
		t.Fatalf("expire: %d %v", n, err)
	}
	if _, err := ob.AppendKeyed(context.Background(), &Record{Device: "d"}, nil, strings.Repeat("x", MaxKeyLen+1)); err == nil {
		t.Fatal("an overlong key accepted")
	}
}

// TestOpen_DropsOldIDIndex: a file written before 0.4 kept an ID → priority
// index bucket, written on every append and ack. Opened now, the index is
// gone and records are still found, read and acked by ID.
func TestOpen_DropsOldIDIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	ob, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []ID
	for p := Priority(0); p < NumPriorities; p++ {
		id, err := ob.Append(context.Background(), &Record{Device: "pi", Model: "m", Priority: p, Output: []byte(`{}`)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	ob.Close()
	// As the old format had it.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("index"))
		if err != nil {
			return err
		}
		for i, id := range ids {
			if err := b.Put(id[:], []byte{byte(i)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	ob, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	ob.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("index")) != nil {
			t.Error("the old index bucket is still there")
		}
		return nil
	})
	for i, id := range ids {
		if r, err := ob.Get(id); err != nil || r.Priority != Priority(i) {
			t.Fatalf("get %s: %v, %v", id, r, err)
		}
	}
	if n, err := ob.Ack(ids[1:]); err != nil || n != 2 {
		t.Fatalf("ack: %d, %v; want 2", n, err)
	}
	if _, err := ob.Get(ids[1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("acked record still there: %v", err)
	}
	if st, _ := ob.Stats(); st.Count != 1 {
		t.Fatalf("count %d after acking 2 of 3", st.Count)
	}
}

// TestEncode_BytesPinned keeps the on-disk layout of every record version
// byte for byte (the bytes were written by the encoder before it was split
// into head and rest), through both Encode and the outbox's split path.
func TestEncode_BytesPinned(t *testing.T) {
	c := time.Date(2026, 12, 6, 11, 0, 0, 5, time.UTC)
	var boot ID
	for i := range boot {
		boot[i] = byte(0xa0 + i)
	}
	id := ID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	for i, tc := range []struct {
		r    *Record
		want string
	}{
		{&Record{ID: id, Seq: 300, Created: c, Priority: Alert, Tier: 1, Device: "pi-7", Model: "crop", Version: "1.0.0", Task: "image-classification", Output: []byte(`{"a":1}`)},
			"010102030405060708090a0b0c0d0e0f10ac028a80af98cec4d2ee3100010470692d370463726f7005312e302e3014696d6167652d636c617373696669636174696f6e077b2261223a317d00"},
		{&Record{ID: id, Seq: 1, Created: c, Device: "d", Output: []byte("x"), Evidence: &Evidence{ContentType: "image/jpeg", SHA256: "ab", Size: 70000}, Boot: boot, Mono: 5 * time.Second},
			"020102030405060708090a0b0c0d0e0f10018a80af98cec4d2ee31000001640000000178010a696d6167652f6a706567026162f0a204a0a1a2a3a4a5a6a7a8a9aaabacadaeaf80e497d012"},
		{&Record{ID: id, Seq: 1 << 40, Created: c, Device: "d", Output: []byte("{}"), Outcome: "diagnosis", Label: "leaf_rust", Boot: boot, Mono: 7},
			"030102030405060708090a0b0c0d0e0f108080808080208a80af98cec4d2ee3100000164000000027b7d00a0a1a2a3a4a5a6a7a8a9aaabacadaeaf0709646961676e6f736973096c6561665f72757374"},
		{&Record{ID: id, Seq: 2, Created: c, Device: "d", Output: []byte("{}"), Mono: 9},
			"030102030405060708090a0b0c0d0e0f10028a80af98cec4d2ee3100000164000000027b7d0000000000000000000000000000000000090000"},
	} {
		if got := hex.EncodeToString(tc.r.Encode(nil)); got != tc.want {
			t.Errorf("record %d: Encode\n got %s\nwant %s", i, got, tc.want)
		}
		if got := hex.EncodeToString(tc.r.encodeWithRest(tc.r.encodeRest(nil))); got != tc.want {
			t.Errorf("record %d: head + rest\n got %s\nwant %s", i, got, tc.want)
		}
	}
}

// TestAppendWith_OneCommit: a record and its attachment are stored in one
// commit (one fsync), the attachment right after the record, its Output
// made from the record's ID; an attachment is never stored without its
// record, and a record is stored when only its attachment is refused.
func TestAppendWith_OneCommit(t *testing.T) {
	ob, err := Open(filepath.Join(t.TempDir(), "o.db"), Options{EvidenceMaxBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	att := func(evidence int) *Attachment {
		return &Attachment{Record: &Record{Device: "d", Task: "evidence", Priority: Bulk}, Evidence: make([]byte, evidence),
			Output: func(of ID) []byte { return []byte(`{"of":"` + of.String() + `"}`) }}
	}
	c0 := ob.commits.Load()
	r := &Record{Device: "d", Output: []byte(`{"label":"rust"}`)}
	id, attErr, err := ob.AppendWith(context.Background(), r, nil, "", att(500))
	if err != nil || attErr != nil {
		t.Fatal(err, attErr)
	}
	if n := ob.commits.Load() - c0; n != 1 {
		t.Fatalf("%d commits for a record and its attachment, want 1", n)
	}
	st, _ := ob.Stats()
	if st.Count != 2 || st.EvidenceBytes != 500 {
		t.Fatalf("stats %+v", st)
	}
	var follow *Record
	ob.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bRecords).ForEach(func(k, v []byte) error {
			if rec, err := DecodeRecord(v); err == nil && rec.Task == "evidence" {
				follow = rec
			}
			return nil
		})
	})
	if follow == nil || string(follow.Output) != `{"of":"`+id.String()+`"}` || follow.Seq != r.Seq+1 || string(follow.ID[:]) <= string(id[:]) {
		t.Fatalf("attachment %+v after record %s (seq %d)", follow, id, r.Seq)
	}

	if _, _, err := ob.AppendWith(context.Background(), &Record{Device: "d"}, nil, "", &Attachment{Record: &Record{}}); err == nil || !strings.Contains(err.Error(), "Output function") {
		t.Fatalf("an attachment without its Output: %v", err)
	}
	// The attachment refused (its evidence over the cap): the record is stored.
	_, attErr, err = ob.AppendWith(context.Background(), &Record{Device: "d", Output: []byte("{}")}, nil, "", att(2000))
	if err != nil || !errors.Is(attErr, ErrTooLarge) {
		t.Fatalf("err %v, attachment %v", err, attErr)
	}
	// The record refused: the attachment is not stored either.
	_, attErr, err = ob.AppendWith(context.Background(), &Record{Device: "d", Output: []byte("{}")}, make([]byte, 2000), "", att(10))
	if !errors.Is(err, ErrTooLarge) || attErr == nil || !strings.Contains(attErr.Error(), "attached to was not") {
		t.Fatalf("err %v, attachment %v", err, attErr)
	}
	// Refused: the first attachment, then the record and its attachment.
	if st, _ := ob.Stats(); st.Count != 3 || st.Refused != 3 {
		t.Fatalf("after the refusals: %d records (want 3), %d refused (want 3)", st.Count, st.Refused)
	}
}
