package hub_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-edge/outpost/hub"
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
	// Built as `outpost collect --listen --token --registry` builds the
	// hub (hub.OpenServer), on each store.
	stores := map[string]func(t *testing.T) hub.Config{
		"bolt": func(t *testing.T) hub.Config { return hub.Config{DataDir: t.TempDir()} },
		"postgres": func(t *testing.T) hub.Config {
			return hub.Config{DataDir: t.TempDir(), Store: pg.NewDatabase(t), Name: "page"}
		},
	}
	art := filepath.Join(testutil.Root(t), "artifacts")
	os.MkdirAll(art, 0o755)
	for name, config := range stores {
		t.Run(name, func(t *testing.T) {
			cfg := config(t)
			lat, lon, lat3, lon3 := -1.31, 36.79, -0.10, 34.75
			reg := hub.Registry{"pi-1": {Name: "Kibera kiosk", Region: "Nairobi", Lat: &lat, Lon: &lon}, "pi-3": {Name: "Ahero", Region: "Kisumu", Lat: &lat3, Lon: &lon3}}
			regJSON, _ := json.Marshal(reg)
			cfg.Registry = filepath.Join(cfg.DataDir, "registry.json")
			if err := os.WriteFile(cfg.Registry, regJSON, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.Listen, cfg.Token, cfg.Collector.ClientID = "127.0.0.1:0", "tok", "page-test"
			hs, err := hub.OpenServer(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer hs.Close()
			c := hs.Collector()
			seedFleet(t, c.Store())
			// One result reviewed: the page lists past reviews (issue 29).
			var reviewed bool
			c.Store().Each(context.Background(), func(r hub.StoredResult) error {
				if !reviewed && r.Record.Device == "pi-1" {
					reviewed = true
					return c.Store().PutReview(context.Background(), &osync.Review{Device: "pi-1", Of: r.Record.ID, Label: "leaf_spot",
						Lang: "sw", Reviewer: "Dr. Wanjiru", Time: time.Now()})
				}
				return nil
			})
			srv := struct{ URL string }{"http://" + hs.Addr()}
			ctx := testutil.Browser(t, 1100, 1300, 60*time.Second)
			// Without a session the page sends the browser to the sign-in
			// form; the token goes in there, never in a URL, and the cookie
			// it sets is out of every script's reach (HttpOnly).
			if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/?lang=en"), chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)),
				chromedp.SetValue(chromedp.CSS(`input[name="token"]`), "tok"), chromedp.Click(chromedp.CSS(`form button`)),
				chromedp.WaitVisible(chromedp.CSS("body[data-loaded]"))); err != nil {
				t.Fatalf("sign in: %v", err)
			}
			if c, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`)); c != "" {
				t.Errorf("the page's scripts can read the session: %q", c)
			}
			// Every English sentence exists in the other four languages.
			missing, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => { const out = [];
				const walk = (en, o, p) => { for (const k of Object.keys(en)) { if (!(k in o)) out.push(p + k); else if (typeof en[k] === "object") walk(en[k], o[k], p + k + "."); } };
				for (const l of Object.keys(T)) if (l !== "en") walk(T.en, T[l], l + ": "); return out; })()`))
			if len(missing) > 0 {
				t.Errorf("the hub page falls back to English for: %v", missing)
			}
			// Labels in the reader's language (issue 29: raw "leaf_spot" in all five).
			rustIn := map[string]string{"en": "Rust", "sw": "Kutu"}
			for _, lang := range []string{"en", "sw"} {
				if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/?lang="+lang),
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
				// The map: the registry's two placed devices, the outbreak
				// one red, the stale one grey (silent).
				dots, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#map circle.device")].map((c) => c.dataset.device + " " + c.getAttribute("fill"))`))
				if strings.Join(dots, ",") != "pi-1 #b71c1c,pi-3 #9e9e9e" {
					t.Errorf("%s: devices on the map: %v", lang, dots)
				}
				fleet, outbreaks, heading := text("#fleet tbody"), text("#outbreaks tbody"), text(`[data-t="outbreaks"]`)
				results := text("#results tbody")
				if !strings.Contains(fleet, "Kibera kiosk (Nairobi)") || !strings.Contains(outbreaks, "Nairobi") ||
					strings.Count(results, "91 %") != 20 || !strings.Contains(results, rustIn[lang]) {
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
				legend, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#chart text.lab")].map((x) => x.textContent)`))
				if want := map[string]string{"en": "Healthy,Leaf spot,Rust", "sw": "Zima,Madoa ya majani,Kutu"}[lang]; strings.Join(legend, ",") != want {
					t.Errorf("%s: chart legend %v, want %s", lang, legend, want)
				}
				past := text("#pastreviews tbody")
				if want := map[string][]string{"en": {"Leaf spot", "not yet"}, "sw": {"Madoa ya majani", "bado"}}[lang]; !strings.Contains(past, want[0]) ||
					!strings.Contains(past, want[1]) || !strings.Contains(past, "Dr. Wanjiru") || !strings.Contains(past, "pi-1") {
					t.Errorf("%s: past reviews:\n%s", lang, past)
				}
				if !strings.Contains(outbreaks, rustIn[lang]) || !strings.Contains(outbreaks, "pi-1") || strings.Contains(outbreaks, "pi-2") {
					t.Errorf("%s: outbreak watch:\n%s", lang, outbreaks)
				}
			}
			// A phone (390 px): nothing wider than the screen, in English and
			// in Swahili (longer words); wide tables scroll inside their box.
			for _, lang := range []string{"en", "sw"} {
				if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844), chromedp.Navigate(srv.URL+"/?lang="+lang),
					chromedp.WaitVisible(chromedp.CSS("body[data-loaded]"))); err != nil {
					t.Fatalf("phone, %s: %v", lang, err)
				}
				over, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth - window.innerWidth`))
				if over > 0 {
					t.Errorf("phone, %s: the page is %d px wider than the screen", lang, over)
				}
				if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
					os.WriteFile(filepath.Join(art, "hub-"+name+"-phone-"+lang+".png"), png, 0o644)
				}
			}
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(1100, 1300)); err != nil {
				t.Fatal(err)
			}
			// The results filter: one device, one label, a date range.
			if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/?lang=en"), chromedp.WaitVisible(chromedp.CSS("body[data-loaded]")),
				chromedp.SetValue(chromedp.ID("f-device"), "pi-2"), chromedp.SetValue(chromedp.ID("f-label"), "rust"),
				chromedp.Click(chromedp.CSS(`#filter button`))); err != nil {
				t.Fatal(err)
			}
			// Wait for the filtered table, not a fixed time.
			rows := 0
			testutil.Eventually(t, 10*time.Second, "the filtered table did not show pi-2's 12 rust results", func() bool {
				rows, _ = chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#results tbody tr").length`))
				return rows == 12
			})
			only, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`[...document.querySelectorAll("#results tbody tr")].every(tr => tr.cells[1].textContent === "pi-2" && tr.cells[3].textContent === "Rust")`))
			if rows != 12 || !only { // pi-2: 8 baseline + 4 recent rust results
				t.Errorf("filter pi-2/rust: %d rows, all matching %v", rows, only)
			}
			hostileDevice(t, ctx, c.Store(), srv.URL)
		})
	}
}

// hostile is markup a device (or anyone with its broker login) puts in
// every string it controls.
const hostile = `<img src=x onerror="window.__pwned=(window.__pwned||0)+1"><script>window.__pwned=1</script>`

// hostileDevice stores a result whose label, top answers, model and
// version are markup, with a photo declared text/html, then loads every
// view of the hub page: no script may run (window.__pwned stays unset),
// the markup shows as text, and the evidence is served as the image it is.
func hostileDevice(t *testing.T, ctx context.Context, st hub.Store, url string) {
	t.Helper()
	g := outbox.NewIDGen()
	now := time.Now().UTC()
	out, _ := json.Marshal(map[string]any{"outcome": "diagnosis", "label": hostile, "score": 0.4, "uncertain": true,
		"top": []map[string]any{{"label": hostile, "score": 0.4}, {"label": `"><svg onload=window.__pwned=1>`, "score": 0.3}}})
	r := &outbox.Record{ID: g.New(), Device: "evil", Model: hostile, Version: hostile, Task: "image_classification", Output: out}
	if _, err := st.Commit(context.Background(), []*osync.Batch{{ID: g.New(), Device: "evil", Sent: now, Records: []*outbox.Record{r}}}, now); err != nil {
		t.Fatal(err)
	}
	st.UpdateDevice(context.Background(), "evil", func(d *hub.DeviceStatus) error { d.State, d.Version = "online", hostile; return nil })
	photo, _ := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples", "rust.jpg"))
	ev := &osync.EvidenceChunk{ID: g.New(), Of: r.ID, Size: int64(len(photo)), SHA256: sha256.Sum256(photo), ContentType: "text/html", Data: photo}
	if info, err := st.PutEvidence(context.Background(), "evil", ev, now); err != nil || !info.Complete {
		t.Fatalf("evidence: %+v %v", info, err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"/?lang=en"), chromedp.WaitVisible(chromedp.CSS("body[data-loaded]"))); err != nil {
		t.Fatal(err)
	}
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#review .case").length`)); n != 1 {
		msg, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#error")))
		t.Fatalf("the hostile device's result is not awaiting review (%d cases; page error %q)", n, msg)
	}
	pwned, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__pwned !== undefined`))
	imgs, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#fleet img, #results img, #review form img, #review datalist img, #chart img").length`))
	options, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#review datalist option")].map(o => o.value).join("|")`))
	fleet, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#fleet tbody")))
	if pwned || imgs != 0 || !strings.Contains(options, hostile) || !strings.Contains(fleet, "<img src=x") {
		t.Errorf("hostile device strings: script ran %v, %d injected elements, datalist %q, fleet shows it as text %v",
			pwned, imgs, options, strings.Contains(fleet, "<img src=x"))
	}
	// The evidence: sniffed as the JPEG it is, sandboxed, never text/html.
	resp, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch("/v1/evidence/evil/`+r.ID.String()+`").then(r => r.headers.get("content-type") + " | " + r.headers.get("content-security-policy"))`, chromedp.EvalAwaitPromise))
	if err != nil || !strings.HasPrefix(resp, "image/jpeg | ") || !strings.Contains(resp, "sandbox") {
		t.Errorf("evidence declared text/html served as %q (%v)", resp, err)
	}
}
