package hub_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
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
	t.Run("CommitIsIdempotent", func(t *testing.T) {
		st := open(t)
		r1, r2 := rec("pi-1"), rec("pi-1")
		now := time.Now().UTC().Truncate(time.Millisecond)
		b1 := &osync.Batch{ID: g.New(), Device: "pi-1", Sent: now.Add(-time.Second), Records: []*outbox.Record{r1, r2}}
		b2 := &osync.Batch{ID: g.New(), Device: "pi-1", Sent: now, Records: []*outbox.Record{r2, rec("pi-1")}}
		c, err := st.Commit(ctx, []*osync.Batch{b1, b2}, now)
		if err != nil || len(c) != 2 || c[0] != (hub.Counts{New: 2}) || c[1] != (hub.Counts{New: 1, Duplicate: 1}) {
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
