package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
	osync "github.com/outpost-edge/outpost/sync"
)

// SocketFile is the unix socket a running collector answers on, in its
// data directory: `collect export` and `collect devices` reach the
// embedded store through it while the collector holds the file.
const SocketFile = "collector.sock"

// Connected reports whether the collector is connected and subscribed.
func (c *Collector) Connected() bool { return c.connected.Load() }

// Handler is the hub's HTTP API, the same on its unix socket and on
// `collect --listen` (which puts httpguard in front of it):
//
//	GET /healthz                 200 while connected to the broker, else 503
//	GET /v1/devices              the device view, JSON
//	GET /v1/stats                the collector's counters, JSON
//	GET /v1/export?format=jsonl|csv
//	GET /metrics                 Prometheus
func (c *Collector) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if !c.connected.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not connected to the broker")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /v1/devices", func(w http.ResponseWriter, r *http.Request) {
		devs, err := c.st.Devices(r.Context())
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		type row struct {
			DeviceStatus
			RegistryEntry
		}
		rows := make([]row, 0, len(devs))
		for _, d := range devs {
			rows = append(rows, row{d, c.o.Registry[d.Device]})
		}
		writeJSON(w, map[string]any{"devices": rows})
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		// Not the client ID: whoever knows it can kick the collector off a
		// broker that does not bind client IDs to logins.
		writeJSON(w, map[string]any{"connected": c.connected.Load(), "stats": c.Stats()})
	})
	mux.HandleFunc("GET /v1/export", func(w http.ResponseWriter, r *http.Request) {
		var n int
		var err error
		switch r.URL.Query().Get("format") {
		case "", "jsonl":
			w.Header().Set("Content-Type", "application/x-ndjson")
			n, err = ExportJSONL(r.Context(), c.st, w)
		case "csv":
			w.Header().Set("Content-Type", "text/csv")
			n, err = ExportCSV(r.Context(), c.st, c.o.Registry, w)
		default:
			apiFail(w, http.StatusBadRequest, "bad_format", errors.New("format: want jsonl or csv"))
			return
		}
		if err != nil {
			c.log.Warn("collector: export over HTTP failed", "after", n, "err", err)
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.metrics(), promhttp.HandlerOpts{}))
	mux.Handle("GET /{$}", pageHandler())
	mux.HandleFunc("GET /v1/daily", func(w http.ResponseWriter, r *http.Request) {
		days := queryDays(r)
		counts, _, err := FleetView(r.Context(), c.st, c.o.Now(), days)
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		writeJSON(w, map[string]any{"days": days, "counts": counts})
	})
	mux.HandleFunc("GET /v1/daily.svg", func(w http.ResponseWriter, r *http.Request) {
		days := queryDays(r)
		counts, _, err := FleetView(r.Context(), c.st, c.o.Now(), days)
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		w.Header().Set("Content-Type", "image/svg+xml")
		fmt.Fprint(w, DailySVG(counts, days, c.o.Now()))
	})
	mux.HandleFunc("GET /v1/results", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := ResultFilter{Device: q.Get("device"), Model: q.Get("model"), Label: q.Get("label")}
		f.Limit, _ = strconv.Atoi(q.Get("limit"))
		for _, p := range []struct {
			name string
			dst  *time.Time
			add  int
		}{{"from", &f.From, 0}, {"to", &f.To, 1}} {
			if v := q.Get(p.name); v != "" {
				d, err := time.Parse("2006-01-02", v)
				if err != nil {
					apiFail(w, http.StatusBadRequest, "bad_date", fmt.Errorf("%s=%q: want YYYY-MM-DD", p.name, v))
					return
				}
				*p.dst = d.AddDate(0, 0, p.add) // "to" includes its day
			}
		}
		res, err := RecentResults(r.Context(), c.st, f)
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		if res == nil {
			res = []StoredResult{}
		}
		writeJSON(w, map[string]any{"results": res})
	})
	mux.HandleFunc("GET /v1/outbreaks", func(w http.ResponseWriter, r *http.Request) {
		_, obs, err := FleetView(r.Context(), c.st, c.o.Now(), 1)
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		if obs == nil {
			obs = []Outbreak{}
		}
		for i := range obs {
			obs[i].Name, obs[i].Region = c.o.Registry[obs[i].Device].Name, c.o.Registry[obs[i].Device].Region
		}
		writeJSON(w, map[string]any{"rule": OutbreakRule, "outbreaks": obs})
	})
	c.reviewRoutes(mux)
	c.warningRoutes(mux)
	c.alertRoutes(mux)
	c.mapRoute(mux)
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		apiFail(w, http.StatusNotFound, "not_found", fmt.Errorf("no hub API route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

//go:embed page/index.html
var pageFS embed.FS

// pageHandler serves the hub page with a Content-Security-Policy that
// lets only the page's own inline script run (by its hash): markup a
// device smuggled into a view could not run a handler or a script.
func pageHandler() http.Handler {
	page, _ := fs.ReadFile(pageFS, "page/index.html")
	csp := "default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
	if _, rest, ok := bytes.Cut(page, []byte("<script>")); ok {
		if js, _, ok := bytes.Cut(rest, []byte("</script>")); ok {
			sum := sha256.Sum256(js)
			csp += "; script-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Write(page)
	})
}

func queryDays(r *http.Request) int {
	d, err := strconv.Atoi(r.URL.Query().Get("days"))
	if err != nil || d < 1 || d > 366 {
		return 30
	}
	return d
}

// ServeLocal serves Handler on a unix socket at path (mode 0600: only the
// collector's user) until ctx ends.
func ServeLocal(ctx context.Context, c *Collector, path string) error {
	os.Remove(path) // a socket left by a killed collector
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("hub: local socket: %w", err)
	}
	os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.Handle("/", c.Handler())
	// Only on the socket (owner-only): `collect import` streams a bundle
	// from the stick; the collector stores it as a stopped hub would and
	// answers the signed receipt, which the CLI writes beside the bundle.
	mux.HandleFunc("POST /v1/import", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		rc, file, n, err := ImportBundleFrom(r.Context(), c.st, name, io.LimitReader(r.Body, MaxBundleBytes+1), c.o.Key, c.o.Registry, time.Now())
		if err != nil {
			apiFail(w, http.StatusUnprocessableEntity, "bundle_refused", err)
			return
		}
		writeJSON(w, LocalImport{Device: rc.Device, New: n.New, Duplicate: n.Duplicate, Rejected: len(rc.Rejected), Receipt: file})
	})
	// Also only here: the reviewed photos as training data, as a tar the
	// CLI writes out (the hub's sandbox need not see the admin's folder).
	mux.HandleFunc("GET /v1/export/reviewed", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-tar")
		if err := ExportReviewedTar(r.Context(), c.st, w); err != nil {
			c.log.Warn("collector: reviewed export over the socket failed", "err", err)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
		os.Remove(path)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// LocalImport is the running collector's answer to a bundle streamed to
// its socket: the counts and the receipt file's bytes.
type LocalImport struct {
	Device    string `json:"device"`
	New       int64  `json:"new"`
	Duplicate int64  `json:"duplicate"`
	Rejected  int    `json:"rejected"`
	Receipt   []byte `json:"receipt"`
}

// LocalImportFile streams a bundle file to the running collector's socket
// and writes the receipt it answers beside the bundle.
func LocalImportFile(ctx context.Context, sock, path string) (*LocalImport, string, error) {
	// The stick's file, read the way ImportBundle reads it: no final
	// symlink, a regular file, at most MaxBundleBytes.
	f, _, err := safefile.Open(path, MaxBundleBytes)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://collector/v1/import?name="+url.QueryEscape(filepath.Base(path)), f)
	if err != nil {
		return nil, "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("hub: the running collector's socket %s: %w", sock, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode != http.StatusOK {
		var e APIError
		json.Unmarshal(body, &e)
		return nil, "", fmt.Errorf("%s: refused by the running collector: %s", path, e.Detail)
	}
	var li LocalImport
	if err := json.Unmarshal(body, &li); err != nil {
		return nil, "", fmt.Errorf("hub: the running collector's answer: %w", err)
	}
	out := strings.TrimSuffix(path, osync.BundleExt) + osync.ReceiptExt
	if err := atomicfile.WriteBytes(out, li.Receipt, 0o644); err != nil {
		return nil, "", fmt.Errorf("receipt: %w (the bundle is stored; import it again to write the receipt)", err)
	}
	return &li, out, nil
}

// APIError is the body of an error answer.
type APIError struct {
	Error  string `json:"error"`
	Detail string `json:"detail"`
}

func apiFail(w http.ResponseWriter, code int, short string, detail error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(APIError{Error: short, Detail: detail.Error()})
}

// Fail is apiFail for guards put in front of Handler.
func Fail(w http.ResponseWriter, code int, short string, detail error) {
	apiFail(w, code, short, detail)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// writeCreated answers 201 Created with v as JSON.
func writeCreated(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(v)
}

// metrics: the collector's counters and each device's seconds since last
// seen (the hub's view of its fleet's lag).
func (c *Collector) metrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&c.n)
	reg.MustRegister(deviceLag{c}, alertCount{c})
	return reg
}

type deviceLag struct{ c *Collector }

var lagDesc = prometheus.NewDesc("outpost_hub_device_last_seen_age_seconds", "seconds since the hub last stored or heard from each device", []string{"device"}, nil)

func (deviceLag) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc }

func (l deviceLag) Collect(ch chan<- prometheus.Metric) {
	devs, err := l.c.st.Devices(context.Background())
	if err != nil {
		return
	}
	now := l.c.o.Now()
	for _, d := range devs {
		if !d.LastSeen.IsZero() {
			ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, now.Sub(d.LastSeen).Seconds(), d.Device)
		}
	}
}

// LocalGet asks the collector listening at socket path for url (e.g.
// "/v1/devices") and copies the answer to w.
func LocalGet(ctx context.Context, path, url string, w io.Writer) error {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://collector"+url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("hub: the running collector's socket %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("hub: running collector: %s: %s", resp.Status, b)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// Serve runs the collector as a hub does: its MQTT session until ctx ends
// and, when socket is set (an embedded store, which one process holds),
// the local socket through which `collect export`, `devices`, `import`
// and `export --reviewed` reach it meanwhile. `collect` and `serve --demo`
// both run their hub through it.
func (c *Collector) Serve(ctx context.Context, dial osync.Dialer, socket string) error {
	if socket != "" {
		go func() {
			if err := ServeLocal(ctx, c, socket); err != nil {
				c.log.Warn("collector: no local socket: collect export, devices and import wait for this collector to stop", "socket", socket, "err", err)
			}
		}()
	}
	return c.Run(ctx, dial)
}
