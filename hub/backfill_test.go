package hub_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestBolt_BackfillsIndexes: a store written before the page's indexes
// gets them built once when opened (its count, daily aggregates and
// newest-first index), so an upgraded hub's page shows its history.
func TestBolt_BackfillsIndexes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	st, err := hub.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	g := outbox.NewIDGen()
	now := time.Now().UTC()
	batch := &osync.Batch{ID: g.New(), Device: "pi-old", Sent: now}
	for i := 0; i < 5; i++ {
		batch.Records = append(batch.Records, &outbox.Record{ID: g.New(), Device: "pi-old", Model: "crop", Version: "1", Task: "image_classification",
			Output: []byte(`{"outcome":"diagnosis","label":"rust"}`)})
	}
	if _, err := st.Commit(context.Background(), []*osync.Batch{batch}, now); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// Make it look like an older build's file: no index buckets, no marker.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		tx.DeleteBucket([]byte("by_received"))
		tx.DeleteBucket([]byte("daily"))
		m := tx.Bucket([]byte("meta"))
		m.Delete([]byte("index_v1"))
		m.Delete([]byte("results"))
		return nil
	})
	db.Close()
	st, err = hub.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, _ := st.Count(context.Background())
	rows, _ := st.DailyCounts(context.Background(), now.AddDate(0, 0, -1))
	recent, _ := st.Recent(context.Background(), hub.ResultFilter{Limit: 10})
	if n != 5 || len(rows) != 1 || rows[0].Count != 5 || len(recent) != 5 {
		t.Fatalf("after opening an older store: count %d, daily %+v, recent %d", n, rows, len(recent))
	}
}
