package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

// variantProfile is one variant's kernel time under ONNX Runtime's
// profiler, per input run.
type variantProfile struct {
	Model   string        `json:"model"`
	Variant string        `json:"variant"`
	Runs    int           `json:"runs"`
	Kernels time.Duration `json:"kernels_ns_per_run"`
	Ops     []onnx.OpTime `json:"ops"` // totals over all runs, slowest first
	Error   string        `json:"error,omitempty"`
}

// profileVariants is `models verify --bench --profile`: each variant of each
// model runs its sample inputs under ONNX Runtime's profiler on this device,
// and the time in kernels is printed operator by operator — why one
// variant is faster here (a Pi 4 without dot-product instructions, an x86
// with VNNI) rather than only that it is.
func profileVariants(ctx context.Context, std IO, rf runtimeFlags, runs int, asJSON bool) error {
	reg, err := rf.registry()
	if err != nil {
		return err
	}
	env, err := rf.env()
	if err != nil {
		return err
	}
	defer env.Close()
	tmp, err := os.MkdirTemp("", "outpost-profile-")
	if err != nil {
		return fmt.Errorf("models verify --profile: %w", err)
	}
	defer os.RemoveAll(tmp)
	groups := models.Variants(reg)
	var out []variantProfile
	for _, name := range slices.Sorted(maps.Keys(groups)) {
		inputs := models.SampleInputs(groups[name][0], 6)
		if len(inputs) == 0 {
			continue
		}
		for _, m := range groups[name] {
			vp := variantProfile{Model: name, Variant: m.Name}
			prefix := filepath.Join(tmp, m.Name)
			if err := profileOne(ctx, env, rf.threads, m, prefix, inputs, max(runs, 1), &vp); err != nil {
				vp.Error = err.Error()
			}
			out = append(out, vp)
		}
	}
	if asJSON {
		return json.NewEncoder(std.Out).Encode(out)
	}
	for _, vp := range out {
		if vp.Error != "" {
			fmt.Fprintf(std.Out, "\n%s (%s): not profiled: %s\n", vp.Variant, vp.Model, vp.Error)
			continue
		}
		fmt.Fprintf(std.Out, "\n%s (%s): %.0f µs per input in kernels, %d runs\n", vp.Variant, vp.Model, float64(vp.Kernels.Nanoseconds())/1e3, vp.Runs)
		tw := tabwriter.NewWriter(std.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  OPERATOR\tNODES\tµs/INPUT\tSHARE")
		var all time.Duration
		for _, o := range vp.Ops {
			all += o.Total
		}
		for _, o := range vp.Ops {
			fmt.Fprintf(tw, "  %s\t%d\t%.1f\t%.0f %%\n", o.Op, o.Nodes, float64(o.Total.Nanoseconds())/1e3/float64(vp.Runs), 100*float64(o.Total)/float64(max(all, 1)))
		}
		tw.Flush()
	}
	return nil
}

// profileOne opens m with the profiler on, runs every input runs times
// through its pipeline, closes the session (ORT writes the trace then) and
// sums the trace.
func profileOne(ctx context.Context, env *onnx.Env, threads int, m *models.Model, prefix string, inputs [][]byte, runs int, vp *variantProfile) error {
	sess, err := m.Open(env.Loader(onnx.SessionOptions{IntraOpThreads: threads, ProfilePrefix: prefix}))
	if err != nil {
		return err
	}
	p, err := models.NewPipeline(m, sess, models.PipelineOptions{})
	if err != nil {
		sess.Close()
		return err
	}
	for r := 0; r < runs; r++ {
		for i, in := range inputs {
			if _, err := p.Infer(ctx, models.Input{Name: fmt.Sprintf("sample-%d", i), Data: in}); err != nil {
				sess.Close()
				return err
			}
		}
	}
	sess.Close()
	prof, err := onnx.ReadProfiles(prefix)
	if err != nil {
		return err
	}
	vp.Runs, vp.Ops = runs*len(inputs), prof.Ops
	for _, o := range prof.Ops {
		vp.Kernels += o.Total
	}
	vp.Kernels /= time.Duration(vp.Runs)
	return nil
}
