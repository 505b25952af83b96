package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/outbox"
	"github.com/outpost-edge/outpost/runtime/onnx"
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
		rf      runtimeFlags
		name    string
		format  string
		vadOpts models.VADOptions
		minSp   time.Duration
		minSil  time.Duration
		pad     time.Duration
		df      dataFlags
		device  string
		prio    string
		lang    string
		vadName string
	)
	fs := newFlags(std, "infer", "outpost infer --model NAME [flags] FILE... ('-' reads stdin)", inferExamples)
	fs.StringVarP(&name, "model", "m", "", "model name (see 'outpost models list')")
	fs.StringVar(&format, "format", "json", "output: json (one object per line) or text")
	rf.register(fs, "models-dir")
	df.register(fs)
	fs.StringVar(&device, "device-id", os.Getenv("OUTPOST_DEVICE_ID"), "device ID recorded with queued results (env OUTPOST_DEVICE_ID; default: hostname)")
	fs.StringVar(&prio, "priority", "normal", "queued results' priority: alert, normal or bulk")
	fs.StringVar(&lang, "lang", envOr("OUTPOST_LANG", "en"), "language of advice text: en, fr, sw, ha, am (env OUTPOST_LANG)")
	fs.StringVar(&vadName, "vad-model", "silero-vad", "keyword spotting: the VAD model that finds speech segments ('' = whole input)")
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
	// Queue only when asked: a developer trying a model should not find a
	// database in the working directory.
	queue := fs.Changed("data-dir") || os.Getenv("OUTPOST_DATA_DIR") != ""
	if device == "" {
		device, _ = os.Hostname()
	}
	vadOpts.MinSpeech, vadOpts.MinSilence, vadOpts.SpeechPad = models.Duration(minSp), models.Duration(minSil), models.Duration(pad)

	reg, err := rf.registry()
	if err != nil {
		return err
	}
	m, err := reg.Get(name)
	if err != nil {
		for _, p := range reg.Problems() {
			if strings.Contains(p.Dir, name) {
				return fmt.Errorf("%w; %s", err, p)
			}
		}
		return err
	}
	env, err := rf.env()
	if err != nil {
		return err
	}
	defer env.Close()
	sess, err := m.Open(env.Loader(onnx.SessionOptions{IntraOpThreads: rf.threads}))
	if err != nil {
		return err
	}
	defer sess.Close()
	popts := models.PipelineOptions{VAD: vadOpts, Lang: lang}
	if m.Task == models.TaskKeywordSpotting && vadName != "" {
		// Keywords are looked for in the speech segments the VAD finds.
		vm, err := reg.Get(vadName)
		if err != nil {
			return fmt.Errorf("keyword spotting needs the VAD model: %w (or --vad-model '')", err)
		}
		vs, err := vm.Open(env.Loader(onnx.SessionOptions{IntraOpThreads: rf.threads}))
		if err != nil {
			return err
		}
		defer vs.Close()
		// Keywords are short: keep segments down to 100 ms.
		if popts.Segmenter, err = models.NewVAD(vs, &vm.Manifest, models.VADOptions{MinSpeech: models.Duration(100 * time.Millisecond), SpeechPad: models.Duration(50 * time.Millisecond)}); err != nil {
			return err
		}
	}
	p, err := models.NewPipeline(m, sess, popts)
	if err != nil {
		return err
	}
	var ob *outbox.Outbox
	if queue {
		if ob, err = df.open(std.Err); err != nil {
			return err
		}
		defer ob.Close()
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
			if res, err = p.Infer(ctx, models.Input{Name: path, Data: data}); err == nil && ob != nil {
				err = enqueue(ctx, ob, res, device, priority)
			}
			if err == nil {
				if format == "json" {
					err = enc.Encode(res)
				} else {
					printText(std.Out, res)
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

// enqueue appends res durably; res.ID is set only once it is on disk.
func enqueue(ctx context.Context, ob *outbox.Outbox, res *models.Result, device string, p outbox.Priority) error {
	out, err := json.Marshal(res.Output)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	r := &outbox.Record{Device: device, Model: res.Model, Version: res.Version, Task: string(res.Task), Priority: p, Output: out}
	id, err := ob.Append(ctx, r, nil)
	if err != nil {
		return fmt.Errorf("%s: result not stored: %w", res.Input, err)
	}
	res.ID = id.String()
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
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

func printText(w io.Writer, r *models.Result) {
	switch out := r.Output.(type) {
	case *models.VADResult:
		fmt.Fprintf(w, "%s: %d speech segment(s) in %.2f s (%.0f%% speech) [%s %s, %.1f ms]\n",
			r.Input, len(out.Segments), out.Duration, out.SpeechRatio*100, r.Model, r.Version, r.Timings.Total)
		for _, s := range out.Segments {
			fmt.Fprintf(w, "  %7.3f – %7.3f s  p=%.2f\n", s.Start, s.End, s.Probability)
		}
	case *models.KWSResult:
		fmt.Fprintf(w, "%s: %d keyword(s) in %d speech segment(s), %.2f s [%s %s, %.1f ms]\n",
			r.Input, len(out.Keywords), out.Segments, out.Duration, r.Model, r.Version, r.Timings.Total)
		for _, k := range out.Keywords {
			fmt.Fprintf(w, "  %7.3f – %7.3f s  %s (%.0f%%)\n", k.Start, k.End, k.Keyword, k.Score*100)
		}
	case *models.ClassResult:
		verdict := fmt.Sprintf("%s (%.0f%%)", out.Label, out.Score*100)
		if out.Uncertain {
			verdict = fmt.Sprintf("uncertain: best guess %s at %.0f%%", out.Top[0].Label, out.Top[0].Score*100)
		}
		fmt.Fprintf(w, "%s: %s [%s %s, %.1f ms]\n", r.Input, verdict, r.Model, r.Version, r.Timings.Total)
		for _, s := range out.Top[1:] {
			fmt.Fprintf(w, "  also %s %.0f%%\n", s.Label, s.Score*100)
		}
		if out.Advice != "" {
			fmt.Fprintf(w, "  → %s\n", out.Advice)
		}
	default:
		b, _ := json.Marshal(r.Output)
		fmt.Fprintf(w, "%s: %s [%s %s, %.1f ms]\n", r.Input, b, r.Model, r.Version, r.Timings.Total)
	}
}
