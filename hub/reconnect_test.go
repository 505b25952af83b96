package hub_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

// TestCollector_ReconnectsWhenBrokerReturns (issue 27): after an outage the
// collector waited out its own backoff (up to 60 s) while devices were back
// in 2 s. With a probe it connects within about a second of the broker's
// return, whatever its backoff has grown to.
func TestCollector_ReconnectsWhenBrokerReturns(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	probe, err := mqtt.Prober(broker.URL())
	if err != nil {
		t.Fatal(err)
	}
	c, err := hub.Open(filepath.Join(t.TempDir(), "hub.db"), hub.CollectorOptions{Logger: testutil.Logger(t),
		MinBackoff: 30 * time.Second, MaxBackoff: time.Minute, Probe: probe})
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunCollector(t, c, broker.URL())
	broker.Kill()
	killed := time.Now()
	testutil.Eventually(t, 20*time.Second, "the collector did not notice the broker died", func() bool { return !c.Connected() })
	// The outage lasts 2 s (the scenario, not a wait): the probes fail meanwhile.
	testutil.Eventually(t, 10*time.Second, "", func() bool { return time.Since(killed) > 2*time.Second })
	broker.Start()
	took := testutil.Eventually(t, 20*time.Second, "the collector did not reconnect", c.Connected)
	if took > 5*time.Second {
		t.Fatalf("reconnected %s after the broker returned, with a 30 s backoff: the probe did not cut it short", took)
	}
	t.Logf("broker back; collector connected %s later (backoff was 30 s)", took.Round(10*time.Millisecond))
}
