package models

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/outpost-edge/outpost/internal/safefile"
)

// Variants groups the models a device may choose between: for each folder
// with a manifest.json, its model first, then the manifest-*.json models
// beside it that declare themselves its variant_of and do the same task
// with the same labels (an INT8 model and its FP32 twin). Only folders
// with a choice are listed, by the first model's name.
func Variants(r *Registry) map[string][]*Model {
	byDir := map[string][]*Model{}
	for _, m := range r.Models() {
		byDir[m.Dir] = append(byDir[m.Dir], m)
	}
	out := map[string][]*Model{}
	for _, ms := range byDir {
		i := slices.IndexFunc(ms, func(m *Model) bool { return !m.Variant })
		if i < 0 {
			continue
		}
		group := []*Model{ms[i]}
		for _, v := range ms {
			if v.Variant && v.VariantOf == ms[i].Name && v.Task == ms[i].Task && slices.Equal(v.Labels, ms[i].Labels) {
				group = append(group, v)
			}
		}
		if len(group) > 1 {
			out[ms[i].Name] = group
		}
	}
	return out
}

// SampleInputs are the files a variant benchmark runs: the model folder's
// samples/ (else eval/) files its task takes, at most max, by name.
func SampleInputs(m *Model, max int) [][]byte {
	spec, _ := Spec(m.Task)
	for _, sub := range []string{"samples", "eval"} {
		ents, err := os.ReadDir(filepath.Join(m.Dir, sub))
		if err != nil {
			continue
		}
		var names []string
		for _, e := range ents {
			if !e.IsDir() && spec.TakesFile(e.Name()) {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		var out [][]byte
		for _, n := range names[:min(len(names), max)] {
			// Bounded: a folder can arrive in a model package.
			if b, err := safefile.ReadFile(filepath.Join(m.Dir, sub, n), maxSample); err == nil {
				out = append(out, b)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// maxSample bounds one sample input (a phone photo, a few seconds of audio).
const maxSample = 32 << 20

// AgreeKey is what two variants must both answer for an input to count as
// the same answer: the outcome and the best label of a photo, the
// keywords and command of a recording, the number of speech segments.
func AgreeKey(r *Result) string {
	switch o := r.Output.(type) {
	case *ClassResult:
		top := ""
		if len(o.Top) > 0 {
			top = o.Top[0].Label
		}
		return o.Outcome + "/" + top
	case *KWSResult:
		var ks []string
		for _, k := range o.Keywords {
			ks = append(ks, k.Keyword)
		}
		return strings.Join(ks, ",") + "/" + o.Command
	case *VADResult:
		return strings.Repeat("s", len(o.Segments))
	}
	return MeaningOf(r.Task, r.Output).Outcome
}
