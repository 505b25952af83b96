package models

import (
	"os"
	"path/filepath"
	gosync "sync"
	"time"
)

// Urgency is how soon a result should travel; the device maps it to its
// outbox priority (models knows nothing of the queue).
type Urgency int

const (
	Routine Urgency = iota // in turn
	Urgent                 // first, and may spend the day's budget (a blight: it spreads in days)
	Bulk                   // after every answer (worth counting at the hub, not waiting for)
)

// Meaning is what one result means to everyone past the model — the
// device (priority, sharing), the kiosk (what it says) and the hub (what
// it counts) — decided here once, by the task table, and nowhere else.
type Meaning struct {
	// Outcome is what happened: "diagnosis", "retake", "not_a_leaf",
	// "speech", "silence", "keywords", "command", "nothing".
	Outcome string
	// Label is the label the hub counts: a confident diagnosis (healthy
	// included), "" for anything else (an uncertain answer, a retake).
	Label string
	// Uncertain: the model was not sure of an input it could judge; its
	// evidence may leave under the "uncertain" sharing policy (a retake is
	// not: the photo itself was the problem).
	Uncertain bool
	Urgency   Urgency
	// AdviceKey is the advice.json key of the words to show and speak (""
	// when the task says nothing aloud).
	AdviceKey string
}

// UrgentLabels are the diagnoses that travel first.
var UrgentLabels = []string{"blight"}

// MeaningOf is what a result of task means; a task without an entry in
// the table means nothing beyond its JSON (Outcome "result").
func MeaningOf(task Task, output any) Meaning {
	if s, ok := Spec(task); ok && s.Mean != nil {
		return s.Mean(output)
	}
	return Meaning{Outcome: "result"}
}

// classMeaning is the image classifier's entry.
func classMeaning(out any) Meaning {
	r, ok := out.(*ClassResult)
	if !ok {
		return Meaning{Outcome: "result"}
	}
	m := Meaning{Outcome: r.Outcome}
	if m.Outcome == "" {
		m.Outcome = OutcomeDiagnosis
	}
	switch {
	case r.Outcome == OutcomeRetake:
		m.Urgency, m.AdviceKey = Bulk, "retake_"+r.Reason
	case r.Outcome == OutcomeNotALeaf:
		// Shared when uncertain: the model abstained, an expert may see a leaf.
		m.Urgency, m.AdviceKey, m.Uncertain = Bulk, OutcomeNotALeaf, true
	case r.Uncertain:
		m.Uncertain, m.AdviceKey = true, UncertainLabel
	default:
		m.Label, m.AdviceKey = r.Label, r.Label
		for _, u := range UrgentLabels {
			if r.Label == u {
				m.Urgency = Urgent
			}
		}
	}
	return m
}

func vadMeaning(out any) Meaning {
	if r, ok := out.(*VADResult); ok && len(r.Segments) > 0 {
		return Meaning{Outcome: "speech"}
	}
	return Meaning{Outcome: "silence"}
}

func kwsMeaning(out any) Meaning {
	r, ok := out.(*KWSResult)
	switch {
	case !ok || len(r.Keywords) == 0:
		return Meaning{Outcome: "nothing"}
	case r.Command != "":
		return Meaning{Outcome: "command"} // a kiosk command is not a diagnosis to count
	}
	return Meaning{Outcome: "keywords"}
}

// AdviceFor is the advice a model answers and speaks with: the built-in
// retake and abstention words under the model's advice.json. Read once per
// file version, not on every request (the kiosk re-read it each time).
func AdviceFor(m *Model) Advice {
	out := BuiltinAdvice()
	if m == nil || m.Manifest.Advice == "" {
		return out
	}
	path := filepath.Join(m.Dir, m.Manifest.Advice)
	st, err := os.Stat(path)
	if err != nil {
		return out
	}
	key := adviceKey{path, st.ModTime(), st.Size()}
	a, ok := adviceCache.Load(key)
	if !ok {
		loaded, err := LoadAdvice(m)
		if err != nil {
			return out
		}
		a, _ = adviceCache.LoadOrStore(key, loaded)
	}
	for k, v := range a.(Advice) {
		out[k] = v
	}
	return out
}

type adviceKey struct {
	path string
	mod  time.Time
	size int64
}

var adviceCache gosync.Map // adviceKey -> Advice
