package hub_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// testDevices are simulated devices for the multi-collector and cluster
// tests: a real outbox each with a backlog, an uplink draining it.
type testDevices struct {
	obs  map[string]*outbox.Outbox
	ids  map[string]bool // device/id of every record appended
	done chan error
}

// startDevices starts n devices named pi-0…, each with per records,
// draining in batches of batch records with one in flight (many round
// trips: a drain long enough to fail something in); brokers(d) is device
// d's broker URL list.
func startDevices(t *testing.T, ctx context.Context, n, per, batch int, brokers func(d int) string) *testDevices {
	t.Helper()
	f := &testDevices{obs: map[string]*outbox.Outbox{}, ids: map[string]bool{}, done: make(chan error, n)}
	for d := 0; d < n; d++ {
		name := fmt.Sprintf("pi-%d", d)
		ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ob.Close() })
		for i := 0; i < per; i++ {
			id, err := ob.Append(ctx, &outbox.Record{Device: name, Model: "crop-disease", Version: "0.2.0", Task: "image-classification",
				Output: []byte(fmt.Sprintf(`{"label":"rust","n":%d}`, i))}, nil)
			if err != nil {
				t.Fatal(err)
			}
			f.ids[name+"/"+id.String()] = true
		}
		u, err := osync.NewUplink(ob, testutil.Dialer(t, brokers(d), true), osync.UplinkOptions{Device: name,
			BatchRecords: batch, Window: 1, AckTimeout: 2 * time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
			Logger: testutil.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		f.obs[name] = ob
		go func() { f.done <- u.Run(ctx) }()
	}
	return f
}

// left counts records still on the named devices (all, if none named).
func (f *testDevices) left(names ...string) int64 {
	if len(names) == 0 {
		for n := range f.obs {
			names = append(names, n)
		}
	}
	total := int64(0)
	for _, n := range names {
		st, _ := f.obs[n].Stats()
		total += st.Count
	}
	return total
}

// drainWithin waits until every outbox is empty, then cancels the
// uplinks' context and waits for them to stop.
func (f *testDevices) drainWithin(t *testing.T, d time.Duration, cancel context.CancelFunc) {
	t.Helper()
	testutil.Eventually(t, d, "the device outboxes to drain", func() bool { return f.left() == 0 })
	cancel()
	for range f.obs {
		<-f.done
	}
}

// storedOnce checks that the store holds every record the devices
// appended, once, and nothing else; it returns how many.
func (f *testDevices) storedOnce(t *testing.T, each func(func(hub.StoredResult) error) error) int {
	t.Helper()
	want := map[string]bool{}
	for k := range f.ids {
		want[k] = true
	}
	got := 0
	err := each(func(r hub.StoredResult) error {
		k := r.Record.Device + "/" + r.Record.ID.String()
		if !want[k] {
			t.Errorf("stored %s, which no device appended (or twice)", k)
		}
		delete(want, k)
		got++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 0 || got != len(f.ids) {
		t.Fatalf("stored %d of %d; %d never stored", got, len(f.ids), len(want))
	}
	return got
}
