package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/outbox"
)

// DayCount is how many results of one model and label a day brought.
type DayCount struct {
	Day   string `json:"day"` // UTC date of receipt
	Model string `json:"model"`
	Label string `json:"label"`
	Count int    `json:"count"`
}

// Outbreak is a device whose share of a label over the last week is well
// above its own baseline (the four weeks before).
type Outbreak struct {
	Label     string  `json:"label"`
	Device    string  `json:"device"`
	Recent    int     `json:"recent"`           // results with this label in the last 7 days
	RecentAll int     `json:"recent_all"`       // all results in the last 7 days
	Share     float64 `json:"share"`            // Recent / RecentAll
	Baseline  float64 `json:"baseline"`         // the label's share in days 8–35
	Ratio     float64 `json:"ratio"`            // Share / max(Baseline, 0.05)
	Name      string  `json:"name,omitempty"`   // from the device registry
	Region    string  `json:"region,omitempty"` // from the device registry
}

// OutbreakRule is shown on the page: what "well above" means.
const OutbreakRule = "a device is listed for a label when, over the last 7 days, at least 3 of its results carry that label and the label's share of its results is at least twice its own share over the 4 weeks before (a baseline below 5 % counts as 5 %); a device needs at least 10 results in those 4 weeks first"

// MinHistory is how many results in the 4 weeks before a device needs
// before it can be flagged (a kiosk was flagged on its first day: 3 of 4
// rust, no history, "×15").
const MinHistory = 10

// CountedLabel is the label the hub counts for a record: the one its
// device's task table gave it (Record.Label, with Outcome set), or, for a
// record from a device before the meaning travelled, the same rule
// applied to its output once, at commit (a confident diagnosis; retakes,
// not-a-leaf and uncertain answers are not disease signals). Both stores
// and every view use this one function.
func CountedLabel(r *outbox.Record) string {
	if r.Outcome != "" {
		return r.Label
	}
	var o struct {
		Label     string `json:"label"`
		Outcome   string `json:"outcome"`
		Uncertain bool   `json:"uncertain"`
	}
	if json.Unmarshal(r.Output, &o) != nil || o.Label == "" || o.Uncertain || o.Outcome != "" && o.Outcome != "diagnosis" {
		return ""
	}
	return o.Label
}

// FleetView computes the per-day counts (last `days` days) and the
// outbreak list at now from the store's daily aggregates (35 days of
// them at most), never from the results themselves.
func FleetView(ctx context.Context, st Store, now time.Time, days int) ([]DayCount, []Outbreak, error) {
	now = now.UTC()
	type key struct{ day, model, label string }
	counts := map[key]int{}
	type dl struct{ dev, label string }
	recent, base := map[dl]int{}, map[dl]int{}
	recentAll, baseAll := map[string]int{}, map[string]int{}
	today := now.Format("2006-01-02")
	firstDay := now.AddDate(0, 0, -(days - 1)).Format("2006-01-02")
	recentFrom := now.AddDate(0, 0, -6).Format("2006-01-02") // the last 7 days, today included
	baseFrom := now.AddDate(0, 0, -34).Format("2006-01-02")  // the 4 weeks before
	rows, err := st.DailyCounts(ctx, now.AddDate(0, 0, -max(days, 35)))
	if err != nil {
		return nil, nil, err
	}
	for _, r := range rows {
		n := int(r.Count)
		if r.Day >= firstDay && r.Day <= today {
			counts[key{r.Day, r.Model, r.Label}] += n
		}
		switch {
		case r.Day >= recentFrom:
			recent[dl{r.Device, r.Label}] += n
			recentAll[r.Device] += n
		case r.Day >= baseFrom:
			base[dl{r.Device, r.Label}] += n
			baseAll[r.Device] += n
		}
	}
	out := make([]DayCount, 0, len(counts))
	for k, n := range counts {
		out = append(out, DayCount{k.day, k.model, k.label, n})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.Day < b.Day || a.Day == b.Day && (a.Model < b.Model || a.Model == b.Model && a.Label < b.Label)
	})
	var obs []Outbreak
	for k, n := range recent {
		if n < 3 || k.label == "healthy" || baseAll[k.dev] < MinHistory {
			continue // a kiosk on its first days has no baseline to rise above
		}
		share := float64(n) / float64(recentAll[k.dev])
		b := 0.0
		if baseAll[k.dev] > 0 {
			b = float64(base[k]) / float64(baseAll[k.dev])
		}
		ratio := share / max(b, 0.05)
		if ratio >= 2 {
			obs = append(obs, Outbreak{Label: k.label, Device: k.dev, Recent: n, RecentAll: recentAll[k.dev], Share: share, Baseline: b, Ratio: ratio})
		}
	}
	sort.Slice(obs, func(i, j int) bool {
		return obs[i].Ratio > obs[j].Ratio || obs[i].Ratio == obs[j].Ratio && obs[i].Device < obs[j].Device
	})
	return out, obs, nil
}

// labelColour gives a label the same colour everywhere: healthy green,
// diseases warm, retakes and not-a-leaf grey (healthy was red and blight
// green before); other labels a cool colour by position.
func labelColour(label string, k int) string {
	switch label {
	case "healthy":
		return "#2e7d32"
	case "blight":
		return "#b71c1c"
	case "rust":
		return "#e65100"
	case "leaf_spot":
		return "#f9a825"
	case "mosaic":
		return "#ad1457"
	case "retake", "not_a_leaf", "uncertain":
		return "#9e9e9e"
	}
	cool := []string{"#1565c0", "#6a1b9a", "#00838f", "#5d4037"}
	return cool[k%len(cool)]
}

// DailySVG draws the per-day counts as stacked bars, one colour per label
// (server-rendered: no script or chart library on the page).
func DailySVG(counts []DayCount, days int, now time.Time) string {
	labels := map[string]bool{}
	perDay := map[string]map[string]int{}
	top := 1
	for _, c := range counts {
		labels[c.Label] = true
		if perDay[c.Day] == nil {
			perDay[c.Day] = map[string]int{}
		}
		perDay[c.Day][c.Label] += c.Count
	}
	var ls []string
	for l := range labels {
		ls = append(ls, l)
	}
	sort.Strings(ls)
	for _, m := range perDay {
		t := 0
		for _, n := range m {
			t += n
		}
		top = max(top, t)
	}
	const w, h, pad = 640, 200, 24
	bw := float64(w-2*pad) / float64(days)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" role="img" aria-label="results per day">`, w, h+40)
	for i := 0; i < days; i++ {
		day := now.UTC().AddDate(0, 0, i-days+1).Format("2006-01-02")
		y := float64(h)
		for k, l := range ls {
			n := perDay[day][l]
			if n == 0 {
				continue
			}
			bh := float64(n) / float64(top) * float64(h-pad)
			y -= bh
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %d</title></rect>`,
				float64(pad)+float64(i)*bw+1, y, bw-2, bh, labelColour(l, k), day, html.EscapeString(l), n)
		}
		// Dates under the bars: every week, and the last day.
		if (days-1-i)%7 == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10" text-anchor="middle" class="day">%s</text>`,
				float64(pad)+(float64(i)+0.5)*bw, h+12, day[5:])
		}
	}
	fmt.Fprintf(&b, `<text x="%d" y="14" font-size="12">%d</text>`, pad, top)
	for k, l := range ls {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="12" class="lab" data-label="%s">%s</text>`,
			pad+k*100, h+24, labelColour(l, k), pad+k*100+14, h+33, html.EscapeString(l), html.EscapeString(l))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// ResultFilter selects results for the page's table.
type ResultFilter struct {
	Device, Model, Label string
	From, To             time.Time // received; zero = open
	Limit                int       // newest first; default 50, at most 1000
}

// RecentResults returns the newest results matching f, newest first,
// through the store's received-time index.
func RecentResults(ctx context.Context, st Store, f ResultFilter) ([]StoredResult, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	f.Limit = min(f.Limit, 1000)
	return st.Recent(ctx, f)
}

// matches is ResultFilter's rule for one result (the bbolt store's scan).
func (f ResultFilter) matches(r StoredResult) bool {
	rec := r.Record
	if f.Device != "" && rec.Device != f.Device || f.Model != "" && rec.Model != f.Model ||
		!f.From.IsZero() && r.Received.Before(f.From) || !f.To.IsZero() && !r.Received.Before(f.To) {
		return false
	}
	return f.Label == "" || CountedLabel(rec) == f.Label
}

// Registry names devices for people: device ID → name, region, location.
type Registry map[string]RegistryEntry

// RegistryEntry is one device in the registry file.
type RegistryEntry struct {
	Name   string   `json:"name,omitempty"`
	Region string   `json:"region,omitempty"`
	Lat    *float64 `json:"lat,omitempty"`
	Lon    *float64 `json:"lon,omitempty"`
}

// LoadRegistry reads a JSON registry file: {"kiosk-12": {"name": "…",
// "region": "…", "lat": -1.28, "lon": 36.8}, …}.
func LoadRegistry(path string) (Registry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("hub: registry: %w", err)
	}
	var r Registry
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("hub: registry %s: want {\"device-id\": {\"name\": …, \"region\": …, \"lat\": …, \"lon\": …}}: %w", path, err)
	}
	return r, nil
}
