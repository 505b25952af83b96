package sync_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	gosync "sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models/pkg"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
	"github.com/outpost-edge/outpost/sync/memmqtt"
)

// TestFetcher_OverALossyLink (issue 30: the engine tested without
// mosquitto): a model package published on the real hub's shelf reaches a
// device's real uplink and fetcher through the in-memory broker while one
// chunk in six is lost and the device's connection is cut twice
// mid-download; the package installed is byte for byte the one published,
// the lost chunks were asked for again, and nothing was fetched twice
// whole.
func TestFetcher_OverALossyLink(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, hubKey, _ := ed25519.GenerateKey(rand.Reader)
	_, programKey, _ := ed25519.GenerateKey(rand.Reader)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "manifest.json"), []byte(`{"name":"crop-disease"}`), 0o644)
	model := make([]byte, 200<<10)
	rand.Read(model)
	os.WriteFile(filepath.Join(src, "model.onnx"), model, 0o644)
	var pack bytes.Buffer
	if _, err := pkg.Pack(&pack, src, "crop-disease", "2.0", 2, false, programKey, nil); err != nil {
		t.Fatal(err)
	}
	shelf, err := hub.OpenShelf(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := shelf.Publish(pack.Bytes(), []string{"dev-1"}, 8<<10)
	if err != nil {
		t.Fatal(err)
	}
	st, err := hub.OpenBolt(filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	col, err := hub.New(st, hub.CollectorOptions{ClientID: "hub", Key: hubKey, Shelf: shelf, WarnEvery: -1, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()

	b := memmqtt.New()
	var mu gosync.Mutex
	chunks, cuts := 0, 0
	b.Fault = func(client, topic string, payload []byte) memmqtt.Fault {
		if client != "hub" || topic != osync.CmdTopic("dev-1") || osync.CmdKind(payload) != "chunk" {
			return memmqtt.Deliver
		}
		mu.Lock()
		defer mu.Unlock()
		chunks++
		switch {
		case chunks%6 == 0:
			return memmqtt.Drop
		case (chunks == 7 || chunks == 15) && b.Kill("outpost-dev-1"):
			cuts++ // the device's link goes down as this chunk is sent
			return memmqtt.Drop
		}
		return memmqtt.Deliver
	}
	go col.Run(ctx, b.Dialer(true))
	testutil.Eventually(t, 10*time.Second, "the collector to subscribe", col.Connected)

	installed := make(chan []byte, 1)
	f, err := osync.OpenFetcher(osync.FetcherOptions{Dir: t.TempDir(), Device: "dev-1", HubKeys: []ed25519.PublicKey{hubKey.Public().(ed25519.PublicKey)},
		Accept: func(*osync.Offer) error { return nil }, Timeout: time.Second, // a lost chunk is asked again after this; shorter, a loaded CI machine asks for ones still in flight
		Install: func(path string, o *osync.Offer) error {
			b, err := os.ReadFile(path)
			installed <- b
			return err
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	u, err := osync.NewUplink(ob, b.Dialer(false), osync.UplinkOptions{Device: "dev-1", Fetcher: f, HubKeys: []ed25519.PublicKey{hubKey.Public().(ed25519.PublicKey)},
		Models: func() map[string]int64 { return map[string]int64{"crop-disease": 1} }, Idle: 50 * time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go u.Run(ctx)
	var got []byte
	testutil.Eventually(t, 60*time.Second, "the package installed", func() bool {
		select {
		case got = <-installed:
			return true
		default:
			return false
		}
	})
	if !bytes.Equal(got, pack.Bytes()) {
		t.Fatalf("installed %d bytes, published %d: not the same package", len(got), len(pack.Bytes()))
	}
	fs := f.Stats()
	mu.Lock()
	sent, cut := chunks, cuts
	mu.Unlock()
	n := int64(pub.Offer.NumChunks())
	if cut != 2 || fs.Resent == 0 || fs.Chunks != n || int64(sent) >= 2*n {
		t.Fatalf("chunks: %d in the package, %d sent by the hub, %d stored, %d asked again, %d cuts", n, sent, fs.Chunks, fs.Resent, cut)
	}
	t.Logf("%d chunks of 8 KiB through a link losing one in six and cut twice: %d sent by the hub, %d asked for again; installed intact", n, sent, fs.Resent)
}
