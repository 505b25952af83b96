package hub_test

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/httpguard"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// seedFleet stores five weeks of results for three devices: pi-1's rust
// share jumps this week (an outbreak), pi-2 has always had as much rust
// (no signal), pi-3 went quiet ten days ago (stale).
func seedFleet(t *testing.T, st hub.Store) {
	ctx := context.Background()
	g := outbox.NewIDGen()
	now := time.Now().UTC()
	put := func(dev string, daysAgo int, label string, n int) {
		var recs []*outbox.Record
		for i := 0; i < n; i++ {
			recs = append(recs, &outbox.Record{ID: g.New(), Device: dev, Model: "crop-disease", Version: "0.2.0", Task: "image-classification",
				Output: []byte(`{"outcome":"diagnosis","label":"` + label + `","score":0.91,"uncertain":false,"lang":"sw"}`)})
		}
		if _, err := st.Commit(ctx, []*osync.Batch{{ID: g.New(), Device: dev, Sent: now, Records: recs}}, now.AddDate(0, 0, -daysAgo)); err != nil {
			t.Fatal(err)
		}
	}
	for d := 10; d < 34; d += 3 {
		put("pi-1", d, "healthy", 3)
		put("pi-2", d, "healthy", 2)
		put("pi-2", d, "rust", 1)
		put("pi-3", d, "leaf_spot", 1)
	}
	put("pi-1", 12, "rust", 1)
	for d := 1; d < 5; d++ {
		put("pi-1", d, "rust", 2)
		put("pi-1", d, "healthy", 1)
		put("pi-2", d, "healthy", 2)
		put("pi-2", d, "rust", 1)
	}
	st.UpdateDevice(ctx, "pi-1", func(d *hub.DeviceStatus) error { d.State, d.Version, d.Backlog = "online", "0.3.0", 4; return nil })
	st.UpdateDevice(ctx, "pi-2", func(d *hub.DeviceStatus) error { d.State, d.Version = "offline", "0.3.0"; return nil })
	st.UpdateDevice(ctx, "pi-3", func(d *hub.DeviceStatus) error {
		d.State, d.LastSeen = "offline", now.AddDate(0, 0, -10)
		return nil
	})
}

// TestHubPage: the hub page in headless Chromium, on both stores, in two
// languages: the fleet table (online/offline, the stale device flagged),
// the server-drawn chart, and the outbreak watch listing pi-1's rust
// (its share jumped) but not pi-2's (always that high). Screenshots go to
// artifacts/.
func TestHubPage(t *testing.T) {
	pg := testutil.StartPostgres(t)
	stores := map[string]func(t *testing.T) hub.Store{
		"bolt": func(t *testing.T) hub.Store {
			st, err := hub.OpenBolt(filepath.Join(t.TempDir(), "hub.db"))
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
		"postgres": func(t *testing.T) hub.Store {
			st, err := hub.OpenPostgres(context.Background(), pg.NewDatabase(t), hub.PGOptions{Name: "page"})
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
	}
	art := filepath.Join(testutil.Root(t), "artifacts")
	os.MkdirAll(art, 0o755)
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			seedFleet(t, st)
			reg := hub.Registry{"pi-1": {Name: "Kibera kiosk", Region: "Nairobi"}}
			c, err := hub.New(st, hub.CollectorOptions{ClientID: "page-test", Registry: reg})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			srv := httptest.NewServer(httpguard.Wrap(c.Handler(), httpguard.Options{Token: "tok", Fail: hub.Fail,
				Protected: func(p string) bool { return strings.HasPrefix(p, "/v1/") || p == "/metrics" }}))
			defer srv.Close()
			ctx := testutil.Browser(t, 1100, 1300, 60*time.Second)
			for _, lang := range []string{"en", "sw"} {
				if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/?token=tok&lang="+lang),
					chromedp.WaitVisible(chromedp.CSS("body[data-loaded]"))); err != nil {
					t.Fatalf("%s: %v", lang, err)
				}
				text := func(sel string) string {
					s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
					if err != nil {
						t.Fatalf("%s %s: %v", lang, sel, err)
					}
					return s
				}
				loaded, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.loaded`))
				staleRow, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#fleet tr[data-device="pi-3"]').className`))
				bars, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#chart rect").length`))
				fleet, outbreaks, heading := text("#fleet tbody"), text("#outbreaks tbody"), text(`[data-t="outbreaks"]`)
				results := text("#results tbody")
				if !strings.Contains(fleet, "Kibera kiosk (Nairobi)") || !strings.Contains(outbreaks, "Nairobi") ||
					strings.Count(results, "91 %") != 20 || !strings.Contains(results, "rust") {
					t.Errorf("%s: registry names and the recent-results table: fleet\n%s\noutbreaks\n%s\nresults (%d rows)", lang, fleet, outbreaks, strings.Count(results, "91 %"))
				}
				png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(art, "hub-"+name+"-"+lang+".png"), png, 0o644)
				wantHeading := map[string]string{"en": "Outbreak watch", "sw": "Ufuatiliaji wa milipuko"}[lang]
				online := map[string]string{"en": "online", "sw": "mtandaoni"}[lang]
				if loaded != "1" || heading != wantHeading || !strings.Contains(fleet, "pi-1") || !strings.Contains(fleet, online) ||
					staleRow != "stale" || bars < 10 {
					t.Errorf("%s: loaded %q heading %q stale row %q bars %d fleet:\n%s", lang, loaded, heading, staleRow, bars, fleet)
				}
				if !strings.Contains(outbreaks, "rust") || !strings.Contains(outbreaks, "pi-1") || strings.Contains(outbreaks, "pi-2") {
					t.Errorf("%s: outbreak watch:\n%s", lang, outbreaks)
				}
			}
			// The results filter: one device, one label, a date range.
			if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/?token=tok&lang=en"), chromedp.WaitVisible(chromedp.CSS("body[data-loaded]")),
				chromedp.SetValue(chromedp.ID("f-device"), "pi-2"), chromedp.SetValue(chromedp.ID("f-label"), "rust"),
				chromedp.Click(chromedp.CSS(`#filter button`))); err != nil {
				t.Fatal(err)
			}
			// Wait for the filtered table, not a fixed time.
			rows := 0
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && rows != 12; time.Sleep(20 * time.Millisecond) {
				rows, _ = chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#results tbody tr").length`))
			}
			only, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`[...document.querySelectorAll("#results tbody tr")].every(tr => tr.cells[1].textContent === "pi-2" && tr.cells[3].textContent === "rust")`))
			if rows != 12 || !only { // pi-2: 8 baseline + 4 recent rust results
				t.Errorf("filter pi-2/rust: %d rows, all matching %v", rows, only)
			}
			// Without the token the page says what to do instead of failing silently.
			if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/?lang=en"), chromedp.WaitVisible(chromedp.CSS("body[data-loaded]"))); err != nil {
				t.Fatal(err)
			}
			if msg, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#error"))); err != nil || !strings.Contains(msg, "token") {
				t.Errorf("page without a token: %q %v", msg, err)
			}
		})
	}
}
