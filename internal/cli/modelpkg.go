package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/device"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/models/pkg"
	osync "github.com/outpost-edge/outpost/sync"
)

const modelsPackExamples = `  outpost models pack --key program.key --seq 7 --out crop-disease-7.opkg models/crop-disease
  outpost models install crop-disease-7.opkg --dir /usr/share/outpost/models --config /etc/outpost/config.json
  outpost models install crop-disease-6.opkg --model-key ed25519:…   # refused: seq 6 is not newer (unless packed with --rollback)
`

// runModelsPack signs a model folder into one package file, with golden
// inputs and the outputs this model gives for them (the device's health
// check before it swaps the model in).
func runModelsPack(ctx context.Context, std IO, args []string) error {
	var rf runtimeFlags
	var keyFile, out, lang string
	var seq int64
	var rollback bool
	var golden []string
	var tol float64
	fs := newFlags(std, "models pack", "outpost models pack --key FILE --seq N --out FILE [--golden INPUT...] DIR", modelsPackExamples)
	rf.register(fs, "dir")
	fs.StringVar(&keyFile, "key", "", "ed25519 private key (outpost keys generate)")
	fs.Int64Var(&seq, "seq", 0, "package sequence number: strictly increasing per model; devices refuse anything not newer")
	fs.BoolVar(&rollback, "rollback", false, "allow devices to install this over a newer seq (a deliberate, signed rollback)")
	fs.StringVar(&out, "out", "", "package file to write")
	fs.StringSliceVar(&golden, "golden", nil, "inputs (photos, WAVs) whose answers from this model the device must reproduce before it swaps the model in")
	fs.StringVar(&lang, "golden-lang", "en", "advice language of the golden outputs")
	fs.Float64Var(&tol, "tolerance", 0.02, "largest difference allowed in any number of a golden output")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || keyFile == "" || out == "" || seq <= 0 {
		return usagef("models pack needs --key, --seq N (> 0), --out and one model folder")
	}
	dir := fs.Arg(0)
	m, err := models.LoadModel(dir)
	if err != nil {
		return fmt.Errorf("models pack: %w", err)
	}
	key, err := loadPrivateKey(keyFile)
	if err != nil {
		return err
	}
	extra := map[string][]byte{}
	if len(golden) > 0 {
		if extra, err = goldenFiles(ctx, rf, m, golden, lang, tol); err != nil {
			return fmt.Errorf("models pack: golden inputs: %w", err)
		}
	}
	var buf bytes.Buffer
	meta, err := pkg.Pack(&buf, dir, m.Name, m.Version, seq, rollback, key, extra)
	if err != nil {
		return fmt.Errorf("models pack: %w", err)
	}
	if err := atomicfile.WriteBytes(out, buf.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(std.Out, "packed %s %s seq %d (%d files, %d golden inputs, %d bytes) into %s\n", meta.Name, meta.Version, meta.Seq, len(meta.Files), len(golden), buf.Len(), out)
	return nil
}

// goldenFiles runs the model on each input and returns golden.json and
// the inputs (golden-N.ext) to add to the package.
func goldenFiles(ctx context.Context, rf runtimeFlags, m *models.Model, inputs []string, lang string, tol float64) (map[string][]byte, error) {
	cfg := device.Defaults()
	cfg.ORTLib, cfg.ModelsDir, cfg.Lang = rf.ortLib, filepath.Dir(m.Dir), lang
	dev, err := device.Open(cfg, device.Options{NoOutbox: true})
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	p, _, err := dev.Pipeline(m.Name, lang)
	if err != nil {
		return nil, err
	}
	g := models.Golden{Tolerance: tol}
	files := map[string][]byte{}
	for i, in := range inputs {
		out, err := models.GoldenOutput(ctx, p, in)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in, err)
		}
		name := fmt.Sprintf("golden-%d%s", i+1, strings.ToLower(filepath.Ext(in)))
		if files[name], err = os.ReadFile(in); err != nil {
			return nil, err
		}
		g.Cases = append(g.Cases, models.GoldenCase{Model: m.Name, File: name, Lang: lang, Output: out})
	}
	files[models.GoldenFile], _ = json.MarshalIndent(g, "", "  ")
	return files, nil
}

// runModelsInstall verifies and installs a package into a models
// directory (USB: the file from a stick), through the same path as an
// update over MQTT: signature, digests, sequence, load and golden inputs
// beside the installed model, then the swap.
func runModelsInstall(ctx context.Context, std IO, args []string) error {
	var rf runtimeFlags
	var cfgFile string
	var keys []string
	fs := newFlags(std, "models install", "outpost models install FILE [--dir DIR] [--config FILE | --model-key KEY...]", modelsPackExamples)
	rf.register(fs, "dir")
	fs.StringVar(&cfgFile, "config", os.Getenv("OUTPOST_CONFIG"), "device config whose model_keys are trusted")
	fs.StringSliceVar(&keys, "model-key", nil, "trust this package-signing public key (ed25519:…; repeat during a key change)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("models install takes one package file")
	}
	cfg := device.Defaults()
	if cfgFile != "" {
		if err := cfg.LoadFile(cfgFile); err != nil {
			return err
		}
	}
	if env := os.Getenv("OUTPOST_MODEL_KEYS"); env != "" {
		keys = append(keys, strings.Split(env, ",")...)
	}
	for _, k := range keys {
		if _, err := osync.ParsePublicKey(k); err != nil {
			return usagef("model key: %v", err)
		}
	}
	cfg.ModelKeys = append(cfg.ModelKeys, keys...)
	if len(cfg.ModelKeys) == 0 {
		return usagef("no trusted model keys: pass --model-key or a --config with model_keys")
	}
	dir, err := rf.dir()
	if err != nil {
		return err
	}
	cfg.ModelsDir = dir
	if rf.ortLib != "" {
		cfg.ORTLib = rf.ortLib
	}
	dev, err := device.Open(cfg, device.Options{NoOutbox: true})
	if err != nil {
		return err
	}
	defer dev.Close()
	m, err := dev.InstallFile(ctx, fs.Arg(0), nil)
	if err != nil {
		return fmt.Errorf("models install %s: %w", filepath.Base(fs.Arg(0)), err)
	}
	fmt.Fprintf(std.Out, "installed %s %s (seq %d) in %s; the previous version is kept as .%s.prev\n", m.Name, m.Version, m.Seq, filepath.Join(dir, m.Name), m.Name)
	return nil
}
