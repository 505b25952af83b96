package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/device"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/models/pkg"
	"github.com/outpost-edge/outpost/runtime/onnx"
	osync "github.com/outpost-edge/outpost/sync"
)

const modelsPackExamples = `  outpost models pack --key program.key --seq 7 --out crop-disease-7.opkg models/crop-disease
  outpost models install crop-disease-7.opkg --dir /usr/share/outpost/models --config /etc/outpost/config.json
  outpost models install crop-disease-6.opkg --model-key ed25519:…   # refused: seq 6 is not newer (unless packed with --rollback)
`

// runModelsPack signs a model folder into one package file.
func runModelsPack(ctx context.Context, std IO, args []string) error {
	var keyFile, out string
	var seq int64
	var rollback bool
	fs := newFlags(std, "models pack", "outpost models pack --key FILE --seq N --out FILE DIR", modelsPackExamples)
	fs.StringVar(&keyFile, "key", "", "ed25519 private key (outpost keys generate)")
	fs.Int64Var(&seq, "seq", 0, "package sequence number: strictly increasing per model; devices refuse anything not newer")
	fs.BoolVar(&rollback, "rollback", false, "allow devices to install this over a newer seq (a deliberate, signed rollback)")
	fs.StringVar(&out, "out", "", "package file to write")
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
	var buf bytes.Buffer
	meta, err := pkg.Pack(&buf, dir, m.Name, m.Version, seq, rollback, key)
	if err != nil {
		return fmt.Errorf("models pack: %w", err)
	}
	if err := atomicfile.WriteBytes(out, buf.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(std.Out, "packed %s %s seq %d (%d files, %d bytes) into %s\n", meta.Name, meta.Version, meta.Seq, len(meta.Files), buf.Len(), out)
	return nil
}

// runModelsInstall verifies and installs a package into a models
// directory (USB: the file from a stick).
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
	if cfgFile != "" {
		c := device.Defaults()
		if err := c.LoadFile(cfgFile); err != nil {
			return err
		}
		keys = append(keys, c.ModelKeys...)
	}
	if env := os.Getenv("OUTPOST_MODEL_KEYS"); env != "" {
		keys = append(keys, strings.Split(env, ",")...)
	}
	var trusted []ed25519.PublicKey
	for _, k := range keys {
		pub, err := osync.ParsePublicKey(k)
		if err != nil {
			return usagef("model key: %v", err)
		}
		trusted = append(trusted, pub)
	}
	if len(trusted) == 0 {
		return usagef("no trusted model keys: pass --model-key or a --config with model_keys")
	}
	dir, err := rf.dir()
	if err != nil {
		return err
	}
	env, err := rf.env()
	if err != nil {
		return err
	}
	defer env.Close()
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("models install: %w", err)
	}
	defer f.Close()
	m, err := pkg.Install(f, dir, trusted, func(tmp string) error {
		mm, err := models.LoadModel(tmp)
		if err != nil {
			return err
		}
		s, err := mm.Open(env.Loader(onnx.SessionOptions{}))
		if err != nil {
			return err
		}
		return s.Close()
	})
	if err != nil {
		return fmt.Errorf("models install %s: %w", filepath.Base(fs.Arg(0)), err)
	}
	fmt.Fprintf(std.Out, "installed %s %s (seq %d) in %s; the previous version is kept as .%s.prev\n", m.Name, m.Version, m.Seq, filepath.Join(dir, m.Name), m.Name)
	return nil
}
