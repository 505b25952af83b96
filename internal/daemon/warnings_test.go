package daemon

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// kioskWarnings reads a daemon's GET /v1/warnings.
func kioskWarnings(t *testing.T, url, lang string) []warningView {
	t.Helper()
	resp, err := http.Get(url + "/v1/warnings?lang=" + lang)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Warnings []warningView `json:"warnings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Warnings
}

// TestWarnings_OutbreakReachesItsRegion (issue 32): rust rises at one kiosk
// of Kisumu; the hub's outbreak rule issues a warning for Kisumu that
// reaches the other Kisumu kiosk over MQTT and the Kisumu kiosk that only
// travels by stick in its bundle receipt — not the Nakuru kiosk. Forged,
// other-region, expired and replayed warnings are refused. The kiosk page
// shows and says the warning in English and Swahili.
func TestWarnings_OutbreakReachesItsRegion(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	pub, key, _ := ed25519.GenerateKey(nil)
	pin := osync.FormatPublicKey(pub)
	advice := map[string]map[string]string{}
	b, err := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", "advice.json"))
	if err != nil || json.Unmarshal(b, &advice) != nil {
		t.Fatalf("advice.json: %v", err)
	}
	reg := hub.Registry{"kiosk-a1": {Name: "Ahero market", Region: "Kisumu"}, "kiosk-a2": {Name: "Kisumu depot", Region: "Kisumu"},
		"kiosk-b": {Name: "Njoro", Region: "Nakuru"}, "kiosk-a3": {Name: "Maseno", Region: "Kisumu"}}
	h := testutil.StartCollectorWith(t, filepath.Join(t.TempDir(), "hub.db"), broker.URL(),
		hub.CollectorOptions{Key: key, Registry: reg, WarningAdvice: advice, WarnEvery: -1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// History: four weeks of healthy leaves at kiosk-a3, then a week of rust.
	st, g, now := h.C.Store(), outbox.NewIDGen(), time.Now().UTC()
	commit := func(label string, n int, at time.Time) {
		var recs []*outbox.Record
		for i := 0; i < n; i++ {
			recs = append(recs, &outbox.Record{ID: g.New(), Device: "kiosk-a3", Model: "crop-disease", Version: "1", Task: "image_classification",
				Output: []byte(`{"outcome":"diagnosis","label":"` + label + `"}`)})
		}
		if _, err := st.Commit(ctx, []*osync.Batch{{ID: g.New(), Device: "kiosk-a3", Sent: at, Records: recs}}, at); err != nil {
			t.Fatal(err)
		}
	}
	commit("healthy", 12, now.AddDate(0, 0, -20))
	commit("rust", 5, now)

	// Two kiosks online (Kisumu and Nakuru), one that only travels by stick.
	online := func(id, region string) (*Daemon, string) {
		d, srv := newTestDaemon(t, func(c *Config) {
			c.DeviceID, c.Region, c.Broker, c.HubKeys = id, region, broker.URL(), []string{pin}
		})
		uctx, stop := context.WithCancel(ctx)
		var wg gosync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); d.Device().Run(uctx) }() // as the daemon hosts it
		t.Cleanup(func() { stop(); wg.Wait() })
		testutil.Eventually(t, 20*time.Second, id+" did not connect", func() bool { return d.Device().Uplink().Stats().Connects > 0 })
		return d, srv.URL
	}
	a1, a1URL := online("kiosk-a1", "Kisumu")
	_, bURL := online("kiosk-b", "Nakuru")
	a2, _ := newTestDaemon(t, func(c *Config) { c.DeviceID, c.Region, c.HubKeys = "kiosk-a2", "Kisumu", []string{pin} })
	wire := sniffCmd(t, broker.URL())

	t0 := time.Now()
	issued, err := h.C.CheckOutbreaks(ctx)
	if err != nil || len(issued) != 1 || issued[0].Region != "Kisumu" || issued[0].Disease != "rust" || issued[0].Source != "outbreak" {
		t.Fatalf("the rule issued %+v, %v; want one rust warning for Kisumu", issued, err)
	}
	testutil.Eventually(t, 20*time.Second, "kiosk-a1 never showed the warning", func() bool { return len(kioskWarnings(t, a1URL, "en")) == 1 })
	latency := time.Since(t0)
	w := kioskWarnings(t, a1URL, "sw")[0]
	if w.Lang != "sw" || !strings.Contains(w.Text, "Kisumu") || !strings.Contains(w.Text, advice["rust"]["sw"]) {
		t.Fatalf("kiosk-a1's warning in Swahili: %+v", w)
	}
	testutil.Eventually(t, 20*time.Second, "the hub never heard kiosk-a1 confirm", func() bool {
		vs, _ := h.C.WarningViews(ctx, false)
		return len(vs) == 1 && vs[0].Confirmed == 1 && vs[0].Devices == 3
	})
	// Running the rule again issues nothing: one is in force.
	if again, err := h.C.CheckOutbreaks(ctx); err != nil || len(again) != 0 {
		t.Fatalf("the rule issued again: %+v %v", again, err)
	}

	// The stick: kiosk-a2 exports a bundle, the hub imports it, and the
	// receipt carries the warning back.
	stick := t.TempDir()
	if _, err := a2.Device().Outbox().Append(ctx, &outbox.Record{Device: "kiosk-a2", Model: "crop-disease", Version: "1",
		Task: "image_classification", Output: []byte(`{"outcome":"diagnosis","label":"healthy"}`)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a2.Device().ExportBundle(stick); err != nil {
		t.Fatal(err)
	}
	bundles, _ := filepath.Glob(filepath.Join(stick, "*"+osync.BundleExt))
	if len(bundles) != 1 {
		t.Fatalf("bundles on the stick: %v", bundles)
	}
	r, receipt, _, err := hub.ImportBundle(ctx, st, bundles[0], key, reg, time.Now())
	if err != nil || len(r.Warnings) != 1 {
		t.Fatalf("import: %d warnings in the receipt, %v", len(r.Warnings), err)
	}
	if _, _, err := a2.Device().ApplyReceipt(receipt); err != nil {
		t.Fatal(err)
	}
	if ws := a2.Device().Warnings(); len(ws) != 1 || ws[0].ID != issued[0].ID {
		t.Fatalf("kiosk-a2 after the stick: %+v", ws)
	}

	// The attacker's moves on kiosk-a1's cmd topic, then the hub's own
	// second warning as the sync point: when it is shown, every earlier
	// message was handled.
	stranger, err := testutil.Dialer(t, broker.URL(), true)(ctx, "stranger", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	_, forger, _ := ed25519.GenerateKey(nil)
	mk := func(region string, until time.Time) *osync.Warning {
		w := &osync.Warning{Region: region, Disease: "blight", Advice: map[string]string{"en": "Spray 5 litres of diesel on each plant"},
			From: until.Add(-48 * time.Hour), Until: until, Issued: time.Now().UTC()}
		w.ID = g.New()
		return w
	}
	soon := time.Now().Add(48 * time.Hour)
	attacks := map[string][]byte{
		"forged":       osync.EncodeWarning(mk("Kisumu", soon), "kiosk-a1", forger),
		"unsigned":     osync.EncodeWarning(mk("Kisumu", soon), "kiosk-a1", nil),
		"other region": osync.EncodeWarning(mk("Nakuru", soon), "kiosk-a1", key),
		"expired":      osync.EncodeWarning(mk("Kisumu", time.Now().Add(-time.Hour)), "kiosk-a1", key),
		"for kiosk-b":  osync.EncodeWarning(mk("Kisumu", soon), "kiosk-b", key), // signed for another device
	}
	// The hub's own message, again: what the sniffer saw on kiosk-a1's
	// topic, or (ed25519 signatures being deterministic) the same bytes
	// encoded here.
	attacks["replayed"] = wire.firstWarning("kiosk-a1")
	if attacks["replayed"] == nil {
		t.Logf("the sniffer missed the hub's message; replaying the identical encoding")
		attacks["replayed"] = osync.EncodeWarning(&issued[0], "kiosk-a1", key)
	}
	for _, m := range attacks {
		stranger.Publish(ctx, osync.CmdTopic("kiosk-a1"), 1, false, m)
	}
	second := mk("Kisumu", soon)
	second.Disease, second.Advice = "mosaic", map[string]string{"en": "Mosaic nearby: pull out sick plants."}
	stranger.Publish(ctx, osync.CmdTopic("kiosk-a1"), 1, false, osync.EncodeWarning(second, "kiosk-a1", key))
	testutil.Eventually(t, 20*time.Second, "the sync-point warning never arrived", func() bool { return len(kioskWarnings(t, a1URL, "en")) == 2 })
	for _, v := range kioskWarnings(t, a1URL, "en") {
		if strings.Contains(v.Text, "diesel") {
			t.Fatalf("kiosk-a1 shows an attacker's warning: %+v", v)
		}
	}
	stored, refused := a1.Device().Uplink().WarningStats()
	if stored != 2 || refused != 5 {
		t.Fatalf("kiosk-a1 stored %d and refused %d warnings; want 2 and 5 (forged, unsigned, other region, expired, for kiosk-b)", stored, refused)
	}
	if ws := kioskWarnings(t, bURL, "en"); len(ws) != 0 {
		t.Fatalf("the Nakuru kiosk shows %+v", ws)
	}

	perDevice := len(attacks["replayed"])
	t.Logf("rule → shown on kiosk-a1: %v; %d bytes on the wire per warning and device (+ a %d-byte signed receipt back)",
		latency.Round(time.Millisecond), perDevice, len(osync.EncodeWarningReceipt(issued[0].ID, "kiosk-a1", key)))

	// The kiosk page: on top in the reader's language, said once unasked.
	art := filepath.Join(testutil.Root(t), "artifacts")
	os.MkdirAll(art, 0o755)
	for _, c := range []struct{ lang, heading string }{{"en", "Warning for your area"}, {"sw", "Tahadhari kwa eneo lako"}} {
		bctx := testutil.BrowserWith(t, 390, 1000, 60*time.Second, chromedp.Flag("autoplay-policy", "no-user-gesture-required"))
		before := a1.speech.requests.Load()
		err := chromedp.Do(bctx, chromedp.Navigate(a1URL+"/?lang="+c.lang), chromedp.WaitVisible(chromedp.ID("warnings")),
			chromedp.WaitReady(chromedp.CSS(`#warnlist li`)))
		if err != nil {
			t.Fatalf("%s: %v", c.lang, err)
		}
		if c.lang == "en" {
			if err := chromedp.Do(bctx, chromedp.WaitReady(chromedp.CSS(`body[data-spoken="1"]`))); err != nil {
				t.Fatalf("the warning was not said unasked: %v", err)
			}
		} else if err := chromedp.Do(bctx, chromedp.Click(chromedp.ID("warnlisten")), chromedp.WaitReady(chromedp.CSS(`body[data-spoken="1"]`))); err != nil {
			t.Fatalf("the Listen button: %v", err)
		}
		h2, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#warnings h2")))
		text, _ := chromedp.Run(bctx, chromedp.Text(chromedp.ID("warnlist")))
		if strings.TrimSpace(h2) != c.heading || !strings.Contains(text, advice["rust"][c.lang]) {
			t.Errorf("%s: heading %q, text %q", c.lang, h2, text)
		}
		if a1.speech.requests.Load() == before {
			t.Errorf("%s: no speech requested", c.lang)
		}
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err == nil {
			os.WriteFile(filepath.Join(art, "kiosk-warning-"+c.lang+".png"), png, 0o644)
		}
	}
	// Said once unasked: a second page load does not say it again.
	if d := a1.speech.announced.Load(); !d {
		t.Error("the warnings were never marked said")
	}
}

// cmdSniffer keeps every message on the devices' cmd topics.
type cmdSniffer struct {
	mu   gosync.Mutex
	msgs []osync.Message
}

func sniffCmd(t *testing.T, url string) *cmdSniffer {
	s := &cmdSniffer{}
	conn, err := testutil.Dialer(t, url, true)(context.Background(), "sniffer", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	if err := conn.Subscribe(context.Background(), osync.TopicPrefix+"+/cmd", 1, func(m osync.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, osync.Message{Topic: m.Topic, Payload: append([]byte(nil), m.Payload...)})
		s.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

// firstWarning is the first warning message seen for device, or nil.
func (s *cmdSniffer) firstWarning(device string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.msgs {
		if m.Topic == osync.CmdTopic(device) && osync.IsWarning(m.Payload) {
			return m.Payload
		}
	}
	return nil
}
