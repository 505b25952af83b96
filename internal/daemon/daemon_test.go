package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/outbox"
)

func newTestDaemon(t testing.TB, mutate func(*Config)) (*Daemon, *httptest.Server) {
	t.Helper()
	testutil.SileroPath(t)
	c := Defaults()
	c.DataDir, c.ModelsDir, c.ORTLib, c.DeviceID = t.TempDir(), testutil.ModelsDir(t), testutil.LibPath(t), "test-kiosk"
	if mutate != nil {
		mutate(&c)
	}
	d, err := New(c, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.routes())
	t.Cleanup(func() { srv.Close(); d.Close() })
	return d, srv
}

func sample(t testing.TB, rel string) []byte {
	b, err := os.ReadFile(filepath.Join(testutil.ModelsDir(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(t *testing.T, url, ctype string, body []byte, hdr ...string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m, resp.Header
}

func queueCount(t *testing.T, d *Daemon) int64 {
	st, err := d.dev.Outbox().Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st.Count
}

func pngBomb() []byte {
	ihdr := binary.BigEndian.AppendUint32(nil, 60000)
	ihdr = binary.BigEndian.AppendUint32(ihdr, 60000)
	ihdr = append(ihdr, 8, 2, 0, 0, 0)
	chunk := append([]byte("IHDR"), ihdr...)
	b := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0d"), chunk...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(chunk))
}

func TestAPI_InferAndBadInputs(t *testing.T) {
	d, srv := newTestDaemon(t, func(c *Config) { c.MaxBodyBytes = 300_000 })
	photo := sample(t, "crop-disease/samples/rust.jpg")
	code, body, _ := post(t, srv.URL+"/v1/models/crop-disease/infer?lang=am", "image/jpeg", photo)
	if code != 201 || body["id"] == nil {
		t.Fatalf("good photo: %d %v", code, body)
	}
	if r := body["result"].(map[string]any); r["label"] != "rust" || !strings.Contains(r["advice"].(string), "ዝገት") {
		t.Fatalf("result %v", r)
	}
	// Multipart, as a browser form posts it.
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	h := make(map[string][]string)
	h["Content-Disposition"] = []string{`form-data; name="file"; filename="yes.wav"`}
	h["Content-Type"] = []string{"audio/wav"}
	pw, _ := mw.CreatePart(h)
	pw.Write(sample(t, "kws/eval/000_en_yes.wav"))
	mw.Close()
	code, body, _ = post(t, srv.URL+"/v1/models/kws/infer", mw.FormDataContentType(), mp.Bytes())
	if code != 201 || !strings.Contains(toJSON(body["result"]), `"keyword":"yes"`) {
		t.Fatalf("multipart wav: %d %v", code, body)
	}
	before := queueCount(t, d)
	if before != 2 {
		t.Fatalf("queue %d, want 2", before)
	}
	good := models.EncodeWAV(make([]float32, 1600), 16000)
	for _, c := range []struct {
		name, path, ctype string
		body              []byte
		code              int
		want              string
	}{
		{"oversized body", "crop-disease", "image/jpeg", make([]byte, 400_000), 413, "too_large"},
		{"wrong content type", "crop-disease", "text/plain", []byte("hello"), 415, "image/jpeg or image/png"},
		{"wav to image model", "crop-disease", "audio/wav", good, 415, "unsupported_media_type"},
		{"truncated jpeg", "crop-disease", "image/jpeg", photo[:len(photo)/3], 400, "bad input"},
		{"png bomb", "crop-disease", "image/png", pngBomb(), 400, "60000x60000"},
		{"garbage wav", "kws", "audio/wav", []byte("RIFF....WAVEjunkjunkjunk"), 400, "wav"},
		{"truncated wav header", "silero-vad", "audio/wav", good[:20], 400, "bad input: wav"},
		{"unknown model", "nope", "image/jpeg", photo, 404, "unknown model"},
		{"no content type", "crop-disease", "", photo, 400, "Content-Type"},
	} {
		code, body, _ := post(t, srv.URL+"/v1/models/"+c.path+"/infer", c.ctype, c.body)
		if code != c.code || !strings.Contains(toJSON(body), c.want) || body["error"] == nil || body["detail"] == nil {
			t.Errorf("%s: %d %v, want %d containing %q", c.name, code, body, c.code, c.want)
		}
	}
	if after := queueCount(t, d); after != before {
		t.Fatalf("bad inputs changed the queue: %d -> %d", before, after)
	}
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("daemon unhealthy after bad inputs: %v %v", resp, err)
	}
	// Recent results for the kiosk, and status.
	var rs struct{ Results []stored }
	getJSON(t, srv.URL+"/v1/results?limit=5", &rs)
	if len(rs.Results) != 2 || rs.Results[0].Model != "crop-disease" {
		t.Fatalf("results %+v", rs)
	}
	getJSON(t, srv.URL+"/v1/results?since="+rs.Results[0].ID, &rs)
	if len(rs.Results) != 1 || rs.Results[0].Model != "kws" {
		t.Fatalf("results since: %+v", rs)
	}
	var st map[string]any
	getJSON(t, srv.URL+"/v1/status", &st)
	if st["device"] != "test-kiosk" || st["queue"].(map[string]any)["count"].(float64) != 2 {
		t.Fatalf("status %v", st)
	}
	// Metrics: Prometheus text with our series and Go's.
	resp, _ = http.Get(srv.URL + "/metrics")
	m, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`outpost_inferences_total{model="crop-disease",outcome="ok"} 1`, `outpost_inferences_total{model="crop-disease",outcome="error"}`, "outpost_queue_records 2", "go_goroutines", `outpost_inference_seconds_bucket{model="kws"`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func getJSON(t *testing.T, url string, v any, hdr ...string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(v)
	return resp.StatusCode
}

func TestAPI_Backpressure(t *testing.T) {
	d, srv := newTestDaemon(t, func(c *Config) { c.MaxConcurrent = 1 })
	d.sem <- struct{}{} // one inference "running"
	code, body, hdr := post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", sample(t, "crop-disease/samples/rust.jpg"))
	if code != 429 || hdr.Get("Retry-After") != "1" || body["error"] != "busy" {
		t.Fatalf("%d %v %v", code, body, hdr)
	}
	<-d.sem
	if code, _, _ := post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", sample(t, "crop-disease/samples/rust.jpg")); code != 201 {
		t.Fatalf("after the slot freed: %d", code)
	}
}

func TestAPI_Token(t *testing.T) {
	_, srv := newTestDaemon(t, func(c *Config) { c.Listen, c.Token = "0.0.0.0:0", "s3cret" })
	var v map[string]any
	if code := getJSON(t, srv.URL+"/v1/status", &v); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if code := getJSON(t, srv.URL+"/v1/status", &v, "Authorization", "Bearer wrong"); code != 401 {
		t.Fatalf("wrong token: %d", code)
	}
	if code := getJSON(t, srv.URL+"/v1/status", &v, "Authorization", "Bearer s3cret"); code != 200 {
		t.Fatalf("right token: %d", code)
	}
	resp, _ := http.Get(srv.URL + "/")
	if resp.StatusCode != 200 {
		t.Fatalf("kiosk page must load without a token: %d", resp.StatusCode)
	}
}

func TestConfig(t *testing.T) {
	c := Defaults()
	f := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(f, []byte(`{"listen": "127.0.0.1:9000", "queue_policy": "drop-lowest", "mqtt_password": "pw"}`), 0o600)
	if err := c.LoadFile(f); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"OUTPOST_LISTEN": "127.0.0.1:9001", "OUTPOST_MAX_CONCURRENT": "4", "OUTPOST_DEMO": "true"}
	if err := c.LoadEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9001" || c.MaxConcurrent != 4 || !c.Demo || c.QueuePolicy != "drop-lowest" {
		t.Fatalf("merged %+v", c)
	}
	if m := c.Masked(); strings.Contains(m, `"pw"`) || !strings.Contains(m, "********") {
		t.Fatalf("secret not masked:\n%s", m)
	}
	for _, bad := range []struct{ json, want string }{
		{`{"listen": "0.0.0.0:8080"}`, "token: required"},
		{`{"queue_policy": "yolo"}`, "queue_policy"},
		{`{"lang": "de"}`, "lang"},
		{`{"device_id": "a/b"}`, "device_id"},
		{`{"broker": "hub:1883"}`, "broker"},
		{`{"listne": "x"}`, `unknown field "listne"`},
	} {
		c := Defaults()
		os.WriteFile(f, []byte(bad.json), 0o600)
		err := c.LoadFile(f)
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: err = %v, want %q", bad.json, err, bad.want)
		}
	}
	if err := c.LoadEnv(func(k string) string {
		if k == "OUTPOST_THREADS" {
			return "many"
		}
		return ""
	}); err == nil || !strings.Contains(err.Error(), "OUTPOST_THREADS") {
		t.Fatalf("bad env: %v", err)
	}
}

func TestWatchFolder(t *testing.T) {
	inbox := t.TempDir()
	d, _ := newTestDaemon(t, func(c *Config) { c.Inbox = inbox })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.watch(ctx, inbox, 50*time.Millisecond); close(done) }()
	os.WriteFile(filepath.Join(inbox, "leaf.jpg"), sample(t, "crop-disease/samples/mosaic.jpg"), 0o644)
	os.WriteFile(filepath.Join(inbox, "notes.txt"), []byte("hello"), 0o644)
	os.WriteFile(filepath.Join(inbox, "broken.png"), []byte("\x89PNG not really"), 0o644)
	// A file still being written (growing) and a .part file must be left alone.
	partial := filepath.Join(inbox, "big.jpg.part")
	os.WriteFile(partial, []byte("xx"), 0o644)
	testutil.Eventually(t, 10*time.Second, "the broken file failed and the leaf done", func() bool {
		_, e1 := os.Stat(filepath.Join(inbox, "failed", "broken.png"))
		_, e2 := os.Stat(filepath.Join(inbox, "done", "leaf.jpg"))
		return e1 == nil && e2 == nil
	})
	cancel()
	<-done
	for _, p := range []string{"done/leaf.jpg", "failed/notes.txt", "failed/notes.txt.reason.txt", "failed/broken.png", "failed/broken.png.reason.txt", "big.jpg.part"} {
		if _, err := os.Stat(filepath.Join(inbox, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	reason, _ := os.ReadFile(filepath.Join(inbox, "failed", "broken.png.reason.txt"))
	if !strings.Contains(string(reason), "bad input") {
		t.Errorf("reason file: %s", reason)
	}
	if n := queueCount(t, d); n != 1 {
		t.Fatalf("queue %d, want 1 (the leaf)", n)
	}
}

// TestModels_BrokenShownNotOffered (issue 25): a model whose .onnx is
// random bytes (checksum updated to match) was listed in /v1/models and
// answered 500. It is now opened at start, shown as broken with why, and
// refused with 503; the other models work.
func TestModels_BrokenShownNotOffered(t *testing.T) {
	models := t.TempDir()
	for _, m := range []string{"crop-disease", "silero-vad"} {
		if err := os.CopyFS(filepath.Join(models, m), os.DirFS(filepath.Join(testutil.ModelsDir(t), m))); err != nil {
			t.Fatal(err)
		}
	}
	manPath := filepath.Join(models, "crop-disease", "manifest.json")
	var man map[string]any
	b, _ := os.ReadFile(manPath)
	json.Unmarshal(b, &man)
	junk := bytes.Repeat([]byte("not a model "), 1000)
	os.WriteFile(filepath.Join(models, "crop-disease", man["file"].(string)), junk, 0o644)
	sum := sha256.Sum256(junk)
	man["sha256"] = hex.EncodeToString(sum[:])
	b, _ = json.Marshal(man)
	os.WriteFile(manPath, b, 0o644)

	_, srv := newTestDaemon(t, func(c *Config) { c.ModelsDir = models })
	var list struct {
		Models []struct{ Name, State, Error string } `json:"models"`
	}
	getJSON(t, srv.URL+"/v1/models", &list)
	states := map[string]string{}
	for _, m := range list.Models {
		states[m.Name] = m.State
		if m.State == "broken" && m.Error == "" {
			t.Errorf("%s broken without a reason", m.Name)
		}
	}
	if states["crop-disease"] != "broken" || states["silero-vad"] != "ready" {
		t.Fatalf("model states %v, want crop-disease broken and silero-vad ready", states)
	}
	if code, body, _ := post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", sample(t, "crop-disease/samples/rust.jpg")); code != 503 || body["error"] != "model_broken" {
		t.Fatalf("infer on a broken model: %d %v", code, body)
	}
}

// TestAPI_Guide (issue 32): the quality gate alone on a camera frame, in
// the user's language, nothing stored: a dark frame is told so, a leaf
// looks good, random bytes are a clear 400.
func TestAPI_Guide(t *testing.T) {
	d, srv := newTestDaemon(t, nil)
	leaf := sample(t, "crop-disease/samples/rust.jpg")
	img := image.NewRGBA(image.Rect(0, 0, 160, 120))
	var dark bytes.Buffer
	jpeg.Encode(&dark, img, nil)
	for _, c := range []struct {
		frame  []byte
		lang   string
		ok     bool
		reason string
		words  string
	}{
		{leaf, "sw", true, "", "piga picha"},
		{dark.Bytes(), "fr", false, "too_dark", "trop sombre"},
	} {
		code, body, _ := post(t, srv.URL+"/v1/models/crop-disease/guide?lang="+c.lang, "image/jpeg", c.frame)
		if code != 200 || body["ok"] != c.ok || (c.reason != "" && body["reason"] != c.reason) || !strings.Contains(fmt.Sprint(body["text"]), c.words) {
			t.Errorf("guide %s: %d %v", c.reason, code, body)
		}
	}
	if code, body, _ := post(t, srv.URL+"/v1/models/crop-disease/guide", "image/jpeg", []byte("not a photo")); code != 400 {
		t.Errorf("random bytes: %d %v", code, body)
	}
	if n := queueCount(t, d); n != 0 {
		t.Fatalf("guidance stored %d results", n)
	}
}

// TestKiosk_HistoryAcrossRestart (issue 32): the kiosk's past answers were
// an in-memory list; they now survive a restart, each still reopening its
// answer and its speech.
func TestKiosk_HistoryAcrossRestart(t *testing.T) {
	data := t.TempDir()
	d, srv := newTestDaemon(t, func(c *Config) { c.DataDir = data })
	code, body, _ := post(t, srv.URL+"/v1/models/crop-disease/infer?lang=sw", "image/jpeg", sample(t, "crop-disease/samples/rust.jpg"))
	if code != 201 {
		t.Fatalf("infer: %d %v", code, body)
	}
	id := body["id"].(string)
	d.saveHistory() // what the history loop does within a second, and at every stop
	srv.Close()
	d.Close()

	_, srv = newTestDaemon(t, func(c *Config) { c.DataDir = data })
	var res struct {
		Results []struct {
			ID     string         `json:"id"`
			Result map[string]any `json:"result"`
		} `json:"results"`
	}
	getJSON(t, srv.URL+"/v1/results", &res)
	if len(res.Results) != 1 || res.Results[0].ID != id || res.Results[0].Result["label"] != "rust" {
		t.Fatalf("after a restart the kiosk lists %+v, want the rust answer %s", res.Results, id)
	}
	resp, err := http.Get(srv.URL + "/v1/results/" + id + "/speech?lang=en")
	if err != nil {
		t.Fatal(err)
	}
	wav, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(wav) < 1000 {
		t.Fatalf("the answer from before the restart, spoken: %d, %d bytes", resp.StatusCode, len(wav))
	}
}

// TestStore_RecordCarriesMeaning (issue 30): real photos through the API;
// the record in the outbox carries what the task table says the answer
// means — blight first (alert), a non-leaf as bulk and counted as nothing,
// a keyword as a command — so the hub never reads it from field names.
func TestStore_RecordCarriesMeaning(t *testing.T) {
	d, srv := newTestDaemon(t, nil)
	for _, c := range []struct {
		path, model, ctype string
		body               []byte
		outcome, label     string
		prio               outbox.Priority
	}{
		{"blight", "crop-disease", "image/jpeg", sample(t, "crop-disease/samples/blight.jpg"), "diagnosis", "blight", outbox.Alert},
		{"rust", "crop-disease", "image/jpeg", sample(t, "crop-disease/samples/rust.jpg"), "diagnosis", "rust", outbox.Normal},
		{"black frame", "crop-disease", "image/png", blackPNG(t), "retake", "", outbox.Bulk},
	} {
		code, body, _ := post(t, srv.URL+"/v1/models/"+c.model+"/infer", c.ctype, c.body)
		if code != 201 {
			t.Fatalf("%s: %d %v", c.path, code, body)
		}
		id, err := outbox.ParseID(body["id"].(string))
		if err != nil {
			t.Fatal(err)
		}
		r, err := d.dev.Outbox().Get(id)
		if err != nil || r.Outcome != c.outcome || r.Label != c.label || r.Priority != c.prio {
			t.Errorf("%s: stored outcome %q label %q priority %v (%v), want %q %q %v", c.path, r.Outcome, r.Label, r.Priority, err, c.outcome, c.label, c.prio)
		}
	}
}

func blackPNG(t *testing.T) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 320, 240))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
