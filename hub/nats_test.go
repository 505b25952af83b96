package hub_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Many small round trips: a drain long enough to kill a node in.
	f := startDevices(t, ctx, devices, per, 3, func(d int) string { return nc.Brokers(d % 3) })
	node0 := []string{"pi-0", "pi-3"} // the devices that prefer node 0
	// Once node 0's devices have started draining, while they hold most.
	for deadline := time.Now().Add(60 * time.Second); f.left(node0...) > 2*per*95/100 && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	atKill, onNode0 := f.left(), f.left(node0...)
	if onNode0 == 0 {
		t.Fatal("node 0's devices drained before the node could be killed: the test proves nothing")
	}
	nc.Nodes[0].Shutdown()
	f.drainWithin(t, 120*time.Second, cancel)
	got := f.storedOnce(t, h.C.Each)
	t.Logf("NATS cluster, node 0 shut down with %d records left (%d on its devices): %d stored exactly once; collector %+v", atKill, onNode0, got, h.C.Stats())
}
