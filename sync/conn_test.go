package sync

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestProbeWait_LostConnectionCountsAsOutage: a client that notices a lost
// connection late may probe for the first time after the broker is back.
// That first, successful probe must still end the wait (CI: the collector
// waited out a 30 s backoff after a 2 s outage). A broker that was never
// seen down — one that refuses at connect — does not cut the backoff.
func TestProbeWait_LostConnectionCountsAsOutage(t *testing.T) {
	up := func(context.Context) error { return nil }
	p := ProbeWait{Probe: up, Every: 20 * time.Millisecond}
	p.Connected() // a session was up, then lost
	start := time.Now()
	if err := p.Wait(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("after a lost connection the wait lasted %s: the first successful probe did not end it", took)
	}
	// Never connected (refused at connect): a reachable broker is no news.
	q := ProbeWait{Probe: up, Every: 20 * time.Millisecond}
	start = time.Now()
	q.Wait(context.Background(), 300*time.Millisecond)
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("a broker never seen down cut the backoff short after %s", took)
	}
	// Down, then up: ends the wait.
	down := true
	r := ProbeWait{Probe: func(context.Context) error {
		if down {
			down = false
			return errors.New("refused")
		}
		return nil
	}, Every: 20 * time.Millisecond}
	start = time.Now()
	r.Wait(context.Background(), 10*time.Second)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("down then up: waited %s", took)
	}
}
