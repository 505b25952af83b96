package models_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

// kwsPipeline opens a keyword model with the Silero VAD as its segmenter,
// as `outpost infer` does.
func kwsPipeline(t testing.TB, name string) models.Pipeline {
	t.Helper()
	reg, err := models.LoadDir(testutil.ModelsDir(t))
	if err != nil {
		t.Fatal(err)
	}
	load := testutil.ORT(t).Loader(onnx.SessionOptions{})
	m, err := reg.Get(name)
	if err != nil {
		t.Fatalf("%v; problems %v", err, reg.Problems())
	}
	sess, err := m.Open(load)
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := reg.Get("silero-vad")
	vs, err := vm.Open(load)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close(); vs.Close() })
	vad, err := models.NewVAD(vs, &vm.Manifest, models.VADOptions{MinSpeech: models.Duration(100 * time.Millisecond), SpeechPad: models.Duration(50 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	var emb *models.SpeechEmbedding
	if m.Preprocessing.Features == models.FeaturesEmbedding {
		if emb, err = models.OpenSpeechEmbedding(filepath.Join(testutil.ModelsDir(t), models.EmbeddingDir), load); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { emb.Close() })
	}
	p, err := models.NewPipeline(m, sess, models.PipelineOptions{Segmenter: vad, Embedding: emb})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// firstKeyword runs p on a WAV file and returns the first keyword it
// heard ("unknown" for none), with its score, and the whole answer.
func firstKeyword(t testing.TB, p models.Pipeline, path string) (string, float32, *models.KWSResult) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Infer(context.Background(), models.Input{Name: path, Data: b})
	if err != nil {
		t.Fatal(err)
	}
	out := res.Output.(*models.KWSResult)
	if len(out.Keywords) == 0 {
		return "unknown", 0, out
	}
	return out.Keywords[0].Keyword, out.Keywords[0].Score, out
}

type kwsMetrics struct {
	EvalClips  int                `json:"eval_clips"`
	Accuracy   map[string]float64 `json:"accuracy"`
	PerLang    map[string]float64 `json:"per_language_int8"`
	FalseAlarm float64            `json:"false_alarm_int8"` // unknown words reported as a keyword
	Agreement  float64            `json:"agreement"`
	Golden     []golden           `json:"golden"`
}

// clipTruth: 012_sw_yes.wav -> ("sw", "yes"); "unknown" means no keyword.
func clipTruth(path string) (lang, word string) {
	parts := strings.Split(strings.TrimSuffix(filepath.Base(path), ".wav"), "_")
	return parts[1], parts[2]
}

func TestKWS_HeldOutVoices(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(testutil.ModelsDir(t), "kws", "eval", "*.wav"))
	sort.Strings(files)
	if len(files) < 40 {
		t.Fatalf("evaluation set has %d clips", len(files))
	}
	got := kwsMetrics{EvalClips: len(files), Accuracy: map[string]float64{}, PerLang: map[string]float64{}}
	heard := map[string][]string{}
	for _, name := range []string{"kws-dscnn", "kws-fp32"} {
		p := kwsPipeline(t, name)
		correct := 0
		langOK, langN := map[string]int{}, map[string]int{}
		falseAlarm, unknowns := 0, 0
		for i, f := range files {
			word, score, _ := firstKeyword(t, p, f)
			heard[name] = append(heard[name], word)
			lang, want := clipTruth(f)
			langN[lang]++
			if want == "unknown" {
				unknowns++
				if word != "unknown" {
					falseAlarm++
				}
			}
			if word == want {
				correct++
				langOK[lang]++
			}
			if name == "kws-dscnn" && i%10 == 0 {
				got.Golden = append(got.Golden, golden{File: filepath.Base(f), Label: word, Score: score})
			}
		}
		got.Accuracy[name] = round3(float64(correct) / float64(len(files)))
		if name == "kws-dscnn" {
			for l, n := range langN {
				got.PerLang[l] = round3(float64(langOK[l]) / float64(n))
			}
			got.FalseAlarm = round3(float64(falseAlarm) / float64(max(unknowns, 1)))
		}
	}
	agree := 0
	for i := range files {
		if heard["kws-dscnn"][i] == heard["kws-fp32"][i] {
			agree++
		}
	}
	got.Agreement = round3(float64(agree) / float64(len(files)))
	t.Logf("accuracy %v, per language %v, false alarms %.3f, INT8/FP32 agreement %.3f", got.Accuracy, got.PerLang, got.FalseAlarm, got.Agreement)

	path := filepath.Join(testutil.ModelsDir(t), "kws", "metrics.json")
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		os.WriteFile(path, append(b, '\n'), 0o644)
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run: go test ./models -run KWS -update)", err)
	}
	var card kwsMetrics
	json.Unmarshal(b, &card)
	checkCard(t, got.Accuracy, card.Accuracy, got.Golden, card.Golden)
}

// TestKWS_TwoCommands: the wake word and a command, twice, with pauses,
// in a voice the model never heard, at 22.05 kHz: four segments, four
// detections, in order, not overlapping. (A command without the wake word
// before it need not be heard at all: the head's own threshold is set for
// at most one false alarm an hour on real speech.)
func TestKWS_TwoCommands(t *testing.T) {
	p := kwsPipeline(t, "kws")
	res, err := p.Infer(context.Background(), models.Input{Name: "two.wav", Data: spokenWords(t, "en-us+m6", "outpost", "help", "outpost", "repeat")})
	if err != nil {
		t.Fatal(err)
	}
	out := res.Output.(*models.KWSResult)
	var words []string
	for i, k := range out.Keywords {
		words = append(words, k.Keyword)
		if i > 0 && out.Keywords[i-1].End > k.Start {
			t.Fatalf("detections overlap: %+v", out.Keywords)
		}
	}
	if strings.Join(words, ",") != "outpost,help,outpost,repeat" || out.Command != "help" {
		t.Fatalf("heard %+v in %d segments (command %q)", out.Keywords, out.Segments, out.Command)
	}
}
