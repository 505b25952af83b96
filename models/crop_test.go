package models_test

import (
	"context"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

var update = flag.Bool("update", false, "rewrite models/crop-disease/metrics.json from this run")

// cropMetrics is what the model card states, measured by this test with
// -update, through the Go pipeline and ONNX Runtime.
type cropMetrics struct {
	EvalImages int                `json:"eval_images"`
	Accuracy   map[string]float64 `json:"accuracy"`  // model name -> top-1 accuracy on eval/
	Agreement  float64            `json:"agreement"` // INT8 and FP32 top-1 agree on this share
	PerClass   map[string]float64 `json:"per_class_int8"`
	Golden     []golden           `json:"golden"` // INT8 answers on a few fixed inputs
}

type golden struct {
	File  string  `json:"file"`
	Label string  `json:"label"`
	Score float32 `json:"score"`
}

func cropPipeline(t testing.TB, name string) models.Pipeline {
	t.Helper()
	reg, err := models.LoadDir(testutil.ModelsDir(t))
	if err != nil {
		t.Fatal(err)
	}
	m, err := reg.Get(name)
	if err != nil {
		t.Fatalf("%v; problems: %v", err, reg.Problems())
	}
	sess, err := m.Open(testutil.ORT(t).Loader(onnx.SessionOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	p, err := models.NewPipeline(m, sess, models.PipelineOptions{Lang: "sw"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func evalFiles(t testing.TB) []string {
	files, _ := filepath.Glob(filepath.Join(testutil.ModelsDir(t), "crop-disease", "eval", "*.png"))
	sort.Strings(files)
	if len(files) < 50 {
		t.Fatalf("evaluation set has %d images", len(files))
	}
	return files
}

// truth is the label in the file name: 007_leaf_spot.png -> leaf_spot.
func truth(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), ".png")
	return base[strings.Index(base, "_")+1:]
}

func TestCropDisease_AccuracyAndAgreement(t *testing.T) {
	files := evalFiles(t)
	got := cropMetrics{EvalImages: len(files), Accuracy: map[string]float64{}, PerClass: map[string]float64{}}
	answers := map[string][]*models.ClassResult{}
	for _, name := range []string{"crop-disease", "crop-disease-fp32"} {
		p := cropPipeline(t, name)
		correct := 0
		for _, f := range files {
			b, _ := os.ReadFile(f)
			res, err := p.Infer(context.Background(), models.Input{Name: f, Data: b})
			if err != nil {
				t.Fatal(err)
			}
			out := res.Output.(*models.ClassResult)
			answers[name] = append(answers[name], out)
			if out.Top[0].Label == truth(f) {
				correct++
			}
		}
		got.Accuracy[name] = round3(float64(correct) / float64(len(files)))
	}
	agree := 0
	perTotal, perOK := map[string]int{}, map[string]int{}
	for i, f := range files {
		if answers["crop-disease"][i].Top[0].Label == answers["crop-disease-fp32"][i].Top[0].Label {
			agree++
		}
		perTotal[truth(f)]++
		if answers["crop-disease"][i].Top[0].Label == truth(f) {
			perOK[truth(f)]++
		}
		if i%21 == 0 { // 0, 21, 42, 63, 84: one of each label
			a := answers["crop-disease"][i]
			got.Golden = append(got.Golden, golden{File: filepath.Base(f), Label: a.Top[0].Label, Score: a.Top[0].Score})
		}
	}
	for c, n := range perTotal {
		got.PerClass[c] = round3(float64(perOK[c]) / float64(n))
	}
	got.Agreement = round3(float64(agree) / float64(len(files)))
	t.Logf("accuracy %v, INT8/FP32 agreement %.3f, per class %v", got.Accuracy, got.Agreement, got.PerClass)

	path := filepath.Join(testutil.ModelsDir(t), "crop-disease", "metrics.json")
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run: go test ./models -run CropDisease -update)", err)
	}
	var card cropMetrics
	if err := json.Unmarshal(b, &card); err != nil {
		t.Fatal(err)
	}
	checkCard(t, got.Accuracy, card.Accuracy, got.Golden, card.Golden)
	if got.Agreement < 0.95 {
		t.Errorf("INT8 and FP32 agree on only %.1f%% of inputs", got.Agreement*100)
	}
	// Advice comes in the requested language (Swahili here).
	if a := answers["crop-disease"][1]; a.Lang != "sw" || a.Advice == "" {
		t.Errorf("advice %q in %q, want Swahili", a.Advice, a.Lang)
	}
}

// checkCard compares this run with a model's metrics.json: accuracy within
// one point per model, golden answers with the same label and a score
// within 0.02.
func checkCard(t *testing.T, acc, cardAcc map[string]float64, gold, cardGold []golden) {
	t.Helper()
	for name, want := range cardAcc {
		if math.Abs(acc[name]-want) > 0.01 {
			t.Errorf("%s accuracy %.3f, model card says %.3f (±0.01)", name, acc[name], want)
		}
	}
	if len(gold) < len(cardGold) {
		t.Fatalf("%d golden answers, model card has %d", len(gold), len(cardGold))
	}
	for i, g := range cardGold {
		a := gold[i]
		if a.File != g.File || a.Label != g.Label || math.Abs(float64(a.Score-g.Score)) > 0.02 {
			t.Errorf("golden %s: got %s %.4f, want %s %.4f", g.File, a.Label, a.Score, g.Label, g.Score)
		}
	}
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// TestCropDisease_Samples: the bundled 480x480 JPEG samples are diagnosed
// correctly after centre-crop and resize; broken files are clear errors.
func TestCropDisease_Samples(t *testing.T) {
	p := cropPipeline(t, "crop-disease")
	samples, _ := filepath.Glob(filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples", "*.jpg"))
	if len(samples) != 5 {
		t.Fatalf("samples: %v", samples)
	}
	for _, f := range samples {
		b, _ := os.ReadFile(f)
		res, err := p.Infer(context.Background(), models.Input{Name: f, Data: b})
		if err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(filepath.Base(f), ".jpg")
		if out := res.Output.(*models.ClassResult); out.Top[0].Label != want {
			t.Errorf("%s: got %+v", filepath.Base(f), out.Top)
		}
	}
	for _, bad := range []string{"empty", "garbage"} {
		var b []byte
		if bad == "garbage" {
			b = []byte("\xff\xd8\xff\xe0 this is not really a JPEG")
		}
		if _, err := p.Infer(context.Background(), models.Input{Name: bad, Data: b}); err == nil || !strings.Contains(err.Error(), "bad input") {
			t.Errorf("%s: err = %v", bad, err)
		}
	}
}
