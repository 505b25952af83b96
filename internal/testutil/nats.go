package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSCluster is a real NATS server cluster on loopback, embedded from the
// nats-server module: JetStream on every node (MQTT needs it) and an MQTT
// listener on each, sessions and QoS 1 messages replicated 3 ways.
type NATSCluster struct {
	Nodes    []*server.Server
	MQTTURLs []string
}

// StartNATSCluster starts n nodes and waits until JetStream has a leader.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	dir := t.TempDir()
	client, cluster, mqtt := make([]int, n), make([]int, n), make([]int, n)
	var routes []string
	for i := 0; i < n; i++ {
		client[i], cluster[i], mqtt[i] = FreePort(t), FreePort(t), FreePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cluster[i]))
	}
	c := &NATSCluster{}
	for i := 0; i < n; i++ {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1", Port: client[i],
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i)),
			Cluster: server.ClusterOpts{Name: "outpost", Host: "127.0.0.1", Port: cluster[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
			MQTT:    server.MQTTOpts{Host: "127.0.0.1", Port: mqtt[i], StreamReplicas: min(n, 3)},
			NoLog:   os.Getenv("OUTPOST_TEST_LOG") == "", NoSigs: true,
		}
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatalf("nats node %d: %v", i, err)
		}
		if !o.NoLog {
			s.ConfigureLogger()
		}
		go s.Start()
		c.Nodes = append(c.Nodes, s)
		c.MQTTURLs = append(c.MQTTURLs, fmt.Sprintf("tcp://127.0.0.1:%d", mqtt[i]))
	}
	t.Cleanup(func() {
		for _, s := range c.Nodes {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for _, s := range c.Nodes {
		if !s.ReadyForConnections(time.Until(deadline)) {
			t.Fatalf("nats node %s not ready", s.Name())
		}
	}
	for time.Now().Before(deadline) {
		leader, current := false, 0
		for _, s := range c.Nodes {
			leader = leader || s.JetStreamIsLeader()
			if s.JetStreamIsCurrent() {
				current++
			}
		}
		if leader && current == n {
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("nats cluster: no JetStream leader within 60 s")
	return nil
}

// Brokers lists the MQTT URLs starting at node i, for a client that should
// prefer that node and fail over to the others.
func (c *NATSCluster) Brokers(i int) string {
	var out []string
	for k := range c.MQTTURLs {
		out = append(out, c.MQTTURLs[(i+k)%len(c.MQTTURLs)])
	}
	return strings.Join(out, ",")
}
