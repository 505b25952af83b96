package models

import "testing"

// TestMeaningOf: the task table says what each kind of answer means —
// what the device sends first, what may be shared, what is said, what the
// hub counts (issue 30: these lived in four packages).
func TestMeaningOf(t *testing.T) {
	for _, c := range []struct {
		name string
		task Task
		out  any
		want Meaning
	}{
		{"confident blight", TaskImageClassification, &ClassResult{Outcome: OutcomeDiagnosis, Label: "blight", Score: 0.9},
			Meaning{Outcome: OutcomeDiagnosis, Label: "blight", Urgency: Urgent, AdviceKey: "blight"}},
		{"confident healthy", TaskImageClassification, &ClassResult{Outcome: OutcomeDiagnosis, Label: "healthy", Score: 0.9},
			Meaning{Outcome: OutcomeDiagnosis, Label: "healthy", AdviceKey: "healthy"}},
		{"uncertain", TaskImageClassification, &ClassResult{Outcome: OutcomeDiagnosis, Label: UncertainLabel, Uncertain: true},
			Meaning{Outcome: OutcomeDiagnosis, Uncertain: true, AdviceKey: UncertainLabel}},
		{"retake", TaskImageClassification, &ClassResult{Outcome: OutcomeRetake, Label: OutcomeRetake, Uncertain: true, Reason: ReasonTooDark},
			Meaning{Outcome: OutcomeRetake, Urgency: Bulk, AdviceKey: "retake_" + ReasonTooDark}},
		{"not a leaf", TaskImageClassification, &ClassResult{Outcome: OutcomeNotALeaf, Label: OutcomeNotALeaf, Uncertain: true},
			Meaning{Outcome: OutcomeNotALeaf, Urgency: Bulk, Uncertain: true, AdviceKey: OutcomeNotALeaf}},
		{"speech", TaskVAD, &VADResult{Segments: []Segment{{Start: 0, End: 1}}}, Meaning{Outcome: "speech"}},
		{"silence", TaskVAD, &VADResult{}, Meaning{Outcome: "silence"}},
		{"command", TaskKeywordSpotting, &KWSResult{Keywords: []Detection{{Keyword: "help"}}, Woke: true, Command: "help"}, Meaning{Outcome: "command"}},
		{"keywords", TaskKeywordSpotting, &KWSResult{Keywords: []Detection{{Keyword: "help"}}}, Meaning{Outcome: "keywords"}},
		{"unknown task", Task("insect_count"), map[string]int{"n": 3}, Meaning{Outcome: "result"}},
	} {
		if got := MeaningOf(c.task, c.out); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
	// The words the classifier writes are the key the table names: the
	// kiosk speaking another language looks up the same key.
	adv := AdviceFor(nil)
	if adv["retake_"+ReasonTooDark]["sw"] == "" || adv[OutcomeNotALeaf]["am"] == "" {
		t.Fatal("built-in advice lacks the retake / not-a-leaf words")
	}
}
