package device

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
	"github.com/outpost-edge/outpost/models"
)

// VariantsFile, in the data directory, says which variant of each model
// this device runs: the fastest on this device's own hardware among those
// that answer the model's sample inputs the same (an x86 kiosk may run
// FP32 where a Pi 5 runs INT8). `outpost models verify --bench` writes it,
// and so does the daemon once, a minute after its first start.
const VariantsFile = "variants.json"

// VariantChoice is what was measured and chosen for one model.
type VariantChoice struct {
	Use      string             `json:"use"`                // the variant requests for the model run on
	Millis   map[string]float64 `json:"ms_per_input"`       // median per input, per variant
	Disagree map[string]string  `json:"disagree,omitempty"` // variants left out: their answers differ
	Inputs   int                `json:"inputs"`
	At       time.Time          `json:"at"`
}

// loadVariants reads the choices; a missing or unreadable file is no choice
// (each model runs as named).
func (d *Device) loadVariants() {
	if d.cfg.DataDir == "" || d.reg == nil {
		return
	}
	var ch map[string]VariantChoice
	if err := safefile.LoadJSON(filepath.Join(d.cfg.DataDir, VariantsFile), 1<<20, &ch); err != nil {
		if !os.IsNotExist(err) {
			d.log.Warn("variants: choice not read; every model runs as named", "err", err)
		}
		return
	}
	d.mu.Lock()
	d.variants = ch
	d.mu.Unlock()
}

// routedLocked is the model a request naming model runs: its chosen
// variant when that is still one of its variants here.
func (d *Device) routedLocked(model string) string {
	c, ok := d.variants[model]
	if !ok || c.Use == model || d.reg == nil {
		return model
	}
	if slices.ContainsFunc(models.Variants(d.reg)[model], func(m *models.Model) bool { return m.Name == c.Use }) {
		return c.Use
	}
	return model
}

// Variants are the choices in force (model -> what was measured and chosen).
func (d *Device) Variants() map[string]VariantChoice {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.variants)
}

// BenchVariants times every variant of every model with a choice on the
// model's sample inputs (runs times each, after a warm-up), keeps those
// that answer every input as the model's own first variant does, chooses
// the fastest, and records the choices in the data directory.
func (d *Device) BenchVariants(ctx context.Context, runs int) (map[string]VariantChoice, error) {
	if d.reg == nil {
		return nil, fmt.Errorf("device: opened without models")
	}
	// Measured as named: no choice routes a request meanwhile.
	d.mu.Lock()
	d.variants = nil
	clear(d.pipes)
	d.mu.Unlock()
	out := map[string]VariantChoice{}
	groups := models.Variants(d.reg)
	for _, name := range slices.Sorted(maps.Keys(groups)) {
		group := groups[name]
		inputs := models.SampleInputs(group[0], 6)
		if len(inputs) == 0 {
			continue
		}
		c := VariantChoice{Millis: map[string]float64{}, Disagree: map[string]string{}, Inputs: len(inputs), At: time.Now().UTC()}
		var want []string
		for _, m := range group {
			p, _, err := d.Pipeline(m.Name, "en")
			if err != nil {
				c.Disagree[m.Name] = "does not load: " + err.Error()
				continue
			}
			var keys []string
			var per []time.Duration
			for i, in := range inputs {
				var took []time.Duration
				for r := -1; r < runs; r++ { // r == -1: warm-up
					t0 := time.Now()
					res, err := p.Infer(ctx, models.Input{Name: fmt.Sprintf("sample-%d", i), Data: in})
					if err != nil {
						return nil, fmt.Errorf("variants: %s: %w", m.Name, err)
					}
					if r < 0 {
						keys = append(keys, models.AgreeKey(res))
						continue
					}
					took = append(took, time.Since(t0))
				}
				slices.Sort(took)
				per = append(per, took[len(took)/2])
			}
			var sum time.Duration
			for _, t := range per {
				sum += t
			}
			c.Millis[m.Name] = float64(sum.Microseconds()) / 1000 / float64(len(per))
			if want == nil {
				want = keys
			} else if i := firstDiff(want, keys); i >= 0 {
				c.Disagree[m.Name] = fmt.Sprintf("sample %d: %q, %s answers %q", i, keys[i], group[0].Name, want[i])
			}
		}
		for _, m := range group {
			ms, ok := c.Millis[m.Name]
			if _, bad := c.Disagree[m.Name]; ok && !bad && (c.Use == "" || ms < c.Millis[c.Use]) {
				c.Use = m.Name
			}
		}
		if c.Use != "" {
			out[name] = c
		}
	}
	if d.cfg.DataDir != "" {
		b, _ := json.MarshalIndent(out, "", "  ")
		if err := atomicfile.WriteBytes(filepath.Join(d.cfg.DataDir, VariantsFile), b, 0o640); err != nil {
			return out, fmt.Errorf("variants: %w", err)
		}
	}
	d.mu.Lock()
	d.variants = out
	// Requests for a model whose choice changed build their pipeline anew.
	clear(d.pipes)
	d.mu.Unlock()
	return out, nil
}

func firstDiff(a, b []string) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return -1
}

// chooseVariantsOnce is the daemon's first-start measurement: a minute in
// (the kiosk answers first), when no choice was ever recorded.
func (d *Device) chooseVariantsOnce(ctx context.Context) {
	if d.reg == nil || d.cfg.DataDir == "" || len(models.Variants(d.reg)) == 0 {
		return
	}
	if _, err := os.Stat(filepath.Join(d.cfg.DataDir, VariantsFile)); err == nil {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Minute):
	}
	ch, err := d.BenchVariants(ctx, 5)
	if err != nil {
		d.log.Warn("variants: not measured", "err", err)
		return
	}
	for name, c := range ch {
		d.log.Info("variants: chosen on this device", "model", name, "runs", c.Use, "ms_per_input", c.Millis)
	}
}
