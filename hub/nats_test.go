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

// TestCollector_NATSClusterNodeDies: a real 3-node NATS cluster (MQTT
// listener + JetStream on each, sessions replicated 3 ways); six devices
// spread over the nodes drain 1,800 records to a collector on node 2;
// node 0 is shut down mid-drain. Its devices reconnect to another node
// (each lists all three), and every record is stored exactly once.
func TestCollector_NATSClusterNodeDies(t *testing.T) {
	nc := testutil.StartNATSCluster(t, 3)
	h := testutil.StartCollector(t, filepath.Join(t.TempDir(), "hub.db"), nc.Brokers(2))
	const devices, per = 6, 300
	obs := map[string]*outbox.Outbox{}
	ids := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, devices)
	for d := 0; d < devices; d++ {
		name := fmt.Sprintf("pi-%d", d)
		ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ob.Close() })
		for i := 0; i < per; i++ {
			id, err := ob.Append(ctx, &outbox.Record{Device: name, Model: "kws", Version: "0.2.0", Task: "keyword-spotting",
				Output: []byte(fmt.Sprintf(`{"n":%d}`, i))}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ids[name+"/"+id.String()] = true
		}
		u, err := osync.NewUplink(ob, testutil.Dialer(t, nc.Brokers(d%3), true), osync.UplinkOptions{Device: name,
			BatchRecords: 3, Window: 1, // many small round trips: a drain long enough to kill a node in AckTimeout: 2 * time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
			Logger: testutil.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		obs[name] = ob
		go func() { done <- u.Run(ctx) }()
	}
	left := func() int64 {
		n := int64(0)
		for _, ob := range obs {
			st, _ := ob.Stats()
			n += st.Count
		}
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	node0 := func() int64 { // records still on the devices that prefer node 0
		n := int64(0)
		for d := 0; d < devices; d += 3 {
			st, _ := obs[fmt.Sprintf("pi-%d", d)].Stats()
			n += st.Count
		}
		return n
	}
	// Once node 0's devices have started draining, while they hold most.
	for node0() > 2*per*95/100 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	atKill, onNode0 := left(), node0()
	if onNode0 == 0 {
		t.Fatal("node 0's devices drained before the node could be killed: the test proves nothing")
	}
	nc.Nodes[0].Shutdown()
	deadline = time.Now().Add(120 * time.Second)
	for left() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := left(); n != 0 {
		t.Fatalf("%d records still in device outboxes 120 s after node 0 died", n)
	}
	cancel()
	for d := 0; d < devices; d++ {
		<-done
	}
	got := 0
	err := h.C.Each(func(r hub.StoredResult) error {
		k := r.Record.Device + "/" + r.Record.ID.String()
		if !ids[k] {
			t.Errorf("stored %s, which no device appended (or twice)", k)
		}
		delete(ids, k)
		got++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 0 || got != devices*per {
		t.Fatalf("stored %d of %d; %d never stored", got, devices*per, len(ids))
	}
	t.Logf("NATS cluster, node 0 shut down with %d records left (%d on its devices): %d stored exactly once; collector %+v", atKill, onNode0, got, h.C.Stats())
}
