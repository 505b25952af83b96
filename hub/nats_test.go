package hub_test

import (
	"context"
	"path/filepath"
	"strings"
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
	// Node 0 is reached through a proxy adding 5 ms each way: its devices
	// drain in a few seconds, not the ~0.1 s of loopback, so the node dies
	// while they hold most of theirs (without it, they were sometimes
	// empty before the test could act: "drained before the node could be
	// killed").
	slow := testutil.StartProxy(t, strings.TrimPrefix(nc.MQTTURLs[0], "tcp://"))
	slow.Delay(5 * time.Millisecond)
	f := startDevices(t, ctx, devices, per, 3, func(d int) string {
		if d%3 == 0 {
			return slow.URL() + "," + nc.MQTTURLs[1] + "," + nc.MQTTURLs[2]
		}
		return nc.Brokers(d % 3)
	})
	node0 := []string{"pi-0", "pi-3"} // the devices that prefer node 0
	testutil.Eventually(t, 60*time.Second, "node 0's devices to start draining", func() bool { return f.left(node0...) < 2*per })
	atKill, onNode0 := f.left(), f.left(node0...)
	if onNode0 == 0 {
		t.Fatal("node 0's devices drained before the node could be killed: the test proves nothing")
	}
	nc.Nodes[0].Shutdown()
	f.drainWithin(t, 60*time.Second, cancel)
	got := f.storedOnce(t, h.C.Each)
	t.Logf("NATS cluster, node 0 shut down with %d records left (%d on its devices): %d stored exactly once; collector %+v", atKill, onNode0, got, h.C.Stats())
}
