package daemon

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/tts"
)

// kioskSays is "outpost … repeat" in each language with a voice (the wake
// word spelled as the keyword model was taught it there).
var kioskSays = map[string][2]string{"en": {"outpost", "repeat"}, "fr": {"aoutpost", "répète"}, "sw": {"autpost", "rudia"}, "am": {"አውትፖስት", "ድገም"}}

// sayRate is the kiosk voice's rate for the prompts (0: default).
var sayRate = 0

// sayCommand is the kiosk's own voice saying the wake word, a pause, and
// the command: what a user repeating the kiosk's prompt says.
func sayCommand(t *testing.T, lang string) []byte {
	t.Helper()
	e := &tts.Espeak{}
	var parts [][]byte
	for _, w := range kioskSays[lang] {
		wav, err := e.Speak(context.Background(), w, lang, sayRate)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, wav)
	}
	one := pad(t, parts[0], 300*time.Millisecond, 700*time.Millisecond)
	two := pad(t, parts[1], 0, 300*time.Millisecond)
	body := append(append([]byte(nil), one[44:]...), two[44:]...)
	out := append([]byte(nil), one[:44]...)
	binary.LittleEndian.PutUint32(out[4:], uint32(36+len(body)))
	binary.LittleEndian.PutUint32(out[40:], uint32(len(body)))
	return append(out, body...)
}

// pad puts silence around a WAV's samples (so a microphone that starts a
// little late still hears all of it).
func pad(t *testing.T, wav []byte, before, after time.Duration) []byte {
	rate := int(binary.LittleEndian.Uint32(wav[24:]))
	data := wav[44:]
	pre, post := make([]byte, 2*int(before.Seconds()*float64(rate))), make([]byte, 2*int(after.Seconds()*float64(rate)))
	body := append(append(append([]byte(nil), pre...), data...), post...)
	out := append([]byte(nil), wav[:44]...)
	binary.LittleEndian.PutUint32(out[4:], uint32(36+len(body)))
	binary.LittleEndian.PutUint32(out[40:], uint32(len(body)))
	return append(out, body...)
}

// TestKiosk_KeywordsHearKioskVoice: the keyword model recognizes the
// kiosk's own synthesized prompts played back, in each language with a
// voice.
func TestKiosk_KeywordsHearKioskVoice(t *testing.T) {
	_, srv := newTestDaemon(t, nil)
	heard := 0
	var missed []string
	for lang := range kioskSays {
		code, body, _ := post(t, srv.URL+"/v1/models/kws/infer", "audio/wav", sayCommand(t, lang))
		res, _ := body["result"].(map[string]any)
		if code == 201 && res["command"] == "repeat" {
			heard++
		} else {
			missed = append(missed, fmt.Sprintf("%s: %v", lang, res))
		}
	}
	t.Logf("the kiosk's own \"outpost, repeat\" recognized in %d of %d languages %v", heard, len(kioskSays), missed)
	if heard < len(kioskSays)-1 {
		t.Fatalf("recognized in %d of %d languages: %v", heard, len(kioskSays), missed)
	}
}

// TestKiosk_VoiceRepeat: in headless Chromium with a fake microphone
// playing the kiosk's own "outpost, repeat", the kiosk shows the
// keyword it heard and plays the answer again (a second speech request
// for the same result); the first was played on its own after the
// diagnosis.
func TestKiosk_VoiceRepeat(t *testing.T) {
	d, srv := newTestDaemon(t, nil)
	mic := filepath.Join(t.TempDir(), "mic.wav")
	os.WriteFile(mic, pad(t, sayCommand(t, "en"), 0, 2*time.Second), 0o644)
	ctx := testutil.BrowserWith(t, 390, 1000, 90*time.Second,
		chromedp.Flag("use-fake-device-for-media-stream", true), chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-file-for-fake-audio-capture", mic), chromedp.Flag("autoplay-policy", "no-user-gesture-required"))
	photo := filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples", "rust.jpg")
	err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/?lang=en"), chromedp.WaitVisible(chromedp.ID("mic")),
		chromedp.SetUploadFiles(chromedp.ID("photo"), []string{photo}, chromedp.NodeReady),
		chromedp.WaitVisible(chromedp.CSS("#result .advice")),
		chromedp.WaitReady(chromedp.CSS(`body[data-spoken="1"]`)))
	if err != nil {
		t.Fatalf("diagnosis and its speech: %v", err)
	}
	if n := d.speech.requests.Load(); n != 1 {
		t.Fatalf("speech requests after the diagnosis: %d", n)
	}
	// Hold the button for 4 s while the fake microphone speaks.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("mic").dispatchEvent(new PointerEvent("pointerdown"))`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // the scenario: the button is held while the fake microphone speaks
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("mic").dispatchEvent(new PointerEvent("pointerup"))`)); err != nil {
		t.Fatal(err)
	}
	var heard string
	testutil.Eventually(t, 10*time.Second, "the kiosk to say what it heard", func() bool {
		heard, _ = chromedp.Run(ctx, chromedp.Text(chromedp.ID("heard")))
		return strings.Contains(heard, ":")
	})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = chromedp.Do(wctx, chromedp.WaitReady(chromedp.CSS(`body[data-spoken="2"]`)))
	if err != nil {
		resp, _ := http.Get(srv.URL + "/v1/results?limit=1")
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("voice command: %v (the kiosk heard %q; last result %s)", err, heard, b)
	}
	if !strings.Contains(heard, "Heard: repeat") || d.speech.requests.Load() != 2 || d.speech.hits.Load() != 1 {
		t.Fatalf("heard %q, speech requests %d (cache hits %d): want the answer again, from the cache", heard, d.speech.requests.Load(), d.speech.hits.Load())
	}
	// Hausa has no voice: the kiosk says so instead of staying silent.
	resp, err := http.Get(srv.URL + "/v1/speech?say=help&lang=ha")
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("Hausa speech: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
}
