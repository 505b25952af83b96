package sync_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// BenchmarkEvidenceRTT: one 512 KiB photo uploaded through a link with a
// 300 ms round trip (150 ms each way), one chunk in flight (the old way)
// against four, in the same run. Issue 27: a chunk per round trip is 16
// KiB per 300 ms at best, whatever the link's bandwidth.
func BenchmarkEvidenceRTT(b *testing.B) {
	jpeg, err := os.ReadFile(filepath.Join(testutil.ModelsDir(b), "crop-disease", "samples", "rust.jpg"))
	if err != nil {
		b.Fatal(err)
	}
	photo := make([]byte, 512<<10)
	rand.Read(photo)
	copy(photo, jpeg[:512])
	sum := sha256.Sum256(photo)
	took := map[int]time.Duration{}
	for _, window := range []int{1, 4} {
		broker := testutil.StartMosquitto(b, false)
		proxy := testutil.StartProxy(b, broker.Addr())
		proxy.Delay(150 * time.Millisecond)
		h := testutil.StartCollector(b, filepath.Join(b.TempDir(), "hub.db"), broker.URL())
		ob, err := outbox.Open(filepath.Join(b.TempDir(), "o.db"), outbox.Options{})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		// The result first (acked), then its photo.
		resID, _ := ob.Append(ctx, &outbox.Record{Device: "pi-rtt", Model: "crop", Version: "1", Task: "image_classification", Output: []byte(`{"label":"rust"}`)}, nil)
		ref := &outbox.Evidence{ContentType: "image/jpeg", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(photo))}
		if _, err := ob.Append(ctx, &outbox.Record{Device: "pi-rtt", Model: "crop", Version: "1", Task: "evidence", Tier: outbox.TierEvidence,
			Priority: outbox.Bulk, Output: []byte(`{"of":"` + resID.String() + `"}`), Evidence: ref}, photo); err != nil {
			b.Fatal(err)
		}
		u, err := osync.NewUplink(ob, testutil.Dialer(b, proxy.URL(), true), osync.UplinkOptions{Device: "pi-rtt", EvidenceWindow: window,
			AckTimeout: 10 * time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Logger: testutil.Logger(b)})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		go u.Run(ctx)
		testutil.Eventually(b, 5*time.Minute, "the photo was not uploaded", func() bool { return u.EvidenceStats().Uploaded == 1 })
		took[window] = time.Since(start)
		b.Logf("window %d: %s, %+v", window, took[window], u.EvidenceStats())
		cancel()
		ob.Close()
		h.Stop()
	}
	b.ReportMetric(took[1].Seconds(), "s/one-in-flight")
	b.ReportMetric(took[4].Seconds(), "s/four-in-flight")
	b.Logf("512 KiB photo over a 300 ms round trip: one chunk in flight %s, four %s (ratio %.2f)", took[1].Round(100*time.Millisecond), took[4].Round(100*time.Millisecond), took[4].Seconds()/took[1].Seconds())
}
