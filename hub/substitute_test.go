package hub_test

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestSubstitutedBatch_DeletesNothing replays issue 25's first hole with
// a broker login and keys pinned. The hub misses a device's batch (no
// collector is subscribed when it goes out); a stranger who saw it
// re-publishes it under the same batch ID, each record either cut to its
// ID + 2 bytes (the hub signs "rejected") or replaced by a decodable
// substitute labelled healthy (the hub signs "stored"). Before acks named
// the bytes, the device deleted 5 of 5 real results in both cases. Now the
// ack's sums do not match what the device sent, so it keeps every record;
// the truncated copies were never stored, so the device's resend is; the
// substitutes hold the IDs, so the hub refuses the real records as a
// conflict and the device keeps them.
func TestSubstitutedBatch_DeletesNothing(t *testing.T) {
	for _, mode := range []string{"truncated", "substituted"} {
		t.Run(mode, func(t *testing.T) { substituted(t, mode) })
	}
}

func substituted(t *testing.T, mode string) {
	pub, key, _ := ed25519.GenerateKey(nil)
	broker := testutil.StartMosquitto(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	stranger, err := testutil.Dialer(t, broker.URL(), true)(ctx, "stranger", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	seen := make(chan *osync.Batch, 16)
	stranger.Subscribe(ctx, osync.ResultsTopic("victim"), 1, func(m osync.Message) {
		if b, err := osync.DecodeBatch(m.Payload); err == nil {
			seen <- b
		}
	})

	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	for i := 0; i < 5; i++ {
		if _, err := ob.Append(ctx, &outbox.Record{Device: "victim", Model: "crop", Version: "1", Task: "image_classification",
			Output: []byte(`{"label":"blight"}`)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	u, err := osync.NewUplink(ob, testutil.Dialer(t, broker.URL(), true), osync.UplinkOptions{Device: "victim", HubKeys: keysFor(pub),
		AckTimeout: 2 * time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	go u.Run(ctx)
	var real *osync.Batch
	select {
	case real = <-seen: // published with no collector listening: the hub missed it
	case <-time.After(20 * time.Second):
		t.Fatal("the device published nothing")
	}

	c, err := hub.Open(filepath.Join(t.TempDir(), "hub.db"), hub.CollectorOptions{Key: key, Logger: testutil.Logger(t),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunCollector(t, c, broker.URL())

	forged := osync.EncodeBatch(&osync.Batch{ID: real.ID, Device: "victim", Sent: real.Sent, Records: fakes(real.Records)})
	if mode == "truncated" {
		forged = truncatedBatch(real)
	}
	if err := stranger.Publish(ctx, osync.ResultsTopic("victim"), 1, false, forged); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the hub's signed ack to the stranger's copy never reached the device", func() bool {
		return u.Stats().Mismatched >= 5
	})
	if st, _ := ob.Stats(); st.Count != 5 {
		t.Fatalf("the device deleted %d of its 5 results on an ack for a stranger's copy", 5-st.Count)
	}
	switch mode {
	case "truncated":
		// Nothing was stored for the IDs: the device's resend is.
		testutil.Eventually(t, 30*time.Second, "the real records were not stored after the resend", func() bool {
			st, _ := ob.Stats()
			return st.Count == 0
		})
		n := 0
		c.Each(func(r hub.StoredResult) error {
			if string(r.Record.Output) == `{"label":"blight"}` {
				n++
			}
			return nil
		})
		if n != 5 {
			t.Fatalf("hub holds %d real results, want 5", n)
		}
	case "substituted":
		testutil.Eventually(t, 30*time.Second, "the hub did not refuse the real records as a conflict", func() bool {
			return c.Stats().Conflicts >= 5
		})
		if st, _ := ob.Stats(); st.Count != 5 {
			t.Fatalf("the device deleted %d real results the hub holds substitutes for", 5-st.Count)
		}
	}
	t.Logf("%s: acks naming other bytes kept: %d records; device left with %d; hub conflicts %d",
		mode, u.Stats().Mismatched, func() int64 { st, _ := ob.Stats(); return st.Count }(), c.Stats().Conflicts)
}

func fakes(recs []*outbox.Record) []*outbox.Record {
	var out []*outbox.Record
	for _, r := range recs {
		f := *r
		f.Output = []byte(`{"label":"healthy"}`)
		out = append(out, &f)
	}
	return out
}

// truncatedBatch frames each record as its version byte, ID and 2 bytes
// (an uncompressed v1 batch written by hand, docs/PROTOCOL.md).
func truncatedBatch(b *osync.Batch) []byte {
	out := append([]byte{'O', 'B', osync.ProtocolVersion, 0}, b.ID[:]...)
	out = binary.AppendUvarint(out, uint64(len(b.Device)))
	out = append(out, b.Device...)
	out = binary.AppendVarint(out, b.Sent.UnixMilli())
	out = binary.AppendUvarint(out, uint64(len(b.Records)))
	for _, r := range b.Records {
		enc := r.Encode(nil)[:19]
		out = binary.AppendUvarint(out, uint64(len(enc)))
		out = append(out, enc...)
	}
	return out
}
