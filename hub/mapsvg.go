package hub

import (
	"fmt"
	"html"
	"math"
	"net/http"
	"sort"
	"strings"
)

// MapSVG draws the registry's devices that have lat/lon, and their regions,
// as a self-contained SVG: no tiles, no network (the hub is offline too).
// Devices are dots — green, red for an outbreak signal, grey when silent —
// and each region is a disc around its devices, warm while a warning or an
// outbreak alert is in force there. Every name is escaped.
func MapSVG(reg Registry, alerts []Alert, warned map[string]bool) string {
	type pt struct {
		dev, name, region string
		lat, lon          float64
	}
	var pts []pt
	for dev, e := range reg {
		if e.Lat != nil && e.Lon != nil && math.Abs(*e.Lat) <= 90 && math.Abs(*e.Lon) <= 180 {
			pts = append(pts, pt{dev, e.Name, e.Region, *e.Lat, *e.Lon})
		}
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].dev < pts[j].dev })
	const w, h, pad = 640, 400, 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" role="img" aria-label="devices and regions">`, w, h)
	if len(pts) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14">no device in the registry has "lat" and "lon"</text></svg>`, pad, h/2)
		return b.String()
	}
	state := map[string]string{}
	hot := map[string]bool{}
	for _, a := range alerts {
		if a.Kind == "outbreak" {
			state[a.Device] = "outbreak"
			hot[strings.ToLower(a.Region)] = true
		} else if state[a.Device] == "" {
			state[a.Device] = a.Kind
		}
	}
	for r := range warned {
		hot[strings.ToLower(r)] = true
	}
	minLat, maxLat, minLon, maxLon := 90.0, -90.0, 180.0, -180.0
	for _, p := range pts {
		minLat, maxLat = math.Min(minLat, p.lat), math.Max(maxLat, p.lat)
		minLon, maxLon = math.Min(minLon, p.lon), math.Max(maxLon, p.lon)
	}
	// Equirectangular, east-west shrunk by cos(latitude), at least 0.1° across.
	k := math.Cos((minLat + maxLat) / 2 * math.Pi / 180)
	spanX, spanY := math.Max((maxLon-minLon)*k, 0.1), math.Max(maxLat-minLat, 0.1)
	scale := math.Min(float64(w-2*pad)/spanX, float64(h-2*pad)/spanY)
	cx, cy := (minLon+maxLon)/2, (minLat+maxLat)/2
	xy := func(lat, lon float64) (float64, float64) {
		return float64(w)/2 + (lon-cx)*k*scale, float64(h)/2 - (lat-cy)*scale
	}
	// Regions first, under the devices.
	byRegion := map[string][]pt{}
	for _, p := range pts {
		if p.region != "" {
			byRegion[p.region] = append(byRegion[p.region], p)
		}
	}
	regions := make([]string, 0, len(byRegion))
	for r := range byRegion {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	for _, r := range regions {
		var sx, sy float64
		for _, p := range byRegion[r] {
			x, y := xy(p.lat, p.lon)
			sx, sy = sx+x, sy+y
		}
		n := float64(len(byRegion[r]))
		mx, my := sx/n, sy/n
		rad := 18.0
		for _, p := range byRegion[r] {
			x, y := xy(p.lat, p.lon)
			rad = math.Max(rad, math.Hypot(x-mx, y-my)+14)
		}
		fill, cls := "#e0e0e0", "region"
		if hot[strings.ToLower(r)] {
			fill, cls = "#ffccbc", "region hot"
		}
		fmt.Fprintf(&b, `<circle class="%s" cx="%.1f" cy="%.1f" r="%.1f" fill="%s" fill-opacity="0.6"><title>%s</title></circle>`,
			cls, mx, my, rad, fill, html.EscapeString(r))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="12" text-anchor="middle" fill="#5d4037">%s</text>`, mx, my-rad-3, html.EscapeString(r))
	}
	for _, p := range pts {
		x, y := xy(p.lat, p.lon)
		colour := "#2e7d32"
		switch state[p.dev] {
		case "outbreak":
			colour = "#b71c1c"
		case "silent":
			colour = "#9e9e9e"
		}
		label := p.dev
		if p.name != "" {
			label = p.dev + " · " + p.name
		}
		fmt.Fprintf(&b, `<circle class="device" data-device="%s" cx="%.1f" cy="%.1f" r="6" fill="%s" stroke="#fff"><title>%s</title></circle>`,
			html.EscapeString(p.dev), x, y, colour, html.EscapeString(label))
	}
	// The legend is the page's, in the reader's language.
	b.WriteString("</svg>")
	return b.String()
}

// mapRoute: GET /v1/map.svg.
func (c *Collector) mapRoute(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/map.svg", func(w http.ResponseWriter, r *http.Request) {
		alerts, err := c.Alerts(r.Context())
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		ws, err := c.st.Warnings(r.Context(), c.o.Now())
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		warned := map[string]bool{}
		for _, x := range ws {
			warned[x.Region] = true
		}
		w.Header().Set("Content-Type", "image/svg+xml")
		fmt.Fprint(w, MapSVG(c.o.Registry, alerts, warned))
	})
}
