package hub_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// BenchmarkHubPage: what one hub page view costs (fleet view + chart
// counts + the recent-results table) on a bbolt store of
// OUTPOST_PAGE_RESULTS results (default 200,000) from 500 devices over 60
// days, against the baseline measured in the same run: one pass over
// every result, which is what each view cost before the indexes (92 ms at
// 10k, 1.57 s at 200k, measured from outside).
func BenchmarkHubPage(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_PAGE_RESULTS")); err == nil && v > 0 {
		n = v
	}
	st, err := hub.OpenBolt(filepath.Join(b.TempDir(), "hub.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	g := outbox.NewIDGen()
	now := time.Now().UTC()
	labels := []string{"healthy", "rust", "leaf_spot", "blight", "mosaic"}
	const per = 5000
	for i := 0; i < n; i += per {
		recvd := now.Add(-time.Duration(60*24*(n-i)/n) * time.Hour)
		var batches []*osync.Batch
		for dev := 0; dev < 10; dev++ {
			bt := &osync.Batch{ID: g.New(), Device: fmt.Sprintf("kiosk-%03d", (i/per*10+dev)%500), Sent: recvd}
			for k := 0; k < per/10 && i+dev*per/10+k < n; k++ {
				bt.Records = append(bt.Records, &outbox.Record{ID: g.New(), Device: bt.Device, Model: "crop-disease", Version: "0.2.0", Task: "image_classification",
					Output: []byte(`{"outcome":"diagnosis","label":"` + labels[k%5] + `","score":0.9}`)})
			}
			batches = append(batches, bt)
		}
		if _, err := st.Commit(ctx, batches, recvd); err != nil {
			b.Fatal(err)
		}
	}
	view := func() {
		if _, _, err := hub.FleetView(ctx, st, now, 30); err != nil {
			b.Fatal(err)
		}
		if rs, err := hub.RecentResults(ctx, st, hub.ResultFilter{Limit: 20}); err != nil || len(rs) != 20 {
			b.Fatalf("recent: %d %v", len(rs), err)
		}
	}
	scan := func() {
		k := 0
		st.Each(ctx, func(hub.StoredResult) error { k++; return nil })
		if k != n {
			b.Fatalf("scanned %d of %d", k, n)
		}
	}
	timeIt := func(f func(), reps int) time.Duration {
		start := time.Now()
		for i := 0; i < reps; i++ {
			f()
		}
		return time.Since(start) / time.Duration(reps)
	}
	base := timeIt(scan, 3)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		view()
	}
	b.StopTimer()
	per1 := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(per1.Microseconds())/1000, "ms/view")
	b.ReportMetric(float64(base.Microseconds())/1000, "ms/scan-baseline")
	b.Logf("%d results: a page view %s, one pass over every result (the old cost of each view) %s: ratio %.4f", n, per1, base, float64(per1)/float64(base))
}
