package hub_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
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
	n := pageResults()
	st, err := hub.OpenBolt(filepath.Join(b.TempDir(), "hub.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	now := time.Now().UTC()
	seedPage(b, st, n, now)
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
	pageRatio(b, n, view, scan, "one pass over every result (the old cost of each view)")
}

// BenchmarkHubPagePostgres: the same page view on a PostgreSQL store,
// against the SQL a view would run without the aggregates: GROUP BY day,
// device, model and label over the same 35 days of result rows.
func BenchmarkHubPagePostgres(b *testing.B) {
	n := pageResults()
	pg := testutil.StartPostgres(b)
	url := pg.NewDatabase(b)
	ctx := context.Background()
	st, err := hub.OpenPostgres(ctx, url, hub.PGOptions{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	seedPage(b, st, n, now)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	conn.Exec(ctx, "ANALYZE")
	view := func() {
		if _, _, err := hub.FleetView(ctx, st, now, 30); err != nil {
			b.Fatal(err)
		}
		if rs, err := hub.RecentResults(ctx, st, hub.ResultFilter{Limit: 20}); err != nil || len(rs) != 20 {
			b.Fatalf("recent: %d %v", len(rs), err)
		}
	}
	groupBy := func() {
		rows, err := conn.Query(ctx, `SELECT date_trunc('day', received), device, model, label, count(*) FROM results
			WHERE received >= $1 AND label IS NOT NULL GROUP BY 1, 2, 3, 4`, now.AddDate(0, 0, -35))
		if err != nil {
			b.Fatal(err)
		}
		k := 0
		for rows.Next() {
			k++
		}
		rows.Close()
		if k == 0 {
			b.Fatal("the GROUP BY found nothing")
		}
	}
	pageRatio(b, n, view, groupBy, "the SQL GROUP BY over the same rows")
}

func pageResults() int {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_PAGE_RESULTS")); err == nil && v > 0 {
		n = v
	}
	return n
}

// pageRatio times view against base (3 runs) and reports both.
func pageRatio(b *testing.B, n int, view, base func(), what string) {
	timeIt := func(f func(), reps int) time.Duration {
		start := time.Now()
		for i := 0; i < reps; i++ {
			f()
		}
		return time.Since(start) / time.Duration(reps)
	}
	baseline := timeIt(base, 3)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		view()
	}
	b.StopTimer()
	per1 := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(per1.Microseconds())/1000, "ms/view")
	b.ReportMetric(float64(baseline.Microseconds())/1000, "ms/baseline")
	b.Logf("%d results: a page view %s, %s %s: ratio %.4f", n, per1, what, baseline, float64(per1)/float64(baseline))
}

// seedPage stores n results from 500 devices over 60 days.
func seedPage(b *testing.B, st hub.Store, n int, now time.Time) {
	ctx := context.Background()
	g := outbox.NewIDGen()
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
}
