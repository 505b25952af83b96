package hub_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// storeSuite is run against every Store implementation (nats-server's
// pattern): the PostgreSQL store joins it behind the same interface.
func storeSuite(t *testing.T, open func(t *testing.T) hub.Store) {
	ctx := context.Background()
	g := outbox.NewIDGen()
	rec := func(dev string) *outbox.Record {
		return &outbox.Record{ID: g.New(), Device: dev, Model: "m", Version: "1", Task: "vad", Output: []byte(`{"x":1}`)}
	}
	t.Run("CommitNamesConflicts", func(t *testing.T) {
		// A stranger's copy stored first under a real record's ID: the real
		// record is a conflict, not a duplicate, so its ack will not name
		// it and the device keeps it (issue 25: the hub signed "stored" for
		// substitutes and the device deleted its real results).
		st := open(t)
		now := time.Now().UTC().Truncate(time.Millisecond)
		real := rec("pi-1")
		fake := *real
		fake.Output = []byte(`{"label":"healthy"}`)
		same := rec("pi-1")
		if _, err := st.Commit(ctx, []*osync.Batch{{ID: g.New(), Device: "pi-1", Sent: now, Records: []*outbox.Record{&fake, same}}}, now); err != nil {
			t.Fatal(err)
		}
		c, err := st.Commit(ctx, []*osync.Batch{{ID: g.New(), Device: "pi-1", Sent: now, Records: []*outbox.Record{real, same}}}, now)
		if err != nil || c[0].New != 0 || c[0].Duplicate != 1 || !c[0].Conflicts[real.ID] || len(c[0].Conflicts) != 1 {
			t.Fatalf("commit: %+v, %v; want the substituted record as the one conflict, the same bytes as a duplicate", c, err)
		}
	})
	t.Run("PageViewsFromIndexes", func(t *testing.T) {
		// Daily aggregates and the newest-first index are kept by Commit
		// (issue 29: every page view scanned every result): counts by day,
		// device, model and diagnosis (retakes and uncertain answers are
		// not counted); Recent newest first with filters; a redelivery
		// counts nothing twice.
		st := open(t)
		now := time.Now().UTC().Truncate(24 * time.Hour).Add(12 * time.Hour) // noon: no day boundary in reach
		mk := func(dev, out string) *outbox.Record {
			return &outbox.Record{ID: g.New(), Device: dev, Model: "crop", Version: "1", Task: "image_classification", Output: []byte(out)}
		}
		rust, healthy := `{"outcome":"diagnosis","label":"rust","score":0.9}`, `{"outcome":"diagnosis","label":"healthy","score":0.9}`
		unsure, retake := `{"outcome":"diagnosis","label":"rust","uncertain":true}`, `{"outcome":"retake","label":"","reason":"dark"}`
		// Records that carry their meaning (v3, issue 30) are counted by it,
		// whatever their output's field names say.
		carried, carriedRetake := mk("pi-c", `{"class":"mosaic"}`), mk("pi-c", rust)
		carried.Outcome, carried.Label = "diagnosis", "mosaic"
		carriedRetake.Outcome = "retake"
		day1 := []*outbox.Record{mk("pi-a", rust), mk("pi-a", rust), mk("pi-a", unsure), mk("pi-b", healthy), carried, carriedRetake}
		day2 := []*outbox.Record{mk("pi-a", retake), mk("pi-b", rust)}
		commit := func(recs []*outbox.Record, at time.Time) {
			if _, err := st.Commit(ctx, []*osync.Batch{{ID: g.New(), Device: recs[0].Device, Sent: at, Records: recs}}, at); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range day1 {
			commit([]*outbox.Record{r}, now.AddDate(0, 0, -1))
		}
		for i, r := range day2 {
			commit([]*outbox.Record{r}, now.Add(time.Duration(i-2)*time.Second))
		}
		commit([]*outbox.Record{day1[0]}, now) // a redelivery
		rows, err := st.DailyCounts(ctx, now.AddDate(0, 0, -7))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, r := range rows {
			got[r.Day[5:]+" "+r.Device+" "+r.Label] += r.Count
		}
		d1, d2 := now.AddDate(0, 0, -1).Format("01-02"), now.Format("01-02")
		want := map[string]int64{d1 + " pi-a rust": 2, d1 + " pi-b healthy": 1, d1 + " pi-c mosaic": 1, d2 + " pi-b rust": 1}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("daily counts %v, want %v", got, want)
		}
		if n, _ := st.Count(ctx); n != 8 {
			t.Fatalf("count %d, want 8", n)
		}
		recent, err := st.Recent(ctx, hub.ResultFilter{Limit: 3})
		if err != nil || len(recent) != 3 || recent[0].Record.ID != day2[1].ID || recent[1].Record.ID != day2[0].ID {
			t.Fatalf("recent: %d results, %v", len(recent), err)
		}
		recent, _ = st.Recent(ctx, hub.ResultFilter{Device: "pi-a", Label: "rust", Limit: 10})
		if len(recent) != 2 || recent[0].Record.Device != "pi-a" {
			t.Fatalf("recent pi-a rust: %d", len(recent))
		}
		recent, _ = st.Recent(ctx, hub.ResultFilter{To: now.Truncate(24 * time.Hour), Limit: 10})
		for _, r := range recent {
			if !r.Received.Before(now.Truncate(24 * time.Hour)) {
				t.Fatalf("recent before today returned %s", r.Received)
			}
		}
	})
	t.Run("CommitIsIdempotent", func(t *testing.T) {
		st := open(t)
		r1, r2 := rec("pi-1"), rec("pi-1")
		now := time.Now().UTC().Truncate(time.Millisecond)
		b1 := &osync.Batch{ID: g.New(), Device: "pi-1", Sent: now.Add(-time.Second), Records: []*outbox.Record{r1, r2}}
		b2 := &osync.Batch{ID: g.New(), Device: "pi-1", Sent: now, Records: []*outbox.Record{r2, rec("pi-1")}}
		c, err := st.Commit(ctx, []*osync.Batch{b1, b2}, now)
		if err != nil || len(c) != 2 || c[0].New != 2 || c[0].Duplicate != 0 || c[1].New != 1 || c[1].Duplicate != 1 ||
			len(c[0].Conflicts)+len(c[1].Conflicts) != 0 {
			t.Fatalf("commit: %+v, %v", c, err)
		}
		if n, _ := st.Count(ctx); n != 3 {
			t.Fatalf("count %d, want 3", n)
		}
		seen := 0
		st.Each(ctx, func(s hub.StoredResult) error {
			seen++
			if !s.Received.Equal(now) || s.Record.Device != "pi-1" {
				t.Errorf("stored %+v", s)
			}
			return nil
		})
		devs, _ := st.Devices(ctx)
		if seen != 3 || len(devs) != 1 || devs[0].Stored != 3 || devs[0].Duplicates != 1 || !devs[0].LastSeen.Equal(now) {
			t.Fatalf("each %d, devices %+v", seen, devs)
		}
	})
	t.Run("UpdateDevice", func(t *testing.T) {
		st := open(t)
		if err := st.UpdateDevice(ctx, "pi-2", func(d *hub.DeviceStatus) error { d.Backlog = 7; return nil }); err != nil {
			t.Fatal(err)
		}
		st.UpdateDevice(ctx, "pi-2", func(d *hub.DeviceStatus) error { d.Backlog = 9; return hub.ErrSkip })
		boom := errors.New("boom")
		if err := st.UpdateDevice(ctx, "pi-2", func(d *hub.DeviceStatus) error { d.Backlog = 11; return boom }); !errors.Is(err, boom) {
			t.Fatalf("callback error: %v", err)
		}
		devs, _ := st.Devices(ctx)
		if len(devs) != 1 || devs[0].Backlog != 7 || devs[0].Device != "pi-2" {
			t.Fatalf("devices %+v", devs)
		}
	})
	t.Run("Evidence", func(t *testing.T) {
		st := open(t)
		photo, _ := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples", "rust.jpg"))
		sum := sha256.Sum256(photo)
		of := g.New()
		chunk := func(id outbox.ID, off int, data []byte, digest [32]byte) *osync.EvidenceChunk {
			return &osync.EvidenceChunk{ID: id, Of: of, Size: int64(len(photo)), Offset: int64(off), SHA256: digest, ContentType: "image/jpeg", Data: data}
		}
		id := g.New()
		now := time.Now().UTC().Truncate(time.Millisecond)
		put := func(c *osync.EvidenceChunk) hub.EvidenceInfo {
			t.Helper()
			info, err := st.PutEvidence(ctx, "pi-3", c, now)
			if err != nil {
				t.Fatal(err)
			}
			return info
		}
		if i := put(chunk(id, 0, nil, sum)); i.Have != 0 || i.Complete {
			t.Fatalf("probe: %+v", i)
		}
		if i := put(chunk(id, 0, photo[:10000], sum)); i.Have != 10000 {
			t.Fatalf("first chunk: %+v", i)
		}
		if i := put(chunk(id, 0, photo[:10000], sum)); i.Have != 10000 {
			t.Fatalf("the same chunk again (a resend): %+v", i)
		}
		if i := put(chunk(id, 20000, photo[20000:30000], sum)); i.Have != 10000 {
			t.Fatalf("a chunk past the gap must not land: %+v", i)
		}
		// A stranger's chunks (issue 25): other digest, past the end —
		// learned from, never a refusal that would make the device drop it.
		var other [32]byte
		other[0] = 1
		if i := put(chunk(id, 10000, photo[10000:20000], other)); i.Have != 10000 || i.Refused != "" {
			t.Fatalf("a chunk with another digest changed the upload: %+v", i)
		}
		long := append(append([]byte(nil), photo[10000:]...), make([]byte, 4096)...)
		if i := put(chunk(id, 10000, long, sum)); i.Have != 10000 || i.Refused != "" {
			t.Fatalf("a chunk past the end changed the upload: %+v", i)
		}
		if info, _, _ := st.Evidence(ctx, "pi-3", of); info != nil {
			t.Fatal("incomplete evidence is listed")
		}
		if i := put(chunk(id, 10000, photo[10000:], sum)); !i.Complete || i.Have != int64(len(photo)) {
			t.Fatalf("last chunk: %+v", i)
		}
		info, data, err := st.Evidence(ctx, "pi-3", of)
		if err != nil || info == nil || !bytes.Equal(data, photo) || info.ID != id {
			t.Fatalf("stored evidence: %+v %v", info, err)
		}
		// Refusals: not a photo; a digest that does not match.
		if i := put(chunk(g.New(), 0, []byte("#!/bin/sh\nrm -rf /\n"), sum)); i.Refused == "" {
			t.Fatalf("a script accepted as evidence: %+v", i)
		}
		var wrong [32]byte
		bad := g.New()
		put(chunk(bad, 0, photo[:10000], wrong))
		if i := put(chunk(bad, 10000, photo[10000:], wrong)); i.Refused != "" || i.Complete || i.Have != 0 {
			t.Fatalf("a whole that does not match its digest must start over (not complete, not refused): %+v", i)
		}
		// Half uploaded, then the whole piece from a bundle (issue 27): the
		// whole replaces the part.
		half := g.New()
		put(&osync.EvidenceChunk{ID: half, Of: g.New(), Size: int64(len(photo)), SHA256: sum, ContentType: "image/jpeg", Data: photo[:16384]})
		if i := put(&osync.EvidenceChunk{ID: half, Of: g.New(), Size: int64(len(photo)), SHA256: sum, ContentType: "image/jpeg", Data: photo}); !i.Complete || i.Have != int64(len(photo)) {
			t.Fatalf("the whole piece after a part: %+v", i)
		}
		if l, _ := st.EvidenceList(ctx); len(l) != 2 {
			t.Fatalf("list: %+v", l)
		}
	})
	t.Run("Reviews", func(t *testing.T) {
		st := open(t)
		r := rec("pi-4")
		if _, err := st.Commit(ctx, []*osync.Batch{{ID: g.New(), Device: "pi-4", Records: []*outbox.Record{r}}}, time.Now()); err != nil {
			t.Fatal(err)
		}
		if got, err := st.Result(ctx, "pi-4", r.ID); err != nil || got == nil || got.Record.ID != r.ID {
			t.Fatalf("result: %+v %v", got, err)
		}
		if got, _ := st.Result(ctx, "pi-5", r.ID); got != nil {
			t.Fatal("a result found under another device")
		}
		rv := &osync.Review{Device: "pi-4", Of: r.ID, Label: "rust", Advice: "Remove infected leaves.", Lang: "en", Time: time.Now().UTC().Truncate(time.Millisecond)}
		if err := st.PutReview(ctx, rv); err != nil {
			t.Fatal(err)
		}
		if err := st.PutReview(ctx, rv); !errors.Is(err, hub.ErrReviewed) {
			t.Fatalf("duplicate review: %v", err)
		}
		if got, err := st.ReviewOf(ctx, "pi-4", r.ID); err != nil || got == nil || got.Label != "rust" || got.Delivered {
			t.Fatalf("review of: %+v %v", got, err)
		}
		if l, _ := st.Reviews(ctx, "pi-4", true); len(l) != 1 || l[0].Advice != rv.Advice {
			t.Fatalf("undelivered: %+v", l)
		}
		if err := st.MarkDelivered(ctx, "pi-4", r.ID); err != nil {
			t.Fatal(err)
		}
		if err := st.MarkDelivered(ctx, "pi-4", g.New()); err == nil {
			t.Fatal("a receipt for no review accepted")
		}
		if l, _ := st.Reviews(ctx, "pi-4", true); len(l) != 0 {
			t.Fatalf("delivered still undelivered: %+v", l)
		}
		if l, _ := st.Reviews(ctx, "", false); len(l) != 1 || !l[0].Delivered {
			t.Fatalf("all reviews: %+v", l)
		}
	})
	t.Run("Warnings", func(t *testing.T) {
		st := open(t)
		now := time.Now().UTC().Truncate(time.Millisecond)
		w := &osync.Warning{ID: g.New(), Region: "Kisumu", Disease: "rust", Advice: map[string]string{"en": "Rust nearby.", "sw": "Kutu karibu."},
			From: now, Until: now.Add(14 * 24 * time.Hour), Issued: now, Source: "outbreak"}
		old := &osync.Warning{ID: g.New(), Region: "Kisumu", Disease: "blight", Advice: map[string]string{"en": "Blight."},
			From: now.Add(-30 * 24 * time.Hour), Until: now.Add(-time.Hour), Issued: now.Add(-30 * 24 * time.Hour)}
		for _, x := range []*osync.Warning{w, old} {
			if err := st.PutWarning(ctx, x); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.MarkWarningDelivered(ctx, w.ID, "pi-4", now); err != nil {
			t.Fatal(err)
		}
		if err := st.MarkWarningDelivered(ctx, w.ID, "pi-4", now.Add(time.Minute)); err != nil {
			t.Fatalf("a second receipt: %v", err)
		}
		if err := st.MarkWarningDelivered(ctx, g.New(), "pi-4", now); err == nil {
			t.Fatal("a receipt for no warning accepted")
		}
		// An edit keeps who confirmed it.
		w.Advice["fr"] = "Rouille à proximité."
		if err := st.PutWarning(ctx, w); err != nil {
			t.Fatal(err)
		}
		l, err := st.Warnings(ctx, now)
		if err != nil || len(l) != 1 || l[0].ID != w.ID || l[0].Advice["fr"] == "" || !l[0].Delivered["pi-4"].Equal(now) || len(l[0].Delivered) != 1 {
			t.Fatalf("in force: %+v %v", l, err)
		}
		if all, _ := st.Warnings(ctx, time.Time{}); len(all) != 2 || all[0].ID != w.ID {
			t.Fatalf("all, newest first: %+v", all)
		}
	})
	t.Run("ClientIDKept", func(t *testing.T) {
		st := open(t)
		a, err1 := st.ClientID(ctx)
		b, err2 := st.ClientID(ctx)
		if err1 != nil || err2 != nil || a != b || len(a) != len("outpost-collector-")+12 {
			t.Fatalf("%q %q %v %v", a, b, err1, err2)
		}
	})
}

func TestStore_Bolt(t *testing.T) {
	storeSuite(t, func(t *testing.T) hub.Store {
		st, err := hub.OpenBolt(filepath.Join(t.TempDir(), "hub.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}

func TestMain(m *testing.M) {
	if os.Getenv("HUB_CHILD_STORE") != "" || os.Getenv("HUB_CHILD_BOLT") != "" {
		collectorChild()
		return
	}
	code := m.Run()
	testutil.StopPostgres()
	os.Exit(code)
}

func TestStore_Postgres(t *testing.T) {
	pg := testutil.StartPostgres(t)
	storeSuite(t, func(t *testing.T) hub.Store {
		st, err := hub.OpenPostgres(context.Background(), pg.NewDatabase(t), hub.PGOptions{Name: "test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}

// TestPostgres_TwoCollectorsOneDatabase: two stores on one database (two
// collectors) commit overlapping batches at once: every record is stored
// once, and the New counts add up to exactly the records stored.
func TestPostgres_TwoCollectorsOneDatabase(t *testing.T) {
	pg := testutil.StartPostgres(t)
	url := pg.NewDatabase(t)
	ctx := context.Background()
	var st [2]*hub.PGStore
	for i := range st {
		s, err := hub.OpenPostgres(ctx, url, hub.PGOptions{Name: fmt.Sprintf("c%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		st[i] = s
	}
	a, _ := st[0].ClientID(ctx)
	b, _ := st[1].ClientID(ctx)
	if a == b {
		t.Fatalf("two collectors got one client id %q", a)
	}
	g := outbox.NewIDGen()
	var batches []*osync.Batch
	for d := 0; d < 20; d++ {
		dev := fmt.Sprintf("pi-%d", d)
		var recs []*outbox.Record
		for k := 0; k < 50; k++ {
			recs = append(recs, &outbox.Record{ID: g.New(), Device: dev, Model: "m", Version: "1", Task: "t", Output: []byte(`{"label":"rust"}`)})
		}
		batches = append(batches, &osync.Batch{ID: g.New(), Device: dev, Sent: time.Now(), Records: recs})
	}
	var news [2]int64
	var wg gosync.WaitGroup
	for i := range st {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Each collector gets every batch (a redelivery), in its own order.
			for k := range batches {
				j := k
				if i == 1 {
					j = len(batches) - 1 - k
				}
				c, err := st[i].Commit(ctx, batches[j:j+1], time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				news[i] += c[0].New
			}
		}(i)
	}
	wg.Wait()
	n, _ := st[0].Count(ctx)
	devs, _ := st[1].Devices(ctx)
	var stored, dups int64
	for _, d := range devs {
		stored += d.Stored
		dups += d.Duplicates
	}
	if n != 1000 || news[0]+news[1] != 1000 || stored != 1000 || dups != 1000 || len(devs) != 20 {
		t.Fatalf("count %d, new %v, devices %d stored %d duplicates %d", n, news, len(devs), stored, dups)
	}
}

// TestPostgres_MigrationFailureLeavesSchema: migrations apply once; a
// migration that fails half-way leaves the schema as it was (PostgreSQL
// DDL is transactional) and is retried next time.
func TestPostgres_MigrationFailureLeavesSchema(t *testing.T) {
	pg := testutil.StartPostgres(t)
	ctx := context.Background()
	url := pg.NewDatabase(t)
	st, err := hub.OpenPostgres(ctx, url, hub.PGOptions{Name: "m"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if again, err := st.Migrate(ctx); err != nil || len(again) != 0 {
		t.Fatalf("second migrate applied %v, %v", again, err)
	}
	bad := fstest.MapFS{
		"migrations/0001_init.sql":     &fstest.MapFile{Data: []byte("SELECT 1")},
		"migrations/0002_evidence.sql": &fstest.MapFile{Data: []byte("SELECT 1")},
		"migrations/0003_daily.sql":    &fstest.MapFile{Data: []byte("SELECT 1")},
		"migrations/0004_warnings.sql": &fstest.MapFile{Data: []byte("SELECT 1")},
		"migrations/0005_ingest.sql":   &fstest.MapFile{Data: []byte("SELECT 1")},
		"migrations/0006_half.sql": &fstest.MapFile{Data: []byte(
			"CREATE TABLE half_done (x int); ALTER TABLE results ADD COLUMN extra int; SELECT no_such_function();")},
	}
	if _, err := st.MigrateFS(ctx, bad); err == nil || !strings.Contains(err.Error(), "0006_half.sql") {
		t.Fatalf("a failing migration: %v", err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tables, cols, v int
	conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_name = 'half_done'`).Scan(&tables)
	conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'results' AND column_name = 'extra'`).Scan(&cols)
	conn.QueryRow(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v)
	if tables != 0 || cols != 0 || v != 5 {
		t.Fatalf("after a failed migration: half_done tables %d, extra columns %d, schema version %d", tables, cols, v)
	}
}
