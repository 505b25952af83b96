package models

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/outpost-edge/outpost/runtime"
)

// TaskSpec is everything outpost knows about one task, in one place: what
// input it takes (HTTP content types, watch-folder extensions), how its
// pipeline is built, and how its result reads as text. The CLI, the HTTP
// API and the watch folder all consult this table; a new task is a new
// entry here plus its pipeline.
type TaskSpec struct {
	Task         Task
	ContentTypes []string // accepted media types; the first is the one to send
	Extensions   []string // file name extensions (lower case, with the dot)
	// NeedsSegmenter: the pipeline looks inside speech segments, so a VAD
	// model is opened with it (keyword spotting).
	NeedsSegmenter bool
	New            func(m *Model, sess runtime.Session, o PipelineOptions) (Pipeline, error)
	// Text writes the result as a few human lines (`infer --format text`).
	Text func(w io.Writer, r *Result)
	// Mean says what a result means past the model (MeaningOf): its
	// priority, whether it may be shared, the words to say, what the hub
	// counts.
	Mean func(output any) Meaning
}

var audioTypes = []string{"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"}

var taskTable = []TaskSpec{
	{
		Task:         TaskImageClassification,
		ContentTypes: []string{"image/jpeg", "image/png"},
		Extensions:   []string{".jpg", ".jpeg", ".png"},
		Mean:         classMeaning,
		New: func(m *Model, sess runtime.Session, o PipelineOptions) (Pipeline, error) {
			c, err := NewClassifier(m, sess)
			if err != nil {
				return nil, err
			}
			return &classPipeline{c: c, lang: o.Lang, decode: o.Decode}, nil
		},
		Text: func(w io.Writer, r *Result) {
			out := r.Output.(*ClassResult)
			verdict := fmt.Sprintf("%s (%.0f%%)", out.Label, out.Score*100)
			switch {
			case out.Outcome == OutcomeRetake:
				verdict = "retake the photo: " + strings.ReplaceAll(out.Reason, "_", " ")
			case out.Outcome == OutcomeNotALeaf:
				verdict = fmt.Sprintf("not a leaf this model knows (best guess %s at %.0f%%)", out.Top[0].Label, out.Top[0].Score*100)
			case out.Uncertain:
				verdict = fmt.Sprintf("uncertain: best guess %s at %.0f%%", out.Top[0].Label, out.Top[0].Score*100)
			}
			fmt.Fprintf(w, "%s: %s [%s %s, %.1f ms]\n", r.Input, verdict, r.Model, r.Version, r.Timings.Total)
			for _, s := range out.Top[min(1, len(out.Top)):] {
				fmt.Fprintf(w, "  also %s %.0f%%\n", s.Label, s.Score*100)
			}
			if out.Advice != "" {
				fmt.Fprintf(w, "  → %s\n", out.Advice)
			}
		},
	},
	{
		Task:         TaskVAD,
		ContentTypes: audioTypes,
		Extensions:   []string{".wav"},
		Mean:         vadMeaning,
		New: func(m *Model, sess runtime.Session, o PipelineOptions) (Pipeline, error) {
			v, err := NewVAD(sess, &m.Manifest, o.VAD)
			if err != nil {
				return nil, err
			}
			return &vadPipeline{m: m, v: v}, nil
		},
		Text: func(w io.Writer, r *Result) {
			out := r.Output.(*VADResult)
			fmt.Fprintf(w, "%s: %d speech segment(s) in %.2f s (%.0f%% speech) [%s %s, %.1f ms]\n",
				r.Input, len(out.Segments), out.Duration, out.SpeechRatio*100, r.Model, r.Version, r.Timings.Total)
			for _, s := range out.Segments {
				fmt.Fprintf(w, "  %7.3f – %7.3f s  p=%.2f\n", s.Start, s.End, s.Probability)
			}
		},
	},
	{
		Task:           TaskKeywordSpotting,
		ContentTypes:   audioTypes,
		Extensions:     []string{".wav"},
		NeedsSegmenter: true,
		Mean:           kwsMeaning,
		New: func(m *Model, sess runtime.Session, o PipelineOptions) (Pipeline, error) {
			k, err := NewKWS(m, sess, o.Segmenter, o.Embedding)
			if err != nil {
				return nil, err
			}
			return &kwsPipeline{k: k}, nil
		},
		Text: func(w io.Writer, r *Result) {
			out := r.Output.(*KWSResult)
			fmt.Fprintf(w, "%s: %d keyword(s) in %d speech segment(s), %.2f s [%s %s, %.1f ms]\n",
				r.Input, len(out.Keywords), out.Segments, out.Duration, r.Model, r.Version, r.Timings.Total)
			for _, k := range out.Keywords {
				fmt.Fprintf(w, "  %7.3f – %7.3f s  %s (%.0f%%)\n", k.Start, k.End, k.Keyword, k.Score*100)
			}
			if out.Command != "" {
				fmt.Fprintf(w, "  command: %s (after the wake word)\n", out.Command)
			}
		},
	},
}

// Spec returns the entry for a task.
func Spec(t Task) (*TaskSpec, bool) {
	for i := range taskTable {
		if taskTable[i].Task == t {
			return &taskTable[i], true
		}
	}
	return &TaskSpec{Task: t}, false
}

// Tasks lists the tasks this build knows.
func Tasks() []Task {
	out := make([]Task, len(taskTable))
	for i, s := range taskTable {
		out[i] = s.Task
	}
	return out
}

// Accepts reports whether the task takes this media type; the error says
// what it takes instead.
func (s *TaskSpec) Accepts(ctype string) error {
	if slices.Contains(s.ContentTypes, ctype) {
		return nil
	}
	return fmt.Errorf("%s models take %s, not %q", s.Task, strings.Join(s.ContentTypes, " or "), ctype)
}

// TakesFile reports whether the task reads files with this name.
func (s *TaskSpec) TakesFile(name string) bool {
	for _, e := range s.Extensions {
		if strings.HasSuffix(strings.ToLower(name), e) {
			return true
		}
	}
	return false
}

// WriteText writes r in the task's text form.
func WriteText(w io.Writer, r *Result) {
	if s, ok := Spec(r.Task); ok && s.Text != nil {
		s.Text(w, r)
		return
	}
	b, _ := json.Marshal(r.Output)
	fmt.Fprintf(w, "%s: %s [%s %s, %.1f ms]\n", r.Input, b, r.Model, r.Version, r.Timings.Total)
}
