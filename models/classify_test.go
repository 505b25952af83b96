package models

import "testing"

func TestClassifier_Answer(t *testing.T) {
	c := &Classifier{m: &Model{Manifest: Manifest{Labels: []string{"healthy", "rust", "blight"},
		Postprocessing: Postprocessing{TopK: 2, UncertainBelow: 0.6}}},
		advice: Advice{"rust": {"en": "remove leaves", "sw": "ondoa majani"}, "uncertain": {"en": "retake the photo"}}}
	r := c.Answer([]float32{0.1, 0.85, 0.05}, "sw")
	if r.Label != "rust" || r.Uncertain || len(r.Top) != 2 || r.Top[1].Label != "healthy" || r.Advice != "ondoa majani" || r.Lang != "sw" {
		t.Fatalf("confident: %+v", r)
	}
	r = c.Answer([]float32{0.3, 0.45, 0.25}, "am") // no Amharic text: English fallback
	if r.Label != UncertainLabel || !r.Uncertain || r.Top[0].Label != "rust" || r.Advice != "retake the photo" || r.Lang != "en" {
		t.Fatalf("uncertain: %+v", r)
	}
}
