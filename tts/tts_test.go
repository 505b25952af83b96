package tts

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models"
)

// TestEspeak_EveryAdvice: every advice string of the crop model and the
// built-in retake advice, in every kiosk language that has a voice, is
// spoken without error and for a plausible time (0.3× to 3× its words at
// the speaking rate); Hausa has no voice and says so.
func TestEspeak_EveryAdvice(t *testing.T) {
	var advice models.Advice
	b, err := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", "advice.json"))
	if err != nil || json.Unmarshal(b, &advice) != nil {
		t.Fatalf("advice.json: %v", err)
	}
	for k, v := range models.BuiltinAdvice() {
		advice[k] = v
	}
	e := &Espeak{}
	ctx := context.Background()
	spoken := map[string]int{}
	var total time.Duration
	for label, byLang := range advice {
		for lang, text := range byLang {
			wav, err := e.Speak(ctx, text, lang, 140)
			if lang == "ha" {
				if !errors.Is(err, ErrNoVoice) {
					t.Fatalf("Hausa: %v (espeak-ng gained a voice? then speak it)", err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s/%s: %v", label, lang, err)
			}
			d, err := Duration(wav)
			words := float64(len(strings.Fields(text)))
			want := time.Duration(words / 140 * 60 * float64(time.Second))
			if err != nil || d < want*3/10 || d > want*3 {
				t.Errorf("%s/%s: %v for %.0f words (about %v expected): %v", label, lang, d, words, want, err)
			}
			spoken[lang]++
			total += d
		}
	}
	if spoken["en"] < 10 || spoken["sw"] != spoken["en"] || spoken["am"] != spoken["en"] || spoken["fr"] != spoken["en"] {
		t.Fatalf("spoken per language: %v", spoken)
	}
	t.Logf("spoken: %v strings per language, %v of speech in all", spoken, total.Round(time.Second))
}

// TestCache: the second request for the same text is a file read; the
// cache stays under its cap, dropping the least recently used.
func TestCache(t *testing.T) {
	c := &Cache{Dir: t.TempDir(), MaxBytes: 300 << 10, Synth: &Espeak{}}
	ctx := context.Background()
	a, hit, err := c.Speak(ctx, "Rust: remove the infected leaves early.", "en", 0)
	if err != nil || hit {
		t.Fatalf("first: hit %v, %v", hit, err)
	}
	b, hit, err := c.Speak(ctx, "Rust: remove the infected leaves early.", "en", 0)
	if err != nil || !hit || string(a) != string(b) {
		t.Fatalf("second: hit %v, %v", hit, err)
	}
	for i := 0; i < 8; i++ {
		if _, _, err := c.Speak(ctx, strings.Repeat("Take the photo again in daylight. ", i+1), "en", 0); err != nil {
			t.Fatal(err)
		}
	}
	var size int64
	ents, _ := os.ReadDir(c.Dir)
	for _, e := range ents {
		fi, _ := e.Info()
		size += fi.Size()
	}
	if size > 300<<10 {
		t.Fatalf("cache holds %d bytes over a %d cap", size, 300<<10)
	}
}

// BenchmarkSpeak: time to the first audio of an answer, cold (espeak-ng)
// and cached (a file read), with the ratio.
func BenchmarkSpeak(b *testing.B) {
	text := "Kutu: vijipele vya rangi ya machungwa vinavyoenezwa na upepo. Ondoa majani yaliyoathirika mapema."
	c := &Cache{Dir: b.TempDir(), Synth: &Espeak{}}
	ctx := context.Background()
	var cold, warm time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, _, err := c.Speak(ctx, text+strings.Repeat(" ", i%50), "sw", 0); err != nil { // a new text: cold
			b.Fatal(err)
		}
		cold += time.Since(t0)
		t0 = time.Now()
		if _, hit, _ := c.Speak(ctx, text+strings.Repeat(" ", i%50), "sw", 0); !hit {
			b.Fatal("not cached")
		}
		warm += time.Since(t0)
	}
	b.ReportMetric(float64(cold.Microseconds())/float64(b.N)/1000, "cold-ms")
	b.ReportMetric(float64(warm.Microseconds())/float64(b.N)/1000, "cached-ms")
	b.ReportMetric(float64(cold)/float64(warm), "cold/cached")
}
