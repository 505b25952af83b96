package hub_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestDeviceKeys_Enrolment (issue 25, holes 1 and 5): a device's first
// signed batch enrols its key; after that a batch for it that is unsigned
// or signed by another key — published by anyone the broker lets write on
// its topic — is refused and stores nothing, and so is a bundle on a
// stick not signed by it (one for a device that never wrote it was
// stored before).
func TestDeviceKeys_Enrolment(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	h := testutil.StartCollector(t, filepath.Join(t.TempDir(), "hub.db"), broker.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, devKey, _ := ed25519.GenerateKey(nil)
	_, strangerKey, _ := ed25519.GenerateKey(nil)

	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	for i := 0; i < 3; i++ {
		ob.Append(ctx, &outbox.Record{Device: "kiosk-1", Model: "crop", Version: "1", Task: "t", Output: []byte(`{"label":"rust"}`)}, nil)
	}
	u, _ := osync.NewUplink(ob, testutil.Dialer(t, broker.URL(), true), osync.UplinkOptions{Device: "kiosk-1", DeviceKey: devKey,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Logger: testutil.Logger(t)})
	uctx, stop := context.WithCancel(ctx)
	go u.Run(uctx)
	testutil.Eventually(t, 20*time.Second, "the signed batches were not stored", func() bool { n, _ := h.C.Count(); return n == 3 })
	stop()
	devs, _ := h.C.Devices()
	if len(devs) != 1 || devs[0].KeyFingerprint != osync.Fingerprint(devKey.Public().(ed25519.PublicKey)) {
		t.Fatalf("the device was not enrolled with its key: %+v", devs)
	}

	stranger, err := testutil.Dialer(t, broker.URL(), true)(ctx, "stranger", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	g := outbox.NewIDGen()
	forged := func() []byte {
		return osync.EncodeBatch(&osync.Batch{ID: g.New(), Device: "kiosk-1", Sent: time.Now(), Records: []*outbox.Record{
			{ID: g.New(), Device: "kiosk-1", Model: "crop", Version: "1", Task: "t", Output: []byte(`{"label":"blight"}`)}}})
	}
	stranger.Publish(ctx, osync.ResultsTopic("kiosk-1"), 1, false, forged())
	stranger.Publish(ctx, osync.ResultsTopic("kiosk-1"), 1, false, osync.SignBatch(forged(), strangerKey))
	testutil.Eventually(t, 10*time.Second, "the forged batches were not refused", func() bool { return h.C.Stats().NotDevice == 2 })
	if n, _ := h.C.Count(); n != 3 {
		t.Fatalf("the hub stored %d results, want the device's 3", n)
	}

	// Bundles: the device's own stored; a stranger's for it refused whole.
	dir := t.TempDir()
	write := func(name string, key ed25519.PrivateKey) string {
		var buf bytes.Buffer
		rec := &outbox.Record{ID: g.New(), Device: "kiosk-1", Model: "crop", Version: "1", Task: "t", Output: []byte(`{"label":"blight"}`)}
		if _, err := osync.WriteBundle(&buf, g.New(), "kiosk-1", time.Now(), []*outbox.Record{rec}, nil, key); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+osync.BundleExt)
		os.WriteFile(p, buf.Bytes(), 0o644)
		return p
	}
	for _, c := range []struct {
		name string
		key  ed25519.PrivateKey
		ok   bool
	}{{"unsigned", nil, false}, {"stranger", strangerKey, false}, {"device", devKey, true}} {
		_, _, _, err := hub.ImportBundle(ctx, h.C.Store(), write(c.name, c.key), nil, nil, time.Now())
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, hub.ErrNotDevice)) {
			t.Errorf("%s bundle: %v", c.name, err)
		}
	}
	if n, _ := h.C.Count(); n != 4 {
		t.Fatalf("after the bundles the hub has %d results, want 4 (only the device's bundle stored)", n)
	}
	t.Logf("enrolled %s on first contact; refused %d forged batches and 2 forged bundles; stored only the device's", devs[0].KeyFingerprint, h.C.Stats().NotDevice)
}
