package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestAlerts_SilentAndOutbreak (issue 29): a device silent for 5 days and a
// device whose rust share jumped become alerts on /v1/alerts and /metrics,
// and on one retained MQTT topic per region that a program subscribing
// later still gets; when the silent device speaks again its region's
// topic is cleared.
func TestAlerts_SilentAndOutbreak(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hub.db")
	st, err := hub.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	g := outbox.NewIDGen()
	commit := func(dev, label string, n int, at time.Time) {
		var recs []*outbox.Record
		for i := 0; i < n; i++ {
			recs = append(recs, &outbox.Record{ID: g.New(), Device: dev, Model: "crop-disease", Version: "1", Task: "image_classification",
				Output: []byte(`{"outcome":"diagnosis","label":"` + label + `"}`)})
		}
		if _, err := st.Commit(ctx, []*osync.Batch{{ID: g.New(), Device: dev, Sent: at, Records: recs}}, at); err != nil {
			t.Fatal(err)
		}
	}
	commit("kiosk-a", "healthy", 12, now.AddDate(0, 0, -20))
	commit("kiosk-a", "rust", 5, now)
	commit("kiosk-old", "healthy", 3, now.AddDate(0, 0, -5))
	st.Close()
	reg := hub.Registry{"kiosk-a": {Name: "Ahero", Region: "Kisumu"}, "kiosk-old": {Name: "Njoro", Region: "Nakuru"}}
	h := testutil.StartCollectorWith(t, path, broker.URL(), hub.CollectorOptions{Registry: reg, WarnEvery: -1, AlertEvery: 50 * time.Millisecond})

	alerts, err := h.C.Alerts(ctx)
	if err != nil || len(alerts) != 2 || alerts[0].Kind != "silent" || alerts[0].Device != "kiosk-old" || alerts[1].Kind != "outbreak" || alerts[1].Label != "rust" {
		t.Fatalf("alerts: %+v %v", alerts, err)
	}
	srv := httptest.NewServer(h.C.Handler())
	defer srv.Close()
	for path, want := range map[string]string{"/v1/alerts": `"kind":"silent"`, "/metrics": `outpost_hub_alerts{kind="outbreak"} 1`} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s:\n%.600s", path, want, b)
		}
	}

	// A program that subscribes later gets the retained alerts of each region.
	var mu gosync.Mutex
	got := map[string][]hub.Alert{}
	conn, err := testutil.Dialer(t, broker.URL(), true)(ctx, "sms-gateway", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Subscribe(ctx, hub.AlertTopicPrefix+"#", 1, func(m osync.Message) {
		var body struct {
			Alerts []hub.Alert `json:"alerts"`
		}
		json.Unmarshal(m.Payload, &body)
		mu.Lock()
		got[m.Topic] = body.Alerts
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	alertsOn := func(region string) []hub.Alert {
		mu.Lock()
		defer mu.Unlock()
		return got[hub.AlertTopic(region)]
	}
	testutil.Eventually(t, 10*time.Second, "retained alerts for Kisumu and Nakuru", func() bool {
		k, n := alertsOn("Kisumu"), alertsOn("Nakuru")
		return len(k) == 1 && k[0].Kind == "outbreak" && len(n) == 1 && n[0].Kind == "silent"
	})
	if hub.AlertTopic("Rift Valley/North") != "outpost/alerts/v1/rift-valley-north" {
		t.Errorf("topic of a region with a space and a slash: %s", hub.AlertTopic("Rift Valley/North"))
	}

	// kiosk-old reports in: Nakuru's topic is cleared (an empty list).
	if err := h.C.Store().UpdateDevice(ctx, "kiosk-old", func(d *hub.DeviceStatus) error { d.LastSeen = time.Now().UTC(); return nil }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "Nakuru's alerts to be cleared", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n, seen := got[hub.AlertTopic("Nakuru")]
		return seen && len(n) == 0
	})
}

// TestMapSVG: devices placed by lat/lon (east to the right, north up),
// coloured by state, regions warm when warned, every name escaped.
func TestMapSVG(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	reg := hub.Registry{
		"west": {Name: `<script>alert(1)</script>`, Region: "Kisumu", Lat: f(-0.10), Lon: f(34.75)},
		"east": {Name: "Njoro", Region: "Nakuru", Lat: f(-0.33), Lon: f(35.94)},
		"gone": {Name: "no place"},
	}
	svg := hub.MapSVG(reg, []hub.Alert{{Kind: "outbreak", Device: "west", Region: "Kisumu"}, {Kind: "silent", Device: "east", Region: "Nakuru"}}, nil)
	if strings.Contains(svg, "<script>") || !strings.Contains(svg, "&lt;script&gt;") {
		t.Fatalf("a name is not escaped:\n%s", svg)
	}
	x := func(dev string) float64 {
		i := strings.Index(svg, `data-device="`+dev+`" cx="`)
		if i < 0 {
			t.Fatalf("no %s on the map", dev)
		}
		var v float64
		fmt.Sscanf(svg[i+len(`data-device="`+dev+`" cx="`):], "%g", &v)
		return v
	}
	if x("west") >= x("east") {
		t.Errorf("west at x=%.0f, east at x=%.0f", x("west"), x("east"))
	}
	for _, want := range []string{`data-device="west" cx=`, `fill="#b71c1c" stroke`, `fill="#9e9e9e" stroke`, `class="region hot"`} {
		if !strings.Contains(svg, want) {
			t.Errorf("map lacks %s", want)
		}
	}
	if strings.Contains(svg, `data-device="gone"`) {
		t.Error("a device without lat/lon is drawn")
	}
}
