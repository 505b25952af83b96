package hub

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// ErrReviewed: the result has a review already.
var ErrReviewed = errors.New("hub: result already reviewed")

// StoredReview is a review as the hub keeps it.
type StoredReview struct {
	osync.Review
	Delivered bool `json:"delivered"` // the device confirmed it stored it
}

// Awaiting is a result whose evidence is in and that no one has reviewed.
type Awaiting struct {
	Evidence EvidenceInfo    `json:"evidence"`
	Model    string          `json:"model"`
	Version  string          `json:"model_version"`
	Created  time.Time       `json:"created"`
	Output   json.RawMessage `json:"output"` // the model's answer: label, top-3, confidence
	URL      string          `json:"evidence_url"`
}

// awaiting lists evidence without a review, oldest first.
func (c *Collector) awaiting(ctx context.Context) ([]Awaiting, error) {
	evs, err := c.st.EvidenceList(ctx)
	if err != nil {
		return nil, err
	}
	out := []Awaiting{}
	for _, e := range evs {
		if r, err := c.st.ReviewOf(ctx, e.Device, e.Of); err != nil || r != nil {
			continue
		}
		a := Awaiting{Evidence: e, URL: "/v1/evidence/" + e.Device + "/" + e.Of.String(), Output: json.RawMessage("null")}
		if res, err := c.st.Result(ctx, e.Device, e.Of); err == nil && res != nil {
			a.Model, a.Version, a.Created = res.Record.Model, res.Record.Version, res.Record.Created
			if json.Valid(res.Record.Output) {
				a.Output = res.Record.Output
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// PostReview stores an expert's review of a stored result and queues it
// for its device. Errors: the result is unknown (ErrUnknownResult), or
// reviewed already (ErrReviewed), or the review is malformed.
func (c *Collector) PostReview(ctx context.Context, r *osync.Review) error {
	if r.Time.IsZero() {
		r.Time = c.o.Now().UTC()
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%w: %v", osync.ErrMalformed, err)
	}
	res, err := c.st.Result(ctx, r.Device, r.Of)
	if err != nil {
		return err
	}
	if res == nil {
		return fmt.Errorf("%w: %s has no result %s", ErrUnknownResult, r.Device, r.Of)
	}
	if err := c.st.PutReview(ctx, r); err != nil {
		return err
	}
	c.count(&c.n.C.Reviews, 1)
	select {
	case c.deliver <- r.Device:
	default: // delivered on the device's next status anyway
	}
	return nil
}

// ErrUnknownResult: no stored result has that device and ID.
var ErrUnknownResult = errors.New("hub: unknown result")

// deliverReviews sends a device the reviews it has not confirmed.
func (c *Collector) deliverReviews(ctx context.Context, conn osync.Conn, device string) {
	rs, err := c.st.Reviews(ctx, device, true)
	if err != nil {
		c.log.Warn("collector: reviews not read", "device", device, "err", err)
		return
	}
	for _, r := range rs {
		if err := conn.Publish(ctx, osync.CmdTopic(device), 1, false, osync.EncodeReview(&r.Review, c.o.Key)); err != nil {
			c.log.Warn("collector: review not sent", "device", device, "err", err)
			return
		}
		c.count(&c.n.C.Sent, 1)
	}
}

// handleReceipt marks a review delivered.
func (c *Collector) handleReceipt(ctx context.Context, device string, payload []byte) {
	c.receipt(ctx, device, "review", payload, osync.DecodeReviewReceipt, func(of outbox.ID) error { return c.st.MarkDelivered(ctx, device, of) })
}

// receipt takes a device's receipt for what (a review, a warning): the
// device's word only — signed by its enrolled key (a stranger's receipt
// marked a review delivered before) — then mark records it.
func (c *Collector) receipt(ctx context.Context, device, what string, payload []byte,
	decode func([]byte, string) (outbox.ID, ed25519.PublicKey, error), mark func(outbox.ID) error) bool {
	id, key, err := decode(payload, device)
	if err == nil {
		_, err = c.keys.check(ctx, c.st, device, key, c.o.Now())
	}
	if err == nil {
		err = mark(id)
	}
	if err != nil {
		c.count(&c.n.C.Malformed, 1)
		c.log.Warn("collector: "+what+" receipt rejected", "device", device, "err", err)
		return false
	}
	return true
}

// reviewRoutes adds the review API to the hub's handler:
//
//	GET  /v1/review                 results with evidence awaiting review
//	GET  /v1/evidence/{device}/{id} the photo or recording of result id
//	GET  /v1/reviews                every review, with delivered
//	POST /v1/reviews                {"device","of","label","advice","lang","reviewer"}
func (c *Collector) reviewRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/review", func(w http.ResponseWriter, r *http.Request) {
		list, err := c.awaiting(r.Context())
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		writeJSON(w, map[string]any{"awaiting": list})
	})
	mux.HandleFunc("GET /v1/evidence/{device}/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := outbox.ParseID(r.PathValue("id"))
		if err != nil {
			apiFail(w, http.StatusBadRequest, "bad_request", err)
			return
		}
		info, data, err := c.st.Evidence(r.Context(), r.PathValue("device"), id)
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		if info == nil {
			apiFail(w, http.StatusNotFound, "not_found", fmt.Errorf("no evidence for %s %s", r.PathValue("device"), id))
			return
		}
		serveEvidence(w, data, id)
	})
	mux.HandleFunc("GET /v1/reviews", func(w http.ResponseWriter, r *http.Request) {
		rs, err := c.st.Reviews(r.Context(), "", false)
		if err != nil {
			apiFail(w, http.StatusServiceUnavailable, "store", err)
			return
		}
		if rs == nil {
			rs = []StoredReview{}
		}
		writeJSON(w, map[string]any{"reviews": rs})
	})
	mux.HandleFunc("POST /v1/reviews", func(w http.ResponseWriter, r *http.Request) {
		var rv osync.Review
		dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rv); err != nil {
			c.count(&c.n.C.BadReviews, 1)
			apiFail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("review: %w", err))
			return
		}
		switch err := c.PostReview(r.Context(), &rv); {
		case errors.Is(err, ErrUnknownResult):
			c.count(&c.n.C.BadReviews, 1)
			apiFail(w, http.StatusNotFound, "unknown_result", err)
		case errors.Is(err, ErrReviewed):
			c.count(&c.n.C.BadReviews, 1)
			apiFail(w, http.StatusConflict, "already_reviewed", err)
		case errors.Is(err, osync.ErrMalformed):
			c.count(&c.n.C.BadReviews, 1)
			apiFail(w, http.StatusBadRequest, "bad_request", err)
		case err != nil:
			apiFail(w, http.StatusServiceUnavailable, "store", err)
		default:
			writeCreated(w, rv)
		}
	})
}

// ExportReviewed writes every reviewed result that has its evidence as
// training data: DIR/<label>/<device>_<result id>.<ext> (the layout of
// torchvision's ImageFolder, which models/crop-disease/train.py
// --reviewed reads) and DIR/reviews.csv with the review and the model's
// own answer beside it. It returns how many files it wrote and how many
// reviews had no evidence to write.
func ExportReviewed(ctx context.Context, st Store, dir string) (written, without int, err error) {
	return exportReviewed(ctx, st, func(name string, data []byte) error {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		return atomicfile.WriteBytes(path, data, 0o644)
	})
}

// ReviewedManifest is the last entry of ExportReviewedTar's stream.
const ReviewedManifest = ".export.json"

// ExportReviewedTar is ExportReviewed as a tar stream (the same names),
// ending with ReviewedManifest: {"written", "without"}. A running collector
// answers `collect export --reviewed` with it over its socket, and the CLI
// writes the files.
func ExportReviewedTar(ctx context.Context, st Store, w io.Writer) error {
	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Now()}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	written, without, err := exportReviewed(ctx, st, put)
	if err != nil {
		return err
	}
	m, _ := json.Marshal(map[string]int{"written": written, "without": without})
	if err := put(ReviewedManifest, m); err != nil {
		return err
	}
	return tw.Close()
}

func exportReviewed(ctx context.Context, st Store, put func(name string, data []byte) error) (written, without int, err error) {
	rs, err := st.Reviews(ctx, "", false)
	if err != nil {
		return 0, 0, err
	}
	var rows [][]string
	for _, r := range rs {
		info, data, err := st.Evidence(ctx, r.Device, r.Of)
		if err != nil {
			return written, without, err
		}
		if info == nil || !safeName(r.Label) {
			without++
			continue
		}
		ext := ".bin"
		switch info.ContentType {
		case "image/jpeg":
			ext = ".jpg"
		case "image/png":
			ext = ".png"
		case "audio/wave", "audio/wav", "audio/x-wav":
			ext = ".wav"
		}
		name := r.Label + "/" + r.Device + "_" + r.Of.String() + ext
		if err := put(name, data); err != nil {
			return written, without, err
		}
		model, version, said, score := "", "", "", ""
		if res, err := st.Result(ctx, r.Device, r.Of); err == nil && res != nil {
			model, version = res.Record.Model, res.Record.Version
			var o struct {
				Label string   `json:"label"`
				Score *float64 `json:"score"`
			}
			if json.Unmarshal(res.Record.Output, &o) == nil {
				said = o.Label
				if o.Score != nil {
					score = strconv.FormatFloat(*o.Score, 'f', 4, 64)
				}
			}
		}
		rows = append(rows, []string{name, r.Device, r.Of.String(), r.Label, r.Advice, r.Lang, r.Reviewer,
			r.Time.UTC().Format(time.RFC3339), model, version, said, score})
		written++
	}
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{"file", "device", "result_id", "label", "advice", "lang", "reviewer", "reviewed", "model", "model_version", "model_label", "model_score"})
	for _, r := range rows {
		w.Write(CSVCells(r...))
	}
	w.Flush()
	return written, without, put("reviews.csv", buf.Bytes())
}

// safeName: a label usable as a folder name.
func safeName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\\x00") && osync.ValidDeviceID(s)
}

// evidenceTypes are the types the hub serves evidence as: what it sniffs
// from the bytes, never what the device declared (a device that says
// text/html must not put a page in the hub's origin).
var evidenceTypes = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true,
	"image/bmp": true, "audio/wave": true, "audio/mpeg": true, "audio/ogg": true}

func serveEvidence(w http.ResponseWriter, data []byte, id outbox.ID) {
	kind := http.DetectContentType(data)
	if !evidenceTypes[kind] {
		kind = "application/octet-stream"
	}
	w.Header().Set("Content-Type", kind)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; sandbox")
	w.Header().Set("Content-Disposition", `inline; filename="evidence-`+id.String()+`"`)
	w.Write(data)
}
