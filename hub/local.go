package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// SocketFile is the unix socket a running collector answers on, in its
// data directory: `collect export` and `collect devices` reach the
// embedded store through it while the collector holds the file.
const SocketFile = "collector.sock"

// ServeLocal answers GET /v1/devices and GET /v1/export?format=jsonl|csv
// on a unix socket at path (mode 0600: only the collector's user) until
// ctx ends.
func ServeLocal(ctx context.Context, c *Collector, path string) error {
	os.Remove(path) // a socket left by a killed collector
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("hub: local socket: %w", err)
	}
	os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/devices", func(w http.ResponseWriter, r *http.Request) {
		devs, err := c.st.Devices(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(devs)
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
			n, err = ExportCSV(r.Context(), c.st, w)
		default:
			http.Error(w, "format: want jsonl or csv", http.StatusBadRequest)
			return
		}
		if err != nil {
			c.log.Warn("collector: local export failed", "after", n, "err", err)
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
