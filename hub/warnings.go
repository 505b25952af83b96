package hub

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// Regional warnings: the hub's outbreak rule (or a program officer) warns
// every device of a region that a disease is rising there. Each device gets
// its own signed copy on its cmd topic until it confirms; devices that
// travel by stick get them in their bundle receipts (docs/WARNINGS.md).

// WarningRule is printed on the hub page beside the warnings.
const WarningRule = "a region is warned of a disease when the outbreak rule lists at least one of its devices for it; the warning lasts 14 days and is not issued again while one for the same region and disease is in force"

// WarningDays is how long a warning issued by the rule lasts.
const WarningDays = 14

// warningOpening opens a warning's text, per language (%s: the region);
// the model's advice for the disease follows it.
var warningOpening = map[string]string{
	"en": "Warning for %s, from the kiosks nearby:",
	"fr": "Alerte pour %s, signalée par les bornes voisines :",
	"sw": "Tahadhari kwa %s, kutoka vibanda vya karibu:",
	"ha": "Gargaɗi ga %s, daga na'urorin da ke kusa:",
	"am": "ማስጠንቀቂያ ለ%s፣ በአቅራቢያ ካሉ ኪዮስኮች፦",
}

// WarningText is a warning's advice in every language the opening has:
// the opening, then advice[disease][lang] (the model's advice file), or
// the disease's label when the file has no text for it.
func WarningText(advice map[string]map[string]string, disease, region string) map[string]string {
	out := map[string]string{}
	for lang, open := range warningOpening {
		text := advice[disease][lang]
		if text == "" {
			text = strings.ReplaceAll(disease, "_", " ")
		}
		out[lang] = fmt.Sprintf(open, region) + " " + text
	}
	return out
}

// IssueWarning completes (ID, times, source, advice), checks and stores a
// warning, and queues it for every registry device of its region.
func (c *Collector) IssueWarning(ctx context.Context, w *osync.Warning) error {
	now := c.o.Now().UTC()
	if w.ID == (outbox.ID{}) {
		rand.Read(w.ID[:])
	}
	if w.Issued.IsZero() {
		w.Issued = now
	}
	if w.From.IsZero() {
		w.From = now
	}
	if w.Until.IsZero() {
		w.Until = w.From.Add(WarningDays * 24 * time.Hour)
	}
	if w.Source == "" {
		w.Source = "officer"
	}
	if len(w.Advice) == 0 {
		w.Advice = WarningText(c.o.WarningAdvice, w.Disease, w.Region)
	}
	if err := w.Validate(); err != nil {
		return fmt.Errorf("%w: %v", osync.ErrMalformed, err)
	}
	if err := c.st.PutWarning(ctx, w); err != nil {
		return err
	}
	c.count(&c.n.C.Warnings, 1)
	c.log.Info("collector: warning issued", "region", w.Region, "disease", w.Disease, "source", w.Source, "until", w.Until)
	for _, dev := range c.regionDevices(w.Region) {
		select {
		case c.deliver <- dev:
		default: // sent on the device's next status anyway
		}
	}
	return nil
}

// regionDevices lists the registry's devices of region.
func (c *Collector) regionDevices(region string) []string {
	var out []string
	for dev, e := range c.o.Registry {
		if e.Region != "" && strings.EqualFold(e.Region, region) {
			out = append(out, dev)
		}
	}
	sort.Strings(out)
	return out
}

// CheckOutbreaks applies the warning rule at now: a region with a device the
// outbreak rule lists for a disease, and no warning in force for that
// region and disease, gets one. It returns the warnings it issued.
func (c *Collector) CheckOutbreaks(ctx context.Context) ([]osync.Warning, error) {
	now := c.o.Now().UTC()
	_, obs, err := FleetView(ctx, c.st, now, 7)
	if err != nil {
		return nil, err
	}
	active, err := c.st.Warnings(ctx, now)
	if err != nil {
		return nil, err
	}
	type key struct{ region, disease string }
	inForce := map[key]bool{}
	for _, w := range active {
		inForce[key{strings.ToLower(w.Region), w.Disease}] = true
	}
	type tally struct {
		region        string
		devices, n, m int
	}
	groups := map[key]*tally{}
	for _, o := range obs {
		region := c.o.Registry[o.Device].Region
		if region == "" {
			continue // a device the registry does not place warns no one
		}
		k := key{strings.ToLower(region), o.Label}
		t := groups[k]
		if t == nil {
			t = &tally{region: region}
			groups[k] = t
		}
		t.devices++
		t.n += o.Recent
		t.m += o.RecentAll
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].region < keys[j].region || keys[i].region == keys[j].region && keys[i].disease < keys[j].disease
	})
	var issued []osync.Warning
	for _, k := range keys {
		if inForce[k] {
			continue
		}
		t := groups[k]
		w := osync.Warning{Region: t.region, Disease: k.disease, Source: "outbreak",
			Evidence: fmt.Sprintf("%d of %d results %s in 7 days at %d device(s)", t.n, t.m, k.disease, t.devices)}
		if err := c.IssueWarning(ctx, &w); err != nil {
			return issued, err
		}
		issued = append(issued, w)
	}
	return issued, nil
}

// warnLoop applies the warning rule every interval until ctx ends.
func (c *Collector) warnLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := c.CheckOutbreaks(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("collector: outbreak warnings not checked", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// WarningsFor lists the warnings in force for device's region that it has
// not confirmed (what its next bundle receipt carries).
func (c *Collector) WarningsFor(ctx context.Context, device string) ([]osync.Warning, error) {
	return pendingWarnings(ctx, c.st, c.o.Registry, device, c.o.Now())
}

func pendingWarnings(ctx context.Context, st Store, reg Registry, device string, now time.Time) ([]osync.Warning, error) {
	region := reg[device].Region
	if region == "" {
		return nil, nil
	}
	ws, err := st.Warnings(ctx, now)
	if err != nil {
		return nil, err
	}
	var out []osync.Warning
	for _, w := range ws {
		if _, ok := w.Delivered[device]; !ok && strings.EqualFold(w.Region, region) {
			out = append(out, w.Warning)
		}
	}
	return out, nil
}

// deliverWarnings sends a device the warnings of its region it has not
// confirmed.
func (c *Collector) deliverWarnings(ctx context.Context, conn osync.Conn, device string) {
	ws, err := c.WarningsFor(ctx, device)
	if err != nil {
		c.log.Warn("collector: warnings not read", "device", device, "err", err)
		return
	}
	for i := range ws {
		if err := conn.Publish(ctx, osync.CmdTopic(device), 1, false, osync.EncodeWarning(&ws[i], device, c.o.Key)); err != nil {
			c.log.Warn("collector: warning not sent", "device", device, "err", err)
			return
		}
		c.count(&c.n.C.WarnSent, 1)
	}
}

// handleWarningReceipt records that a device stored a warning.
func (c *Collector) handleWarningReceipt(ctx context.Context, device string, payload []byte) {
	if c.receipt(ctx, device, "warning", payload, osync.DecodeWarningReceipt,
		func(id outbox.ID) error { return c.st.MarkWarningDelivered(ctx, id, device, c.o.Now()) }) {
		c.count(&c.n.C.WarnRecpts, 1)
	}
}

// WarningView is a warning on the hub page and API: who has it.
type WarningView struct {
	StoredWarning
	Devices   int  `json:"devices"`   // registry devices of the region
	Confirmed int  `json:"confirmed"` // of them, how many confirmed it
	Active    bool `json:"active"`
}

// WarningViews lists warnings in force (all when all is set), newest
// first, with how many devices of each region have confirmed them.
func (c *Collector) WarningViews(ctx context.Context, all bool) ([]WarningView, error) {
	now := c.o.Now()
	at := now
	if all {
		at = time.Time{}
	}
	ws, err := c.st.Warnings(ctx, at)
	if err != nil {
		return nil, err
	}
	out := make([]WarningView, 0, len(ws))
	for _, w := range ws {
		v := WarningView{StoredWarning: w, Active: w.Active(now)}
		for _, dev := range c.regionDevices(w.Region) {
			v.Devices++
			if _, ok := w.Delivered[dev]; ok {
				v.Confirmed++
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// warningRoutes adds the warning API to the hub's handler:
//
//	GET  /v1/warnings        warnings in force (?all=1: every one), with delivery counts
//	POST /v1/warnings        {"region","disease","advice"?,"days"?}: a program officer's warning
func (c *Collector) warningRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/warnings", func(w http.ResponseWriter, r *http.Request) {
		list, err := c.WarningViews(r.Context(), r.URL.Query().Get("all") != "")
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		writeJSON(w, map[string]any{"rule": WarningRule, "warnings": list})
	})
	mux.HandleFunc("POST /v1/warnings", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Region  string            `json:"region"`
			Disease string            `json:"disease"`
			Model   string            `json:"model"`
			Advice  map[string]string `json:"advice"`
			Days    int               `json:"days"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&in); err != nil {
			apiFail(w, http.StatusBadRequest, "bad_request", err)
			return
		}
		if in.Days < 0 || in.Days > osync.MaxWarningDays {
			apiFail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("days: 1 to %d", osync.MaxWarningDays))
			return
		}
		wr := &osync.Warning{Region: strings.TrimSpace(in.Region), Disease: strings.TrimSpace(in.Disease), Model: in.Model, Advice: in.Advice}
		if in.Days > 0 {
			wr.From = c.o.Now().UTC()
			wr.Until = wr.From.Add(time.Duration(in.Days) * 24 * time.Hour)
		}
		switch err := c.IssueWarning(r.Context(), wr); {
		case errors.Is(err, osync.ErrMalformed):
			apiFail(w, http.StatusBadRequest, "bad_request", err)
		case err != nil:
			apiFail(w, http.StatusServiceUnavailable, "store", err)
		default:
			writeCreated(w, wr)
		}
	})
}
