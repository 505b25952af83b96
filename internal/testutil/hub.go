package testutil

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	osync "github.com/outpost-edge/outpost/sync"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

// Logger discards logs unless OUTPOST_TEST_LOG is set.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("OUTPOST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Dialer is an MQTT dialer with test-sized timeouts.
func Dialer(t testing.TB, url string, clean bool) osync.Dialer {
	d, err := mqtt.Dialer(mqtt.Options{Broker: url, CleanSession: clean, ConnectTimeout: 2 * time.Second, WriteTimeout: 3 * time.Second, KeepAlive: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Hub is a running collector.
type Hub struct {
	C      *hub.Collector
	Path   string
	cancel context.CancelFunc
	done   chan error
}

// StartCollector runs a collector on a bbolt store at path against the
// broker at url, and waits until it has subscribed.
func StartCollector(t testing.TB, path, url string) *Hub {
	t.Helper()
	return StartCollectorWith(t, path, url, hub.CollectorOptions{})
}

// StartCollectorWith is StartCollector with options (a signing key); the
// logger and short backoffs are filled in.
func StartCollectorWith(t testing.TB, path, url string, o hub.CollectorOptions) *Hub {
	t.Helper()
	o.Logger, o.MinBackoff, o.MaxBackoff = Logger(t), 50*time.Millisecond, 500*time.Millisecond
	c, err := hub.Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	h := RunCollector(t, c, url)
	h.Path = path
	return h
}

// RunCollector runs c against the broker at url until the test ends, and
// waits until it has subscribed.
func RunCollector(t testing.TB, c *hub.Collector, url string) *Hub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{C: c, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- c.Run(ctx, Dialer(t, url, false)) }()
	t.Cleanup(h.Stop)
	select {
	case <-c.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("collector did not subscribe")
	}
	return h
}

// Stop ends the collector and closes its store. Safe to call twice.
func (h *Hub) Stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.C.Close()
	h.cancel = nil
}
