package models

import "testing"

func TestClassifier_Answer(t *testing.T) {
	c := &Classifier{m: &Model{Manifest: Manifest{Labels: []string{"healthy", "rust", "blight"},
		Postprocessing: Postprocessing{TopK: 2, UncertainBelow: 0.6}}},
		advice: Advice{"rust": {"en": "remove leaves", "sw": "ondoa majani"}, "uncertain": {"en": "retake the photo"}}, abstain: -1}
	r := c.Answer(nil, []float32{0.1, 0.85, 0.05}, nil, "sw")
	if r.Outcome != OutcomeDiagnosis || r.Label != "rust" || r.Uncertain || len(r.Top) != 2 || r.Top[1].Label != "healthy" || r.Advice != "ondoa majani" || r.Lang != "sw" {
		t.Fatalf("confident: %+v", r)
	}
	r = c.Answer(nil, []float32{0.3, 0.45, 0.25}, nil, "am") // no Amharic text: English fallback
	if r.Outcome != OutcomeDiagnosis || r.Label != UncertainLabel || !r.Uncertain || r.Top[0].Label != "rust" || r.Advice != "retake the photo" || r.Lang != "en" {
		t.Fatalf("uncertain: %+v", r)
	}
}

func TestClassifier_Abstains(t *testing.T) {
	floor := float32(2)
	c := &Classifier{m: &Model{Manifest: Manifest{Labels: []string{"healthy", "blight", "not_a_leaf"},
		Postprocessing: Postprocessing{UncertainBelow: 0.6, AbstainLabel: "not_a_leaf", MinLogit: &floor}}},
		advice: Advice{"blight": {"en": "destroy plants"}}, abstain: 2}
	// The abstain label wins: not a leaf, with the built-in text in Hausa.
	r := c.Answer([]float32{1, 3, 5}, []float32{0.05, 0.15, 0.8}, nil, "ha")
	if r.Outcome != OutcomeNotALeaf || r.Label != OutcomeNotALeaf || !r.Uncertain || r.Lang != "ha" || r.Advice != builtinAdvice[OutcomeNotALeaf]["ha"] {
		t.Fatalf("abstain label: %+v", r)
	}
	// A confident-looking softmax over weak logits: under the floor.
	r = c.Answer([]float32{-1, 1.5, -3}, []float32{0.07, 0.92, 0.01}, nil, "en")
	if r.Outcome != OutcomeNotALeaf || r.Label == "blight" || !r.Uncertain {
		t.Fatalf("logit floor: %+v", r)
	}
	// Above the floor, the same probabilities are a diagnosis.
	r = c.Answer([]float32{0, 4, -2}, []float32{0.07, 0.92, 0.01}, nil, "en")
	if r.Outcome != OutcomeDiagnosis || r.Label != "blight" || r.Uncertain || r.Advice != "destroy plants" {
		t.Fatalf("diagnosis: %+v", r)
	}
	// A refusal needs the frame to be not green as well: with
	// abstain_max_green set, a green frame the model rejects is
	// "uncertain", a brown one is still not_a_leaf, and without what the
	// gate measured the model alone decides.
	green := float32(0.2)
	c.m.Postprocessing.AbstainMaxGreen = &green
	r = c.Answer([]float32{1, 3, 5}, []float32{0.05, 0.15, 0.8}, &Quality{Green: 0.35}, "en")
	if r.Outcome != OutcomeDiagnosis || r.Label != UncertainLabel || !r.Uncertain || r.Top[0].Label != "not_a_leaf" {
		t.Fatalf("green frame the model rejects: %+v", r)
	}
	r = c.Answer([]float32{-1, 1.5, -3}, []float32{0.07, 0.92, 0.01}, &Quality{Green: 0.5}, "en")
	if r.Label != UncertainLabel || !r.Uncertain || r.Outcome == OutcomeNotALeaf {
		t.Fatalf("green frame under the logit floor: %+v", r)
	}
	for _, q := range []*Quality{{Green: 0.19}, nil} {
		if r = c.Answer([]float32{1, 3, 5}, []float32{0.05, 0.15, 0.8}, q, "en"); r.Outcome != OutcomeNotALeaf {
			t.Fatalf("not green (%+v): %+v", q, r)
		}
	}
	// A retake names its reason and gives the built-in text.
	r = c.Retake(Quality{Brightness: 0.02}, ReasonTooDark, "fr")
	if r.Outcome != OutcomeRetake || r.Reason != ReasonTooDark || !r.Uncertain || r.Lang != "fr" || r.Advice == "" || r.Quality == nil {
		t.Fatalf("retake: %+v", r)
	}
}

func TestBuiltinAdvice_EveryLanguage(t *testing.T) {
	for key, byLang := range builtinAdvice {
		for _, l := range []string{"en", "fr", "sw", "ha", "am"} {
			if byLang[l] == "" {
				t.Errorf("%s has no %s text", key, l)
			}
		}
	}
	for _, r := range []string{ReasonTooDark, ReasonTooBright, ReasonLowContrast, ReasonNoPlant, ReasonBlurry} {
		if builtinAdvice["retake_"+r] == nil {
			t.Errorf("no text for retake reason %s", r)
		}
	}
}

func TestKWSResult_Command(t *testing.T) {
	d := func(k string, s, e float64) Detection { return Detection{Keyword: k, Start: s, End: e} }
	cases := []struct {
		name  string
		in    []Detection
		woke  bool
		cmd   string
		wake  string
		limit float64
	}{
		{"wake then command", []Detection{d("outpost", 0.5, 1.2), d("help", 1.6, 2.1)}, true, "help", "outpost", 4},
		{"command without wake", []Detection{d("help", 0.5, 1.0), d("yes", 3, 3.5)}, false, "", "outpost", 4},
		{"command before wake", []Detection{d("repeat", 0.2, 0.8), d("outpost", 1.0, 1.5)}, true, "", "outpost", 4},
		{"too late", []Detection{d("outpost", 0.5, 1.0), d("no", 6.0, 6.4)}, true, "", "outpost", 4},
		{"first after the last wake", []Detection{d("outpost", 0, 0.5), d("outpost", 9, 9.5), d("yes", 10, 10.4)}, true, "yes", "outpost", 4},
		{"no wake word configured", []Detection{d("help", 0.5, 1.0)}, false, "", "", 4},
	}
	for _, c := range cases {
		r := &KWSResult{Keywords: c.in}
		r.command(c.wake, c.limit)
		if r.Woke != c.woke || r.Command != c.cmd {
			t.Errorf("%s: woke %v command %q, want %v %q", c.name, r.Woke, r.Command, c.woke, c.cmd)
		}
	}
}

// TestClassifier_LogSumExpFloor: evidence spread over the real classes (a
// dried leaf, trained as "a leaf of unknown condition") clears the
// log-sum-exp floor that the best logit alone would fail: uncertain, not
// a refusal; the same floor still refuses weak evidence everywhere.
func TestClassifier_LogSumExpFloor(t *testing.T) {
	floor := float32(2)
	c := &Classifier{m: &Model{Manifest: Manifest{Labels: []string{"healthy", "rust", "blight", "not_a_leaf"},
		Postprocessing: Postprocessing{UncertainBelow: 0.6, AbstainLabel: "not_a_leaf", MinLogSumExp: &floor}}}, abstain: 3}
	spread := []float32{1.2, 1.2, 1.2, 0} // best 1.2, log-sum-exp 2.30
	if r := c.Answer(spread, Softmax(spread, 1), nil, "en"); r.Outcome != OutcomeDiagnosis || r.Label != UncertainLabel {
		t.Fatalf("spread evidence: %+v", r)
	}
	weak := []float32{0.5, 0.3, 0.2, 0} // log-sum-exp 1.44
	if r := c.Answer(weak, Softmax(weak, 1), nil, "en"); r.Outcome != OutcomeNotALeaf {
		t.Fatalf("weak evidence: %+v", r)
	}
	// The abstain label wins narrowly (0.45 < abstain_min_score 0.5) over
	// strong evidence for the others: uncertain, not a refusal.
	c.m.Postprocessing.AbstainMinScore = 0.5
	narrow := []float32{2, 2, 2, 2.9}
	if p := Softmax(narrow, 1); p[3] < 0.4 || p[3] > 0.5 {
		t.Fatalf("the test's abstain probability %.2f", p[3])
	}
	if r := c.Answer(narrow, Softmax(narrow, 1), nil, "en"); r.Outcome != OutcomeDiagnosis || r.Label != UncertainLabel {
		t.Fatalf("a narrow abstention: %+v", r)
	}
}
