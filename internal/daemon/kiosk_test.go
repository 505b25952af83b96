package daemon

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
)

// TestKiosk_Browser drives the embedded kiosk page in headless Chromium on
// a phone-sized screen, in each language: upload a leaf photo, wait for the
// diagnosis, check it is in that language, save a screenshot to
// artifacts/kiosk-<lang>.png.
func TestKiosk_Browser(t *testing.T) {
	_, srv := newTestDaemon(t, nil)
	photo := filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples", "rust.jpg")
	art := filepath.Join(testutil.Root(t), "artifacts")
	os.MkdirAll(art, 0o755)
	ctx := testutil.Browser(t, 390, 844, 90*time.Second)

	want := map[string]string{"en": "Rust", "fr": "Rouille", "sw": "Kutu", "ha": "Tsatsa", "am": "ዝገት"}
	heading := map[string]string{"en": "Check a leaf", "fr": "Examiner une feuille", "sw": "Kagua jani", "ha": "Duba ganye", "am": "ቅጠል ይመርምሩ"}
	for _, lang := range []string{"en", "fr", "sw", "ha", "am"} {
		err := chromedp.Do(ctx,
			chromedp.Navigate(srv.URL+"/?lang="+lang),
			chromedp.WaitVisible(chromedp.ID("mic")),
			chromedp.SetUploadFiles(chromedp.ID("photo"), []string{photo}, chromedp.NodeReady),
			chromedp.WaitVisible(chromedp.CSS("#result .advice")),
			chromedp.Sleep(300*time.Millisecond), // the recent list and sync line render for the screenshot
		)
		if err != nil {
			t.Fatalf("%s: %v", lang, err)
		}
		label, err1 := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#result .label")))
		advice, err2 := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#result .advice")))
		h2, err3 := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main > section:not([hidden]) h2")))
		png, err4 := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		for _, err := range []error{err1, err2, err3, err4} {
			if err != nil {
				t.Fatalf("%s: %v", lang, err)
			}
		}
		if strings.TrimSpace(label) != want[lang] || strings.TrimSpace(h2) != heading[lang] || advice == "" {
			t.Errorf("%s: label %q heading %q advice %q; want %q / %q", lang, label, h2, advice, want[lang], heading[lang])
		}
		if err := os.WriteFile(filepath.Join(art, "kiosk-"+lang+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKiosk_USBExport: with a stick in, the kiosk's one button saves what
// is waiting as a bundle; after the hub has imported it, the same button
// applies the receipt on the stick and the device deletes exactly those
// results.
func TestKiosk_USBExport(t *testing.T) {
	usb := t.TempDir()
	d, srv := newTestDaemon(t, func(c *Config) { c.USBDir = usb })
	// An empty folder on the device's own disk is not a stick (issue 27:
	// bundles were written there and never left the device).
	if d.usbPresent() {
		t.Fatal("a plain folder on the data dir's filesystem was taken for a stick")
	}
	// A real stick: another filesystem mounted there (tests run as root).
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", usb).CombinedOutput(); err != nil {
		t.Fatalf("mount a stick: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", usb).Run() })
	photo := sample(t, "crop-disease/samples/rust.jpg")
	for i := 0; i < 2; i++ {
		if code, body, _ := post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", photo); code != 201 {
			t.Fatalf("infer: %d %v", code, body)
		}
	}
	ctx := testutil.Browser(t, 390, 1200, 60*time.Second)
	click := func(want string) string {
		t.Helper()
		err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/?lang=en"), chromedp.WaitVisible(chromedp.ID("usbexport")),
			chromedp.Click(chromedp.ID("usbexport")), chromedp.WaitReady(chromedp.CSS(`#usbmsg:not(:empty)`)))
		if err != nil {
			t.Fatal(err)
		}
		var msg string
		testutil.Eventually(t, 5*time.Second, "the USB message "+want, func() bool {
			msg, _ = chromedp.Run(ctx, chromedp.Text(chromedp.ID("usbmsg")))
			return strings.Contains(msg, want)
		})
		return msg
	}
	click("Saved to the stick: 2 results.")
	bundles, _ := filepath.Glob(filepath.Join(usb, "*.obundle"))
	if len(bundles) != 1 {
		t.Fatalf("bundles on the stick: %v", bundles)
	}
	st, err := hub.OpenBolt(filepath.Join(t.TempDir(), "collector.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, _, c, err := hub.ImportBundle(context.Background(), st, bundles[0], nil, nil, time.Now()); err != nil || c.New != 2 {
		t.Fatalf("import: %+v %v", c, err)
	}
	click("Confirmed by the hub and removed here: 2.")
	if s, _ := d.Device().Outbox().Stats(); s.Count != 0 {
		t.Fatalf("queue after the receipt: %d", s.Count)
	}
	if left, _ := filepath.Glob(filepath.Join(usb, "*.receipt")); len(left) != 0 {
		t.Fatalf("applied receipts left on the stick: %v", left)
	}
}

// TestKiosk_CameraGuidance (issue 32): with a camera (Chromium's fake one
// playing a file), the kiosk guides the photo live — a dark frame is told
// "too dark" in the user's language before any photo is taken, a leaf
// "looks good" — and the photo taken from the stream is diagnosed.
func TestKiosk_CameraGuidance(t *testing.T) {
	d, srv := newTestDaemon(t, nil)
	dir := t.TempDir()
	dark := image.NewRGBA(image.Rect(0, 0, 320, 240))
	var darkJPEG bytes.Buffer
	jpeg.Encode(&darkJPEG, dark, nil)
	for _, c := range []struct {
		name   string
		frame  []byte
		lang   string
		reason string
		words  string
	}{
		{"dark", darkJPEG.Bytes(), "sw", "too_dark", "nyeusi"},
		{"leaf", sample(t, "crop-disease/samples/rust.jpg"), "en", "ok", "Looks good"},
	} {
		cam := filepath.Join(dir, c.name+".mjpeg") // one frame, played in a loop
		os.WriteFile(cam, c.frame, 0o644)
		ctx := testutil.BrowserWith(t, 390, 1000, 60*time.Second,
			chromedp.Flag("use-fake-device-for-media-stream", true), chromedp.Flag("use-fake-ui-for-media-stream", true),
			chromedp.Flag("use-file-for-fake-video-capture", cam))
		err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/?lang="+c.lang), chromedp.WaitVisible(chromedp.ID("camopen")),
			chromedp.Click(chromedp.ID("camopen")), chromedp.WaitReady(chromedp.CSS(`#guide[data-reason="`+c.reason+`"]`)))
		if err != nil {
			text, _ := chromedp.Run(ctx, chromedp.Text(chromedp.ID("guide")))
			t.Fatalf("%s frame: %v (guide says %q)", c.name, err, text)
		}
		text, _ := chromedp.Run(ctx, chromedp.Text(chromedp.ID("guide")))
		if !strings.Contains(text, c.words) {
			t.Fatalf("%s frame guided with %q, want %q", c.name, text, c.words)
		}
		if n := queueCount(t, d); n != 0 {
			t.Fatalf("guidance stored %d results", n)
		}
		// The capture button is lit only when the frame passes.
		if disabled, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("capture").disabled`)); disabled != (c.reason != "ok") {
			t.Fatalf("%s frame: capture disabled %v", c.name, disabled)
		}
		if c.name == "leaf" {
			if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("capture")), chromedp.WaitVisible(chromedp.CSS("#result .advice"))); err != nil {
				t.Fatalf("the photo taken from the stream: %v", err)
			}
			if n := queueCount(t, d); n != 1 {
				t.Fatalf("after the capture the queue holds %d, want 1", n)
			}
		}
	}
}

// TestKiosk_EveryWordInEveryLanguage (issue 32: the kiosk's last English):
// every sentence the page has in English it has in French, Swahili, Hausa
// and Amharic, labels and spoken words included.
func TestKiosk_EveryWordInEveryLanguage(t *testing.T) {
	_, srv := newTestDaemon(t, nil)
	ctx := testutil.Browser(t, 390, 800, 30*time.Second)
	var missing []string
	err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/?lang=en"), chromedp.WaitVisible(chromedp.ID("lang")))
	if err == nil {
		missing, err = chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => {
			const out = [];
			const walk = (en, other, path) => { for (const k of Object.keys(en)) {
				if (!(k in other)) out.push(path + k); else if (typeof en[k] === "object") walk(en[k], other[k], path + k + "."); } };
			for (const l of Object.keys(T)) if (l !== "en") walk(T.en, T[l], l + ": ");
			return out; })()`))
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("the kiosk falls back to English for: %v", missing)
	}
}
