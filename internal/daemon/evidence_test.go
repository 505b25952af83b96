package daemon_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/image/draw"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// sniffer records every payload on the broker (what "on the wire" means
// for the policy test).
type sniffer struct {
	mu   gosync.Mutex
	msgs map[string][][]byte // topic kind -> payloads
}

func sniff(t *testing.T, url string) *sniffer {
	s := &sniffer{msgs: map[string][][]byte{}}
	conn, err := testutil.Dialer(t, url, true)(context.Background(), "sniffer", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	err = conn.Subscribe(context.Background(), "outpost/v1/#", 1, func(m osync.Message) {
		_, kind, _ := osync.DeviceFromTopic(m.Topic)
		s.mu.Lock()
		s.msgs[kind] = append(s.msgs[kind], append([]byte(nil), m.Payload...))
		s.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// carries says whether any payload device → hub contains b (a run of a
// photo's bytes).
func (s *sniffer) carries(b []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for kind, ms := range s.msgs {
		if kind == "cmd" || kind == "ack" {
			continue
		}
		for _, m := range ms {
			if bytes.Contains(m, b) {
				return true
			}
		}
	}
	return false
}

func (s *sniffer) count(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs[kind])
}

// bigPhoto is a sample leaf blown up to a phone camera's size.
func bigPhoto(t *testing.T, path string, side int) []byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src, err := jpeg.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	dst := image.NewRGBA(image.Rect(0, 0, side, side))
	draw.CatmullRom.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	var out bytes.Buffer
	jpeg.Encode(&out, dst, &jpeg.Options{Quality: 90})
	return out.Bytes()
}

type evidenceRig struct {
	t      *testing.T
	bin    string
	broker *testutil.Broker
	proxy  *testutil.Proxy
	hub    *testutil.Hub
	sniff  *sniffer
	models string
	data   string
	hubKey string
	p      *proc
}

func (r *evidenceRig) serve(sharing map[string]any) {
	cfg, _ := json.Marshal(map[string]any{"device_id": "kiosk-ev", "broker": r.proxy.URL(), "data_dir": r.data,
		"daily_budget": "20MB", "sharing": sharing, "hub_keys": []string{r.hubKey}})
	path := filepath.Join(r.t.TempDir(), "config.json")
	os.WriteFile(path, cfg, 0o644)
	cmd := exec.Command(r.bin, "serve", "--listen", "127.0.0.1:0", "--models-dir", r.models, "--config", path)
	cmd.Env = append(os.Environ(), "OUTPOST_ORT_LIB="+testutil.LibPath(r.t))
	r.p = startCmd(r.t, cmd)
}

func (r *evidenceRig) stop() {
	r.p.cmd.Process.Signal(os.Interrupt)
	<-r.p.exit
}

func (r *evidenceRig) post(photo []byte) (id string, uncertain bool) {
	r.t.Helper()
	resp, err := http.Post(r.p.url+"/v1/models/crop-disease/infer", "image/jpeg", bytes.NewReader(photo))
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct {
		ID     string `json:"id"`
		Result struct {
			Uncertain bool `json:"uncertain"`
		} `json:"result"`
	}
	json.NewDecoder(resp.Body).Decode(&res)
	if resp.StatusCode != 201 || res.ID == "" {
		r.t.Fatalf("infer: %d %+v", resp.StatusCode, res)
	}
	return res.ID, res.Result.Uncertain
}

func (r *evidenceRig) waitFor(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s\n%s", what, r.p.logs)
		}
		time.Sleep(50 * time.Millisecond) // Eventually's poll, kept here to print the daemon's logs as they are at the timeout
	}
}

func (r *evidenceRig) stored() int { n, _ := r.hub.C.Count(); return n }

func (r *evidenceRig) evidence() []hub.EvidenceInfo {
	l, _ := r.hub.C.Store().EvidenceList(context.Background())
	return l
}

// TestEvidence_PolicyAndUpload: with the default policy no photo byte
// reaches the broker; with "uncertain" only the photo the model was unsure
// of goes, downscaled, after every label, through two link cuts, inside
// the budget, and is deleted on the device only once the hub has all of
// it; with "always"/"original" the photo goes as taken.
func TestEvidence_PolicyAndUpload(t *testing.T) {
	r := &evidenceRig{t: t, bin: buildOutpost(t)}
	r.broker = testutil.StartMosquitto(t, false)
	r.proxy = testutil.StartProxy(t, r.broker.Addr())
	hubDir := t.TempDir()
	// Reviews reach a kiosk only from a hub it pins: the hub signs.
	pub, key, _ := ed25519.GenerateKey(nil)
	r.hubKey = osync.FormatPublicKey(pub)
	r.hub = testutil.StartCollectorWith(t, filepath.Join(hubDir, "collector.db"), r.broker.URL(), hub.CollectorOptions{Key: key})
	r.sniff = sniff(t, r.broker.URL())
	dir := t.TempDir()
	r.models, r.data = filepath.Join(dir, "models"), filepath.Join(dir, "data")
	copyFolder(t, filepath.Join(testutil.ModelsDir(t), "crop-disease"), filepath.Join(r.models, "crop-disease"))
	samples := filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples")
	// A leaf the model is not sure of (photographic test set: mosaic 0.42 enlarged).
	unsure := bigPhoto(t, filepath.Join(testutil.ModelsDir(t), "crop-disease", "photo", "031_mosaic-photo.jpg"), 2400)
	sure := bigPhoto(t, filepath.Join(samples, "leaf_spot.jpg"), 2400)
	// A run from the middle of each photo: present in any message that
	// carries the photo as taken.
	mid := func(b []byte) []byte { return b[len(b)/2 : len(b)/2+64] }

	// 1. Default policy (never).
	r.serve(nil)
	if _, u := r.post(unsure); !u {
		t.Fatal("the enlarged photo 031 is not an uncertain answer any more: pick another")
	}
	r.post(sure)
	r.waitFor("2 results at the hub", func() bool { return r.stored() == 2 })
	// Evidence can only leave from the outbox: once it is empty and holds
	// no evidence bytes, nothing more can come.
	r.waitFor("an empty outbox", func() bool {
		var st struct {
			Queue struct {
				Count int64 `json:"count"`
			} `json:"queue"`
			EvidenceWaiting int64 `json:"evidence_waiting_bytes"`
		}
		getJSON(t, r.p.url+"/v1/status", &st)
		return st.Queue.Count == 0 && st.EvidenceWaiting == 0
	})
	if r.sniff.carries([]byte{0xff, 0xd8, 0xff}) || r.sniff.count("evidence") > 0 || len(r.evidence()) > 0 {
		t.Fatalf("a photo left the device under the default policy (evidence messages %d)", r.sniff.count("evidence"))
	}
	r.stop()

	// 2. Evidence when uncertain, as taken, over a slow link cut twice.
	r.proxy.Rate(64 << 10)
	r.serve(map[string]any{"crop-disease": map[string]any{"evidence": "uncertain", "form": "original"}})
	unsureID, _ := r.post(unsure)
	sureID, _ := r.post(sure)
	r.waitFor("4 results at the hub", func() bool { return r.stored() == 4 })
	if n := len(r.evidence()); n != 0 {
		t.Fatalf("evidence complete before the labels were in: %d", n)
	}
	for cut := int64(1); cut <= 2; cut++ {
		r.waitFor("evidence bytes flowing", func() bool { return r.hub.C.Stats().EvBytes >= cut*int64(len(unsure))/3 })
		r.proxy.Reset()
	}
	r.proxy.Rate(0)
	r.waitFor("the evidence stored at the hub", func() bool { return len(r.evidence()) == 1 })
	ev := r.evidence()[0]
	if ev.Of.String() != unsureID {
		t.Fatalf("evidence stored for %s, want the uncertain result %s (the confident one is %s)", ev.Of, unsureID, sureID)
	}
	of, _ := outbox.ParseID(unsureID)
	info, data, err := r.hub.C.Store().Evidence(context.Background(), "kiosk-ev", of)
	if err != nil || info == nil || !bytes.Equal(data, unsure) {
		t.Fatalf("evidence by result: %v (%d bytes, the photo has %d)", err, len(data), len(unsure))
	}
	if r.sniff.carries(mid(sure)) {
		t.Fatal("the confident photo went on the wire under an \"uncertain\" policy")
	}
	var st struct {
		EvidenceWaiting int64 `json:"evidence_waiting_bytes"`
		Sync            struct {
			Tiers    map[string]int64    `json:"budget_used_by_tier"`
			Evidence osync.EvidenceStats `json:"evidence"`
		} `json:"sync"`
		Sharing struct {
			Text []string `json:"text"`
		} `json:"sharing"`
	}
	r.waitFor("the device to delete the uploaded evidence", func() bool {
		resp, err := http.Get(r.p.url + "/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&st)
		return st.EvidenceWaiting == 0 && st.Sync.Evidence.Uploaded == 1
	})
	if st.Sync.Tiers["evidence"] < info.Size || st.Sync.Tiers["labels"] == 0 {
		t.Fatalf("budget by tier: %v (evidence of %d bytes)", st.Sync.Tiers, info.Size)
	}
	hubBytes := r.hub.C.Stats().EvBytes
	t.Logf("uncertain photo sent as taken: %d bytes; %d chunk bytes reached the hub through 2 link cuts (%d re-sent); budget by tier %v",
		info.Size, hubBytes, hubBytes-info.Size, st.Sync.Tiers)
	if hubBytes-info.Size > 2*4*osync.DefaultEvidenceChunk {
		t.Fatalf("re-sent %d bytes through 2 cuts: more than a window (4 chunks) each", hubBytes-info.Size)
	}

	// The model's answer, spoken, before any review.
	speech := func() []byte {
		resp, err := http.Get(r.p.url + "/v1/results/" + unsureID + "/speech?lang=en")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("speech: %d %s", resp.StatusCode, b)
		}
		return b
	}
	modelSaid := speech()

	// The review at the hub, back to the device.
	api := httptest.NewServer(r.hub.C.Handler())
	defer api.Close()
	var aw struct {
		Awaiting []hub.Awaiting `json:"awaiting"`
	}
	getJSON(t, api.URL+"/v1/review", &aw)
	if len(aw.Awaiting) != 1 || aw.Awaiting[0].Evidence.Of.String() != unsureID || !bytes.Contains(aw.Awaiting[0].Output, []byte(`"top"`)) {
		t.Fatalf("awaiting review: %+v", aw)
	}
	resp, err := http.Get(api.URL + aw.Awaiting[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	photo, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(photo, unsure) || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("evidence over the API: %d bytes, %s", len(photo), resp.Header.Get("Content-Type"))
	}
	post := func(body string) int {
		resp, err := http.Post(api.URL+"/v1/reviews", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	advice := "Mosaic virus: pull out and burn the sick plants, control aphids, plant clean cuttings."
	review := `{"device":"kiosk-ev","of":"` + unsureID + `","label":"mosaic","advice":"` + advice + `","lang":"en","reviewer":"A. Agronomist"}`
	for _, c := range []struct {
		name, body string
		want       int
	}{
		{"unknown record", `{"device":"kiosk-ev","of":"` + outbox.NewIDGen().New().String() + `","label":"rust"}`, 404},
		{"another device", `{"device":"kiosk-other","of":"` + unsureID + `","label":"rust"}`, 404},
		{"no label", `{"device":"kiosk-ev","of":"` + unsureID + `"}`, 400},
		{"unknown field", `{"device":"kiosk-ev","of":"` + unsureID + `","label":"x","score":1}`, 400},
	} {
		if got := post(c.body); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	// The agronomist answers on the hub page.
	ctx := testutil.Browser(t, 1000, 1000, 60*time.Second)
	err = chromedp.Do(ctx, chromedp.Navigate(api.URL+"/?lang=en"),
		chromedp.WaitVisible(chromedp.CSS(`.case img[src^="blob:"]`)),
		chromedp.SendKeys(chromedp.CSS(`.case input[name="label"]`), "mosaic"),
		chromedp.SendKeys(chromedp.CSS(`.case textarea[name="advice"]`), advice),
		chromedp.SendKeys(chromedp.CSS(`.case input[name="reviewer"]`), "A. Agronomist"),
	)
	if err != nil {
		t.Fatalf("hub page: %v", err)
	}
	said, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(".case p")))
	png, _ := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	os.WriteFile(filepath.Join(testutil.Root(t), "artifacts", "hub-review-en.png"), png, 0o644)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".case button")), chromedp.WaitReady(chromedp.CSS(`body[data-reviewed="`+unsureID+`"]`))); err != nil {
		t.Fatalf("hub page review: %v (model's answer shown: %q)", err, said)
	}
	if !strings.Contains(said, "Model's answer: ") || !strings.Contains(said, "%") {
		t.Fatalf("the model's answer on the hub page: %q", said)
	}
	if got := post(review); got != 409 {
		t.Errorf("a second answer: %d, want 409", got)
	}
	var res struct {
		Results []struct {
			ID     string        `json:"id"`
			Shared bool          `json:"evidence_shared"`
			Review *osync.Review `json:"review"`
		} `json:"results"`
	}
	r.waitFor("the review on the device", func() bool {
		getJSON(t, r.p.url+"/v1/results?limit=10", &res)
		for _, x := range res.Results {
			if x.ID == unsureID && x.Review != nil {
				return true
			}
		}
		return false
	})
	for _, x := range res.Results {
		switch {
		case x.ID == unsureID && (x.Review.Label != "mosaic" || x.Review.Advice != advice || !x.Shared):
			t.Fatalf("review on the device: %+v", x)
		case x.ID == sureID && (x.Review != nil || x.Shared):
			t.Fatalf("the confident result: %+v", x)
		}
	}
	// Spoken: the expert's answer, not the model's again (issue 26: a
	// farmer who cannot read never heard the correction).
	if expertSaid := speech(); bytes.Equal(expertSaid, modelSaid) || len(expertSaid) <= len(modelSaid)/2 {
		t.Fatalf("the reviewed result speaks %d bytes, the model's answer was %d (the same audio: %v)", len(expertSaid), len(modelSaid), bytes.Equal(expertSaid, modelSaid))
	}
	// The kiosk shows it next to the answer, in the user's language, and
	// says what the kiosk shares.
	chromedp.Run(ctx, chromedp.EmulateViewport(390, 1000))
	for lang, want := range map[string]string{"en": "Reviewed by an agronomist", "sw": "Imekaguliwa na mtaalamu wa kilimo"} {
		err := chromedp.Do(ctx, chromedp.Navigate(r.p.url+"/?lang="+lang), chromedp.WaitVisible(chromedp.CSS("#recent .review:not(.pending)")),
			chromedp.WaitVisible(chromedp.CSS("#about li")))
		if err != nil {
			t.Fatalf("kiosk %s: %v", lang, err)
		}
		text, err1 := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#recent .review:not(.pending)")))
		about, err2 := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#about")))
		png, err3 := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("kiosk %s: %v %v %v", lang, err1, err2, err3)
		}
		// Kinds of answers, not model files (issue 32: "kws-fp32", "silero-vad").
		kind := map[string]string{"en": "Leaf photos", "sw": "Picha za majani"}[lang]
		if !strings.Contains(text, want) || !strings.Contains(text, "Mosaic virus") || !strings.Contains(about, kind) || strings.Contains(about, "crop-disease") {
			t.Fatalf("kiosk %s: review %q, about %q", lang, text, about)
		}
		art := filepath.Join(testutil.Root(t), "artifacts")
		os.MkdirAll(art, 0o755)
		os.WriteFile(filepath.Join(art, "kiosk-review-"+lang+".png"), png, 0o644)
	}
	r.waitFor("the hub to see the receipt", func() bool {
		rv, _ := r.hub.C.Store().ReviewOf(context.Background(), "kiosk-ev", of)
		return rv != nil && rv.Delivered
	})
	if st := r.hub.C.Stats(); st.Reviews != 1 || st.BadReviews != 5 {
		t.Fatalf("hub review counters: %+v", st)
	}
	r.stop()

	// 3. Always, downscaled.
	r.serve(map[string]any{"crop-disease": map[string]any{"evidence": "always"}})
	sureID, _ = r.post(sure)
	r.waitFor("the downscaled photo at the hub", func() bool { return len(r.evidence()) == 2 })
	of, _ = outbox.ParseID(sureID)
	info, data, _ = r.hub.C.Store().Evidence(context.Background(), "kiosk-ev", of)
	img, err := jpeg.Decode(bytes.NewReader(data))
	sum := sha256.Sum256(data)
	if err != nil || hex.EncodeToString(sum[:]) != info.SHA256 || max(img.Bounds().Dx(), img.Bounds().Dy()) != 512 {
		t.Fatalf("downscaled evidence: %v, size %v", err, img.Bounds())
	}
	if r.sniff.carries(mid(sure)) {
		t.Fatal("the photo as taken went on the wire under a downscaled policy")
	}
	before := st.Sync.Tiers["evidence"]
	r.waitFor("the device to delete the downscaled evidence", func() bool {
		getJSON(t, r.p.url+"/v1/status", &st)
		return st.EvidenceWaiting == 0 && st.Sync.Evidence.Uploaded == 1
	})
	t.Logf("confident photo: %d bytes as taken, %d bytes downscaled to 512 px; evidence tier on the wire for it: %d bytes",
		len(sure), len(data), st.Sync.Tiers["evidence"]-before)
	var rs struct {
		Reviews []osync.Review `json:"reviews"`
	}
	getJSON(t, r.p.url+"/v1/reviews", &rs)
	if len(rs.Reviews) != 1 || rs.Reviews[0].Of.String() != unsureID {
		t.Fatalf("the review did not survive a restart: %+v", rs)
	}
	// The kiosk still shows it after the restart (the recent list is new).
	if err := chromedp.Do(ctx, chromedp.Navigate(r.p.url+"/?lang=sw"), chromedp.WaitVisible(chromedp.CSS("#reviewlist li"))); err != nil {
		t.Fatalf("kiosk reviews after a restart: %v", err)
	}
	if txt, _ := chromedp.Run(ctx, chromedp.Text(chromedp.ID("reviews"))); !strings.Contains(txt, "Majibu kutoka kwa mtaalamu wa kilimo") || !strings.Contains(txt, "Mosaic virus") {
		t.Fatalf("kiosk reviews after a restart: %q", txt)
	}

	// `outpost status` says what the device shares, in the user's language.
	addr := strings.TrimPrefix(r.p.url, "http://")
	if b, err := exec.Command(r.bin, "status", "--listen", addr, "--lang", "sw").CombinedOutput(); err != nil ||
		!strings.Contains(string(b), "Picha za majani: jibu na nakala ndogo (pikseli 512, bila mahali) ya kila picha au sauti vinatumwa.") ||
		!strings.Contains(string(b), "device kiosk-ev") {
		t.Fatalf("outpost status: %v\n%s", err, b)
	}

	b, err := exec.Command(r.bin, "status", "--listen", addr, "--bandwidth").CombinedOutput()
	today := time.Now().Format("2006-01-02")
	if err != nil || !strings.Contains(string(b), "DAY") || !strings.Contains(string(b), today) || !strings.Contains(string(b), "daily budget 20000000 bytes") {
		t.Fatalf("outpost status --bandwidth: %v\n%s", err, b)
	}
	t.Logf("outpost status --bandwidth:\n%s", b)
	// No daemon answering: said, and exit code 3 (issue 26: it exited 0).
	noDaemon := exec.Command(r.bin, "status", "--listen", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
	if b, err := noDaemon.CombinedOutput(); noDaemon.ProcessState.ExitCode() != 3 || !strings.Contains(string(b), "not reachable") {
		t.Fatalf("outpost status with no daemon: exit %d (%v)\n%s", noDaemon.ProcessState.ExitCode(), err, b)
	}

	// Reviews become training data the training script reads — exported
	// through the running hub (its socket; it holds the store), then again
	// from the stopped hub: the same files.
	sctx, stopSock := context.WithCancel(context.Background())
	sockDone := make(chan error, 1)
	go func() { sockDone <- hub.ServeLocal(sctx, r.hub.C, filepath.Join(hubDir, hub.SocketFile)) }()
	running := filepath.Join(t.TempDir(), "reviewed-running")
	testutil.Eventually(t, 10*time.Second, "collect export --reviewed through the running hub", func() bool {
		b, err := exec.Command(r.bin, "collect", "export", "--reviewed", "--out", running, "--data-dir", hubDir).CombinedOutput()
		return err == nil && strings.Contains(string(b), "exported 1 reviewed") && strings.Contains(string(b), "through the running collector")
	})
	stopSock()
	<-sockDone
	r.hub.Stop()
	out := filepath.Join(t.TempDir(), "reviewed")
	cmd := exec.Command(r.bin, "collect", "export", "--reviewed", "--out", out, "--data-dir", hubDir)
	if b, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(b), "exported 1 reviewed") {
		t.Fatalf("collect export --reviewed: %v\n%s", err, b)
	}
	if b, err := os.ReadFile(filepath.Join(out, "mosaic", "kiosk-ev_"+unsureID+".jpg")); err != nil || !bytes.Equal(b, unsure) {
		t.Fatalf("exported photo: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "reviews.csv")); !bytes.Contains(b, []byte("mosaic/kiosk-ev_"+unsureID+".jpg,kiosk-ev,"+unsureID+",mosaic,")) || !bytes.Contains(b, []byte(",uncertain,")) {
		t.Fatalf("reviews.csv:\n%s", b)
	}
	for _, f := range []string{"reviews.csv", filepath.Join("mosaic", "kiosk-ev_"+unsureID+".jpg")} {
		a, _ := os.ReadFile(filepath.Join(running, f))
		b, _ := os.ReadFile(filepath.Join(out, f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s through the running hub (%d bytes) differs from the stopped hub's (%d bytes)", f, len(a), len(b))
		}
	}
	py := exec.Command("/usr/bin/python3", filepath.Join(testutil.ModelsDir(t), "crop-disease", "train.py"), "--reviewed", out, "--list")
	if b, err := py.CombinedOutput(); err != nil || !strings.Contains(string(b), `reviewed: 1 photos {"mosaic": 1}`) {
		t.Fatalf("train.py --reviewed --list: %v\n%s", err, b)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}
