package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

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
		h2, err3 := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("section h2")))
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
