package sync_test

import (
	"context"
	"crypto/ed25519"
	gosync "sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestUplink_Reviews (issue 25, hole 6): on a device that pins no hub key,
// one unsigned message put "Spray 5 litres of diesel" on the kiosk; a
// review dated 9999 stayed first for good; 1,500 forged reviews overflowed
// the command queue and dropped evidence acks and offers. Now a review is
// taken only when signed by a pinned key, its time is bounded to the
// present, and reviews queue apart from the commands the sync needs.
func TestUplink_Reviews(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	pub, key, _ := ed25519.GenerateKey(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stranger, err := dialer(t, broker.URL(), true)(ctx, "stranger", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	diesel := &osync.Review{Device: "kiosk", Of: outbox.NewIDGen().New(), Label: "healthy", Advice: "Not blight. Spray 5 litres of diesel on each plant", Lang: "en", Time: time.Now().UTC()}

	run := func(keys []ed25519.PublicKey) (*osync.Uplink, func() []osync.Review) {
		var mu gosync.Mutex
		var got []osync.Review
		_, u := device(t, "kiosk", broker.URL(), 0, osync.UplinkOptions{HubKeys: keys, OnReview: func(r *osync.Review) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, *r)
			return nil
		}})
		uctx, stop := context.WithCancel(ctx)
		t.Cleanup(stop)
		go u.Run(uctx)
		testutil.Eventually(t, 10*time.Second, "the device did not connect", func() bool { return u.Stats().Connects > 0 })
		return u, func() []osync.Review { mu.Lock(); defer mu.Unlock(); return append([]osync.Review(nil), got...) }
	}

	// No key pinned: even a review the hub signed is not shown.
	u, got := run(nil)
	stranger.Publish(ctx, osync.CmdTopic("kiosk"), 1, false, osync.EncodeReview(diesel, nil))
	stranger.Publish(ctx, osync.CmdTopic("kiosk"), 1, false, osync.EncodeReview(diesel, key))
	testutil.Eventually(t, 10*time.Second, "the reviews were not refused", func() bool {
		_, _, refused := u.ReviewStats()
		return refused == 2
	})
	if len(got()) != 0 {
		t.Fatalf("a device pinning no hub key took %d reviews", len(got()))
	}

	// Key pinned: a flood of 1,500 unsigned reviews, then the hub's own,
	// dated 9999: the hub's arrives, dated no later than now.
	u, got = run([]ed25519.PublicKey{pub})
	for i := 0; i < 1500; i++ {
		stranger.Publish(ctx, osync.CmdTopic("kiosk"), 0, false, osync.EncodeReview(diesel, nil))
	}
	real := &osync.Review{Device: "kiosk", Of: outbox.NewIDGen().New(), Label: "rust", Advice: "Remove infected leaves.", Lang: "en",
		Time: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}
	testutil.Eventually(t, 30*time.Second, "the hub's signed review never arrived through the flood", func() bool {
		stranger.Publish(ctx, osync.CmdTopic("kiosk"), 1, false, osync.EncodeReview(real, key))
		return len(got()) > 0
	})
	r := got()[0]
	if r.Advice != real.Advice || r.Time.After(time.Now().Add(time.Minute)) {
		t.Fatalf("review taken: %+v", r)
	}
	_, _, refused := u.ReviewStats()
	t.Logf("unpinned device: 2 of 2 reviews refused; pinned: %d forged refused, the hub's taken dated %s", refused, r.Time.Format(time.RFC3339))
}
