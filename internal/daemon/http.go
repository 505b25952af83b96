package daemon

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/internal/device"
	"github.com/outpost-edge/outpost/internal/httpguard"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/outbox"
	"github.com/outpost-edge/outpost/runtime"
)

//go:embed kiosk
var kioskFS embed.FS

const (
	// multipartSlack is room for multipart headers and boundaries on top
	// of max_body_bytes of file.
	multipartSlack = 64 << 10
	// bodyTimeout bounds how long one upload may take to arrive.
	bodyTimeout = 60 * time.Second
)

// apiError is every error response: {"error": short code, "detail": what was wrong}.
type apiError struct {
	Error  string `json:"error"`
	Detail string `json:"detail"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, short string, detail error) {
	writeJSON(w, code, apiError{Error: short, Detail: detail.Error()})
}

func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	kiosk, _ := fs.Sub(kioskFS, "kiosk")
	mux.Handle("GET /", http.FileServerFS(kiosk))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if d.cfg.Inbox != "" {
			if why := d.watchSt.stalled(time.Now(), watchEvery); why != "" {
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, why+"\n")
				return
			}
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /v1/results/{id}/speech", d.handleResultSpeech)
	mux.HandleFunc("GET /v1/speech", d.handleSpeech)
	mux.HandleFunc("GET /v1/warnings", d.handleWarnings)
	mux.HandleFunc("GET /v1/usb", d.handleUSB)
	mux.HandleFunc("POST /v1/usb/export", d.handleUSBExport)
	mux.HandleFunc("GET /v1/reviews", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"reviews": orEmpty(d.dev.Reviews())})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, d.statusBody()) })
	mux.HandleFunc("GET /v1/models", d.handleModels)
	mux.HandleFunc("POST /v1/models/{name}/infer", d.handleInfer)
	mux.HandleFunc("POST /v1/models/{name}/guide", d.handleGuide)
	mux.HandleFunc("GET /v1/models/{name}/infer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "POST")
		fail(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Errorf("%s: this route takes POST with a photo or WAV", r.Method))
	})
	mux.HandleFunc("GET /v1/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusNotFound, "not_found", fmt.Errorf("no API route %s %s (see GET /v1/models)", r.Method, r.URL.Path))
	})
	mux.HandleFunc("GET /v1/results", d.handleResults)
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}))
	// Browsers on the device must not be able to post forged results from
	// another site's page (no preflight for a multipart POST): the guard
	// refuses cross-origin state changes, foreign Host names without a
	// token, and the API without the token when one is set (the kiosk page
	// and /healthz stay open so a kiosk browser can load; the page sends
	// the token it is given in its URL).
	return httpguard.Wrap(mux, httpguard.Options{Token: d.cfg.Token, Fail: fail, Protected: func(p string) bool {
		return strings.HasPrefix(p, "/v1/") || p == "/metrics"
	}})
}

func (d *Daemon) handleModels(w http.ResponseWriter, r *http.Request) {
	type model struct {
		Name      string      `json:"name"`
		Version   string      `json:"version"`
		Task      models.Task `json:"task"`
		Labels    []string    `json:"labels,omitempty"`
		Languages []string    `json:"languages,omitempty"`
		Accepts   []string    `json:"accepts"`
		State     string      `json:"state"`           // ready, or broken (does not load)
		Error     string      `json:"error,omitempty"` // why it is broken
	}
	var out []model
	for _, m := range d.dev.Registry().Models() {
		spec, _ := models.Spec(m.Task)
		state, why := "ready", d.dev.Broken(m.Name)
		if why != "" {
			state = "broken"
		}
		out = append(out, model{m.Name, m.Version, m.Task, m.Labels, m.Languages, spec.ContentTypes, state, why})
	}
	writeJSON(w, 200, map[string]any{"models": out})
}

// handleGuide: POST /v1/models/{name}/guide with a small camera frame
// (image/jpeg): the photo quality gate alone, nothing stored, and what to
// do in the user's language (?lang=) — the kiosk asks while its camera is
// open, a few times a second.
func (d *Daemon) handleGuide(w http.ResponseWriter, r *http.Request) {
	m, err := d.dev.Registry().Get(r.PathValue("name"))
	if err != nil {
		fail(w, http.StatusNotFound, "unknown_model", err)
		return
	}
	frame, err := io.ReadAll(http.MaxBytesReader(w, r.Body, models.MaxGuideFrame))
	if err != nil {
		fail(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Errorf("a guidance frame is at most %d bytes: %w", models.MaxGuideFrame, err))
		return
	}
	lang := r.URL.Query().Get("lang")
	if lang == "" {
		lang = d.cfg.Lang
	}
	g, err := models.Guide(m, frame, lang)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_input", err)
		return
	}
	writeJSON(w, 200, g)
}

// handleInfer: POST /v1/models/{name}/infer with an image/jpeg, image/png or
// audio/wav body, or multipart/form-data with a "file" part. 201 with the
// stored result once it is durable.
func (d *Daemon) handleInfer(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	m, err := d.dev.Registry().Get(name)
	if err != nil {
		fail(w, http.StatusNotFound, "unknown_model", err)
		return
	}
	// A declared length over the limit is refused before reading a byte.
	limit := d.cfg.MaxBodyBytes + multipartSlack
	if r.ContentLength > limit {
		w.Header().Set("Connection", "close")
		fail(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Errorf("declared body of %d bytes is over the %d-byte limit", r.ContentLength, d.cfg.MaxBodyBytes))
		return
	}
	// Uploads being received are bounded apart from inferences, so slow
	// senders cannot hold the inference slots (or unbounded memory).
	select {
	case d.uploads <- struct{}{}:
	default:
		w.Header().Set("Retry-After", "2")
		fail(w, http.StatusTooManyRequests, "busy", fmt.Errorf("%d uploads already being received; retry shortly", cap(d.uploads)))
		return
	}
	// The body must arrive within bodyTimeout, however slowly it trickles,
	// and keep a minimum rate: three slow senders held every upload slot
	// for the whole 60 s before.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(uploadGrace))
	r.Body = &minRate{r: http.MaxBytesReader(w, r.Body, limit), rc: rc, start: time.Now(), end: time.Now().Add(bodyTimeout)}
	data, ctype, filename, err := readUpload(r)
	<-d.uploads
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		var tooBig *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &tooBig):
			fail(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Errorf("body larger than %d bytes", d.cfg.MaxBodyBytes))
		case errors.As(err, &ne) && ne.Timeout():
			w.Header().Set("Connection", "close")
			fail(w, http.StatusRequestTimeout, "timeout", fmt.Errorf("body not received within %s, or slower than %d bytes/s", bodyTimeout, uploadMinRate))
		default:
			fail(w, http.StatusBadRequest, "bad_request", err)
		}
		return
	}
	if int64(len(data)) > d.cfg.MaxBodyBytes {
		fail(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Errorf("file of %d bytes is over the %d-byte limit", len(data), d.cfg.MaxBodyBytes))
		return
	}
	// Backpressure: a bounded number of inferences at once, taken only now
	// that the whole body is here; the rest are told to come back.
	select {
	case d.sem <- struct{}{}:
		defer func() { <-d.sem }()
	default:
		w.Header().Set("Retry-After", "1")
		fail(w, http.StatusTooManyRequests, "busy", fmt.Errorf("%d inferences already running; retry in a second", cap(d.sem)))
		return
	}
	spec, _ := models.Spec(m.Task)
	if err := spec.Accepts(ctype); err != nil {
		fail(w, http.StatusUnsupportedMediaType, "unsupported_media_type", err)
		return
	}
	prio := outbox.Normal
	if p := r.URL.Query().Get("priority"); p != "" {
		if prio, err = outbox.ParsePriority(p); err != nil {
			fail(w, http.StatusBadRequest, "bad_request", err)
			return
		}
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 {
		fail(w, http.StatusBadRequest, "bad_request", errors.New("Idempotency-Key longer than 255 bytes"))
		return
	}
	res, err := d.InferAndStore(r.Context(), name, filename, data, r.URL.Query().Get("lang"), prio, key)
	switch {
	case err != nil && r.Context().Err() != nil:
		// The client went away; nothing to answer and nothing wrong here.
		d.log.Info("client closed the connection before the answer", "model", name, "err", err)
	case err == nil:
		writeJSON(w, http.StatusCreated, res)
	case errors.Is(err, models.ErrBadInput) || errors.Is(err, runtime.ErrBadInput):
		fail(w, http.StatusBadRequest, "bad_input", err)
	case errors.Is(err, outbox.ErrFull), errors.Is(err, outbox.ErrDiskFull), errors.Is(err, outbox.ErrTooLarge):
		fail(w, http.StatusInsufficientStorage, "queue_full", err)
	case errors.Is(err, device.ErrModelBroken):
		fail(w, http.StatusServiceUnavailable, "model_broken", err)
	default:
		d.log.Error("inference failed", "model", name, "err", err)
		fail(w, http.StatusInternalServerError, "internal", err)
	}
}

// uploadMinRate and uploadGrace: after the grace, an upload must have
// arrived at this average rate so far or its slot is freed.
const (
	uploadMinRate = 4 << 10
	uploadGrace   = 5 * time.Second
)

// minRate moves the read deadline with what has arrived: grace plus one
// second per uploadMinRate bytes, never past end (bodyTimeout).
type minRate struct {
	r          io.ReadCloser
	rc         *http.ResponseController
	start, end time.Time
	n          int64
	set        time.Time // the deadline last set
}

func (m *minRate) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	m.n += int64(n)
	d := m.start.Add(uploadGrace + time.Duration(m.n)*time.Second/uploadMinRate)
	if d.After(m.end) {
		d = m.end
	}
	// Moved only when it moves by a tenth of a second or more: resetting
	// the connection's timer on every 4 KB read was time spent per byte.
	if d.Sub(m.set) >= 100*time.Millisecond || d.Equal(m.end) && !m.set.Equal(m.end) {
		_ = m.rc.SetReadDeadline(d)
		m.set = d
	}
	return n, err
}

func (m *minRate) Close() error { return m.r.Close() }

// readAllSized reads r to the end into one buffer sized from the declared
// length (bounded by the caller's MaxBytesReader): io.ReadAll grew a
// 300 KB photo from 512 bytes, copying it a dozen times.
func readAllSized(r io.Reader, declared int64) ([]byte, error) {
	var b bytes.Buffer
	if declared > 0 {
		b.Grow(int(declared) + bytes.MinRead)
	}
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}

func readUpload(r *http.Request) (data []byte, ctype, filename string, err error) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return nil, "", "", fmt.Errorf("Content-Type %q: %v", r.Header.Get("Content-Type"), err)
	}
	if mt != "multipart/form-data" {
		data, err = readAllSized(r.Body, r.ContentLength)
		return data, mt, "upload", err
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return nil, "", "", errors.New(`multipart body has no "file" part`)
		}
		if err != nil {
			return nil, "", "", fmt.Errorf("multipart: %w", err)
		}
		if p.FormName() != "file" {
			continue
		}
		data, err := readAllSized(p, r.ContentLength)
		ct := p.Header.Get("Content-Type")
		if mt, _, e := mime.ParseMediaType(ct); e == nil {
			ct = mt
		}
		return data, ct, p.FileName(), err
	}
}

// handleResults: GET /v1/results?since=ID&limit=N — results stored by this
// process, oldest first, after the given ID.
func (d *Daemon) handleResults(w http.ResponseWriter, r *http.Request) {
	since := r.URL.Query().Get("since")
	limit := 20
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > recentMax {
			fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("limit %q: want 1 to %d", s, recentMax))
			return
		}
		limit = n
	}
	d.recentMu.Lock()
	out := []stored{}
	for _, s := range d.recent {
		if s.ID > since {
			out = append(out, s)
		}
	}
	d.recentMu.Unlock()
	for i := range out {
		if id, err := outbox.ParseID(out[i].ID); err == nil {
			out[i].Review = d.dev.Review(id)
		}
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	writeJSON(w, 200, map[string]any{"results": out})
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
