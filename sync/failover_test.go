package sync_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

// TestDialer_FailsOverPastAClosingServer (issue 29, the NATS failover):
// the first server of a device's list accepts the TCP connection and
// closes it — a cluster node shutting down, a proxy in front of a dead
// one. paho, given the list, gave up at that server with EOF on every
// attempt, and the device never drained. Each connect now goes on to the
// next server, and the next connect starts after the one that failed.
func TestDialer_FailsOverPastAClosingServer(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close() // EOF before CONNACK
		}
	}()
	closing := "tcp://" + ln.Addr().String()
	dial, err := mqtt.Dialer(mqtt.Options{Broker: closing + "," + broker.URL(), CleanSession: true, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for k := 0; k < 2; k++ {
		c, err := dial(ctx, "pi-failover", nil)
		if err != nil {
			t.Fatalf("connect %d: %v", k, err)
		}
		if err := c.Publish(ctx, "outpost/v1/pi-failover/status", 1, false, []byte("{}")); err != nil {
			t.Fatalf("publish on the live server: %v", err)
		}
		c.Close()
	}
	if n := len(accepted); n != 1 {
		t.Errorf("the closing server was tried %d times; want once (the second connect starts at the server that worked)", n)
	}
	// Every server down: one error naming each.
	dead, _ := mqtt.Dialer(mqtt.Options{Broker: closing + ",tcp://127.0.0.1:1", ConnectTimeout: time.Second})
	if _, err := dead(ctx, "pi-failover", nil); err == nil || !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("all servers down: %v", err)
	}
	probe, err := mqtt.Prober("tcp://127.0.0.1:1," + broker.URL())
	if err != nil || probe(ctx) != nil {
		t.Fatalf("a prober over a list whose second server is up: %v", err)
	}
}
