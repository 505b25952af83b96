package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/outpost-edge/outpost/internal/device"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

const modelsExamples = `  outpost models list                    # bundled models
  outpost models list --dir ./my-models --json
  outpost models verify                  # checksums, then load each model and check its inputs/outputs
  outpost models verify --bench --data-dir /var/lib/outpost   # time each model's variants here; the device runs the fastest that agrees
  outpost models add model.onnx --labels labels.txt --name cassava   # bring your own (see models add --help)
`

func runModels(ctx context.Context, io IO, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "add":
			return runModelsAdd(ctx, io, args[1:])
		case "pack":
			return runModelsPack(ctx, io, args[1:])
		case "install":
			return runModelsInstall(ctx, io, args[1:])
		}
	}
	var rf runtimeFlags
	var asJSON bool
	fs := newFlags(io, "models", "outpost models list|verify|add|pack|install [--dir DIR] [--json]", modelsExamples)
	var df dataFlags
	var bench, profile bool
	var runs int
	rf.register(fs, "dir")
	df.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	fs.BoolVar(&bench, "bench", false, "verify: time every variant of each model (INT8, FP32) on its samples on this device, check they answer alike, and record the fastest as the one the device runs (variants.json in --data-dir)")
	fs.IntVar(&runs, "runs", 10, "verify --bench: timed runs per sample and variant")
	fs.BoolVar(&profile, "profile", false, "verify --bench: also run each variant under ONNX Runtime's profiler and print where its time goes, operator by operator")
	if err := parse(fs, args); err != nil {
		return err
	}
	if bench {
		if fs.NArg() != 1 || fs.Arg(0) != "verify" {
			return usagef("--bench goes with verify: outpost models verify --bench")
		}
		if err := benchVariants(ctx, io, rf, df, runs, asJSON); err != nil || !profile {
			return err
		}
		return profileVariants(ctx, io, rf, runs, asJSON)
	}
	if profile {
		return usagef("--profile goes with verify --bench: outpost models verify --bench --profile")
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "list" && fs.Arg(0) != "verify") {
		return usagef("want 'list' or 'verify', got %q", strings.Join(fs.Args(), " "))
	}
	reg, err := rf.registry()
	if err != nil {
		return err
	}
	type row struct {
		Name      string   `json:"name"`
		Version   string   `json:"version"`
		Task      string   `json:"task"`
		Size      int64    `json:"size_bytes"`
		License   string   `json:"license"`
		Languages []string `json:"languages,omitempty"`
		Dir       string   `json:"dir"`
		Status    string   `json:"status"`
		Error     string   `json:"error,omitempty"`
	}
	var rows []row
	failed := 0
	verify := fs.Arg(0) == "verify"
	var env *onnx.Env
	if verify && len(reg.Models()) > 0 {
		if env, err = rf.env(); err != nil {
			return err
		}
		defer env.Close()
	}
	for _, m := range reg.Models() {
		r := row{Name: m.Name, Version: m.Version, Task: string(m.Task), Size: m.Size, License: m.License,
			Languages: m.Languages, Dir: m.Dir, Status: "ok"}
		if verify {
			// Checksum was verified by the registry; now prove ONNX Runtime
			// loads it and its tensors match the manifest.
			sess, err := m.Open(env.Loader(onnx.SessionOptions{IntraOpThreads: rf.threads}))
			if err != nil {
				r.Status, r.Error = "bad", err.Error()
				failed++
			} else {
				sess.Close()
			}
		}
		rows = append(rows, r)
	}
	for _, p := range reg.Problems() {
		rows = append(rows, row{Dir: p.Dir, Status: "bad", Error: p.Err.Error()})
		failed++
	}
	if asJSON {
		enc := json.NewEncoder(io.Out)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
	} else {
		tw := tabwriter.NewWriter(io.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tVERSION\tTASK\tSIZE\tLICENSE\tSTATUS")
		for _, r := range rows {
			if r.Name == "" {
				fmt.Fprintf(tw, "? (%s)\t\t\t\t\tbad: %s\n", r.Dir, r.Error)
				continue
			}
			status := r.Status
			if r.Error != "" {
				status += ": " + r.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Version, r.Task, humanBytes(r.Size), r.License, status)
		}
		tw.Flush()
		if len(rows) == 0 {
			fmt.Fprintf(io.Out, "no models in %s (each model is a folder with a %s)\n", reg.Dir(), models.ManifestFile)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d models failed", failed, len(rows))
	}
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// benchVariants is `models verify --bench`: the device's own measurement
// of each model's variants, recorded where the daemon reads it.
func benchVariants(ctx context.Context, std IO, rf runtimeFlags, df dataFlags, runs int, asJSON bool) error {
	c := device.Defaults()
	if err := c.LoadEnv(os.Getenv); err != nil {
		return err
	}
	dir, err := rf.dir()
	if err != nil {
		return err
	}
	c.ModelsDir, c.DataDir, c.Threads = dir, df.path(), rf.threads
	if rf.ortLib != "" {
		c.ORTLib = rf.ortLib
	}
	dev, err := device.Open(c, device.Options{Version: Version, NoOutbox: true, NoUplink: true,
		Logger: slog.New(slog.NewTextHandler(std.Err, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	defer dev.Close()
	if err := os.MkdirAll(c.DataDir, 0o750); err != nil {
		return fmt.Errorf("models verify --bench: %w", err)
	}
	ch, err := dev.BenchVariants(ctx, max(runs, 1))
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(std.Out).Encode(ch)
	}
	if len(ch) == 0 {
		fmt.Fprintln(std.Out, "no model here has variants to choose between (a manifest-*.json beside a manifest.json)")
		return nil
	}
	tw := tabwriter.NewWriter(std.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tVARIANT\tMS/INPUT\tANSWERS\tRUNS HERE")
	for _, n := range slices.Sorted(maps.Keys(ch)) {
		v := ch[n]
		for _, m := range slices.Sorted(maps.Keys(v.Millis)) {
			agree, chosen := "same", ""
			if why, bad := v.Disagree[m]; bad {
				agree = "differ: " + why
			}
			if m == v.Use {
				chosen = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\n", n, m, v.Millis[m], agree, chosen)
		}
	}
	tw.Flush()
	fmt.Fprintf(std.Out, "recorded in %s: requests for each model run the variant marked\n", filepath.Join(c.DataDir, device.VariantsFile))
	return nil
}
