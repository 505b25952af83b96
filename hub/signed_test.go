package hub_test

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestSignedAcks_ForgeriesDeleteNothing: the hub signs its acks; the
// device pins the hub's key. While the collector is cut off (nothing
// stored), a forger answers every batch the device publishes with an
// unsigned ack, one signed by another key, and the hub's real signed acks
// for another device replayed to this one, each naming every record. The
// device deletes nothing until the hub has stored, then drains exactly.
func TestSignedAcks_ForgeriesDeleteNothing(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	_, wrong, _ := ed25519.GenerateKey(nil)
	broker := testutil.StartMosquitto(t, false)
	proxy := testutil.StartProxy(t, broker.Addr())
	path := filepath.Join(t.TempDir(), "hub.db")
	c, err := hub.Open(path, hub.CollectorOptions{Key: key, Logger: testutil.Logger(t), MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunCollector(t, c, proxy.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The forger: sees every batch and every ack on the broker.
	forger, err := testutil.Dialer(t, broker.URL(), true)(ctx, "forger", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	forged := make(chan [2]any, 1000)
	forger.Subscribe(ctx, osync.TopicPrefix+"+/results", 1, func(m osync.Message) {
		b, err := osync.DecodeBatch(m.Payload)
		if err != nil || b.Device != "victim" {
			return
		}
		var ids []outbox.ID
		for _, r := range b.Records {
			ids = append(ids, r.ID)
		}
		a := &osync.Ack{Batch: b.ID, Stored: ids}
		forged <- [2]any{"victim", osync.EncodeAck(a)}
		forged <- [2]any{"victim", osync.SignAck(a, "victim", wrong)}
	})
	forger.Subscribe(ctx, osync.TopicPrefix+"other/ack", 1, func(m osync.Message) {
		forged <- [2]any{"victim", m.Payload} // a real signed ack, replayed
	})
	go func() {
		for f := range forged {
			forger.Publish(ctx, osync.AckTopic(f[0].(string)), 1, false, f[1].([]byte))
		}
	}()

	device := func(name string, n int) (*outbox.Outbox, *osync.Uplink) {
		ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ob.Close() })
		for i := 0; i < n; i++ {
			if _, err := ob.Append(ctx, &outbox.Record{Device: name, Model: "m", Version: "1", Task: "t", Output: []byte(`{}`)}, nil); err != nil {
				t.Fatal(err)
			}
		}
		u, err := osync.NewUplink(ob, testutil.Dialer(t, broker.URL(), true), osync.UplinkOptions{Device: name, HubKeys: keysFor(pub),
			BatchRecords: 10, Window: 4, AckTimeout: time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
			Logger: testutil.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		go u.Run(ctx)
		return ob, u
	}
	// "other" drains while the hub is reachable: its real acks are what
	// the forger replays.
	other, _ := device("other", 30)
	testutil.Eventually(t, 20*time.Second, "the other device did not drain", func() bool { st, _ := other.Stats(); return st.Count == 0 })
	proxy.Stall(true) // the hub stores nothing from here
	victim, u := device("victim", 200)
	// Wait for forgeries to arrive: every one of the victim's first batches
	// is answered by the forger three ways.
	testutil.Eventually(t, 20*time.Second, "no forged ack reached the device", func() bool { return u.Stats().ForgedAcks >= 12 })
	st, _ := victim.Stats()
	us := u.Stats()
	if st.Count != 200 {
		t.Fatalf("the victim deleted %d records the hub never stored (forged acks refused: %d)", 200-st.Count, us.ForgedAcks)
	}
	if us.ForgedAcks == 0 {
		t.Fatal("no forged ack reached the device: the test forged nothing")
	}
	proxy.Stall(false)
	testutil.Eventually(t, 60*time.Second, "records left after the hub came back", func() bool { st, _ = victim.Stats(); return st.Count == 0 })
	if st.Count != 0 {
		t.Fatalf("%d records left after the hub came back", st.Count)
	}
	stored := 0
	c.Each(func(r hub.StoredResult) error {
		if strings.HasPrefix(r.Record.Device, "victim") {
			stored++
		}
		return nil
	})
	if stored != 200 {
		t.Fatalf("hub stored %d of the victim's 200", stored)
	}
	t.Logf("forged acks refused while the hub was cut off: %d (unsigned, wrong key, replayed from another device); deleted before the hub stored: 0; then 200 stored and deleted; uplink %+v",
		us.ForgedAcks, u.Stats())
}

// keysFor pins pub — unless OUTPOST_MUTATE_NOKEYS is set: the mutation
// run, which must see the forgeries delete records.
func keysFor(pub ed25519.PublicKey) []ed25519.PublicKey {
	if os.Getenv("OUTPOST_MUTATE_NOKEYS") != "" {
		return nil
	}
	return []ed25519.PublicKey{pub}
}
