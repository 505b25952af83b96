package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

const modelsExamples = `  outpost models list                    # bundled models
  outpost models list --dir ./my-models --json
  outpost models verify                  # checksums, then load each model and check its inputs/outputs
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
	rf.register(fs, "dir")
	fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	if err := parse(fs, args); err != nil {
		return err
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
