package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	osync "github.com/outpost-edge/outpost/sync"
)

// Alerts are what a program officer should act on: a device silent for
// days, and a device the outbreak rule lists. The page shows them, /metrics
// counts them, and the collector keeps one retained MQTT message per region
// on AlertTopic(region) for programs that act on them (an SMS gateway, a
// dashboard). They are computed from the store, never kept apart.

// DefaultSilentAfter is how long without a word makes a device silent.
const DefaultSilentAfter = 3 * 24 * time.Hour

// AlertTopicPrefix holds one retained message per region ("unplaced" for
// devices the registry does not place): {"region", "time", "alerts": […]}.
const AlertTopicPrefix = "outpost/alerts/v1/"

// AlertTopic is the retained alert topic of region (its name lower-cased,
// anything but letters, digits, '-' and '_' made '-').
func AlertTopic(region string) string {
	if region == "" {
		region = "unplaced"
	}
	b := []byte(strings.ToLower(region))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	return AlertTopicPrefix + string(b)
}

// Alert is one thing to act on.
type Alert struct {
	Kind   string    `json:"kind"` // "silent" or "outbreak"
	Device string    `json:"device"`
	Name   string    `json:"name,omitempty"`
	Region string    `json:"region,omitempty"`
	Label  string    `json:"label,omitempty"` // outbreak: the disease
	Since  time.Time `json:"since"`           // silent: last heard from; outbreak: the window's first day
	Detail string    `json:"detail"`
}

// Alerts lists the alerts at now: silent devices, longest silent first,
// then outbreaks, strongest first.
func (c *Collector) Alerts(ctx context.Context) ([]Alert, error) {
	now := c.o.Now().UTC()
	silent := c.o.SilentAfter
	if silent <= 0 {
		silent = DefaultSilentAfter
	}
	devs, err := c.st.Devices(ctx)
	if err != nil {
		return nil, err
	}
	out := []Alert{}
	for _, d := range devs {
		if d.LastSeen.IsZero() || now.Sub(d.LastSeen) < silent {
			continue
		}
		e := c.o.Registry[d.Device]
		out = append(out, Alert{Kind: "silent", Device: d.Device, Name: e.Name, Region: e.Region, Since: d.LastSeen,
			Detail: fmt.Sprintf("no contact for %d days (%d results waiting at its last status)", int(now.Sub(d.LastSeen).Hours()/24), d.Backlog)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	_, obs, err := FleetView(ctx, c.st, now, 1)
	if err != nil {
		return nil, err
	}
	for _, o := range obs {
		e := c.o.Registry[o.Device]
		out = append(out, Alert{Kind: "outbreak", Device: o.Device, Name: e.Name, Region: e.Region, Label: o.Label,
			Since:  now.AddDate(0, 0, -6).Truncate(24 * time.Hour),
			Detail: fmt.Sprintf("%d of %d results %s in 7 days, %.1f× its own baseline", o.Recent, o.RecentAll, o.Label, o.Ratio)})
	}
	return out, nil
}

// alertPublisher keeps what was last published per region, so an
// unchanged region is not republished every minute.
type alertPublisher struct {
	last map[string][]byte // topic -> the alert list last published
}

// publish puts every region's alerts on its retained topic; a region whose
// alerts ended gets an empty list (so a program sees them end).
func (p *alertPublisher) publish(ctx context.Context, conn osync.Conn, alerts []Alert, now time.Time) error {
	byTopic := map[string][]Alert{}
	regions := map[string]string{}
	for _, a := range alerts {
		t := AlertTopic(a.Region)
		byTopic[t] = append(byTopic[t], a)
		regions[t] = a.Region
	}
	for t := range p.last {
		if _, ok := byTopic[t]; !ok {
			byTopic[t] = []Alert{}
		}
	}
	next := map[string][]byte{}
	for t, list := range byTopic {
		key, _ := json.Marshal(list)
		if len(list) > 0 {
			next[t] = key
		}
		if prev, had := p.last[t]; had && bytes.Equal(prev, key) {
			continue // unchanged since it was published
		}
		body, _ := json.Marshal(map[string]any{"region": regions[t], "time": now, "alerts": list})
		if err := conn.Publish(ctx, t, 1, true, body); err != nil {
			return fmt.Errorf("publish %s: %w", t, err)
		}
	}
	p.last = next
	return nil
}

// alertCount is the gauge outpost_hub_alerts{kind}, computed per scrape.
type alertCount struct{ c *Collector }

var alertDesc = prometheus.NewDesc("outpost_hub_alerts", "alerts in force: silent devices and outbreak signals", []string{"kind"}, nil)

func (alertCount) Describe(ch chan<- *prometheus.Desc) { ch <- alertDesc }

func (a alertCount) Collect(ch chan<- prometheus.Metric) {
	alerts, err := a.c.Alerts(context.Background())
	if err != nil {
		return
	}
	n := map[string]float64{"silent": 0, "outbreak": 0}
	for _, x := range alerts {
		n[x.Kind]++
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(alertDesc, prometheus.GaugeValue, v, k)
	}
}

// alertRoutes: GET /v1/alerts.
func (c *Collector) alertRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/alerts", func(w http.ResponseWriter, r *http.Request) {
		list, err := c.Alerts(r.Context())
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		silent := c.o.SilentAfter
		if silent <= 0 {
			silent = DefaultSilentAfter
		}
		writeJSON(w, map[string]any{"silent_after_days": silent.Hours() / 24, "alerts": list})
	})
}

func (c *Collector) publishAlerts(ctx context.Context, conn osync.Conn, p *alertPublisher) {
	list, err := c.Alerts(ctx)
	if err == nil {
		err = p.publish(ctx, conn, list, c.o.Now().UTC())
	}
	if err != nil && ctx.Err() == nil {
		c.log.Warn("collector: alerts not published", "err", err)
	}
}
