package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/outpost-edge/outpost/internal/device"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/outbox"
)

const inferExamples = `  outpost infer --model crop-disease --format text leaf.jpg
  outpost infer --model crop-disease --lang sw leaf.jpg     # advice in Swahili
  outpost infer --model kws --format text command.wav    # yes/no/help/repeat/outpost in en, sw, fr, am
  outpost infer --model silero-vad speech.wav
  outpost infer --model silero-vad --format text a.wav b.wav
  arecord -f S16_LE -r 16000 -d 5 -t wav | outpost infer --model silero-vad -
  outpost infer --model silero-vad --vad-threshold 0.6 --vad-min-speech 400ms noisy.wav
`

func runInfer(ctx context.Context, std IO, args []string) error {
	var (
		dflags  deviceFlags
		name    string
		format  string
		vadOpts models.VADOptions
		minSp   time.Duration
		minSil  time.Duration
		pad     time.Duration
		prio    string
	)
	fs := newFlags(std, "infer", "outpost infer --model NAME [flags] FILE... ('-' reads stdin)", inferExamples)
	fs.StringVarP(&name, "model", "m", "", "model name (see 'outpost models list')")
	fs.StringVar(&format, "format", "json", "output: json (one object per line) or text")
	dflags.register(fs, "models", "device-id", "lang", "vad-model")
	fs.StringVar(&prio, "priority", "normal", "queued results' priority: alert, normal or bulk")
	fs.Float32Var(&vadOpts.Threshold, "vad-threshold", 0, "VAD: probability that starts speech (default from the manifest, else 0.5)")
	fs.DurationVar(&minSp, "vad-min-speech", 0, "VAD: drop speech shorter than this (default 250ms)")
	fs.DurationVar(&minSil, "vad-min-silence", 0, "VAD: silence that ends speech (default 100ms)")
	fs.DurationVar(&pad, "vad-pad", 0, "VAD: padding added to each side of a segment (default 30ms)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if name == "" {
		return usagef("--model is required")
	}
	if fs.NArg() == 0 {
		return usagef("no input files")
	}
	if format != "json" && format != "text" {
		return usagef("--format must be json or text, got %q", format)
	}
	priority, err := outbox.ParsePriority(prio)
	if err != nil {
		return usagef("%v", err)
	}
	vadOpts.MinSpeech, vadOpts.MinSilence, vadOpts.SpeechPad = models.Duration(minSp), models.Duration(minSil), models.Duration(pad)
	cfg, queue, err := dflags.config()
	if err != nil {
		return err
	}
	if cfg.ModelsDir == "" {
		if cfg.ModelsDir, err = dflags.rf.dir(); err != nil {
			return err
		}
	}
	// Queue only when a data dir was given: a developer trying a model
	// should not find a database in the working directory.
	dev, err := device.Open(cfg, device.Options{Version: Version, NoOutbox: !queue, NoUplink: true, VAD: vadOpts,
		Logger: slog.New(slog.NewTextHandler(std.Err, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	defer dev.Close()
	if _, _, err := dev.Pipeline(name, ""); err != nil {
		return err
	}
	enc := json.NewEncoder(std.Out)
	failed := 0
	for _, path := range fs.Args() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		data, err := readInput(std, path)
		if err == nil {
			var res *models.Result
			if res, err = dev.Infer(ctx, name, models.Input{Name: path, Data: data}, ""); err == nil && queue {
				_, err = dev.Store(ctx, res, priority, data)
			}
			if err == nil {
				if format == "json" {
					err = enc.Encode(res)
				} else {
					models.WriteText(std.Out, res)
				}
			}
		}
		if err != nil {
			failed++
			fmt.Fprintf(std.Err, "outpost infer: %v\n", err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d inputs failed", failed, fs.NArg())
	}
	return nil
}

// maxInput bounds one input file, so a mistaken path to a disk image does
// not exhaust a 512 MB device.
const maxInput = 256 << 20

func readInput(std IO, path string) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = std.In
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxInput {
		return nil, fmt.Errorf("input is larger than %d MiB", maxInput>>20)
	}
	return b, nil
}
