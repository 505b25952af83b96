// Package cli implements outpost's subcommands. Each command parses its own
// pflag.FlagSet (no global flag state) and returns an error; Main maps errors
// to exit codes, so tests drive the whole CLI in-process.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"github.com/spf13/pflag"

	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

// Set at build time by the Makefile (-ldflags -X).
var (
	Version = "dev"
	Commit  = "unknown"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command ran but something failed (e.g. one input of several)
	ExitUsage   = 2 // bad flags or arguments
	// ExitNotRunning: `outpost status` found no daemon answering (it still
	// prints what the configuration shares): a script can tell.
	ExitNotRunning = 3
)

// errNotRunning ends a command that found no daemon (ExitNotRunning).
var errNotRunning = errors.New("no daemon answered")

// errUsage marks errors that are the caller's wording, not a failure.
var errUsage = errors.New("usage")

func usagef(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// IO bundles the streams a command uses.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
}

type command struct {
	name, summary string
	run           func(ctx context.Context, io IO, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "run the daemon: HTTP API, kiosk page, watch folder, sync", runServe},
		{"infer", "run a model on files and print one result per file", runInfer},
		{"models", "list or verify the models in a directory", runModels},
		{"queue", "inspect the outbox: stats, list, show, export, compact", runQueue},
		{"say", "speak text in a language with the kiosk's voice (espeak-ng), to a WAV or the speaker", runSay},
		{"status", "how the running daemon is, and what this device shares, in plain words", runStatus},
		{"sync", "drain the outbox to an MQTT broker now (--once)", runSync},
		{"bundle", "sneakernet: write results to a USB stick, apply the hub's receipt", runBundle},
		{"collect", "hub side: store devices' results and acknowledge them; export", runCollect},
		{"keys", "make the hub's ack-signing key (keys generate)", runKeys},
		{"version", "print outpost, Go and ONNX Runtime versions", runVersion},
	}
}

const mainHelp = `outpost runs ONNX models on edge devices and keeps every result until a hub has it.

Usage:
  outpost <command> [flags] [args]

Commands:
%s
Examples:
  outpost serve --demo
  outpost version
  outpost models list
  outpost models verify --dir ./models
  outpost infer --model silero-vad speech.wav
  outpost infer --model silero-vad --format text *.wav
  outpost infer --model silero-vad --data-dir /var/lib/outpost clip.wav   # also queue the result
  outpost queue stats
  outpost sync --once --broker tcp://hub.local:1883
  outpost collect --broker tcp://localhost:1883 --data-dir ./hub

Run 'outpost <command> --help' for a command's flags.
`

// Main runs outpost with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	std := IO{In: stdin, Out: stdout, Err: stderr}
	var list strings.Builder
	for _, c := range commands() {
		fmt.Fprintf(&list, "  %-9s %s\n", c.name, c.summary)
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(stdout, mainHelp, list.String())
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, std, args[1:])
		switch {
		case err == nil:
			return ExitOK
		case errors.Is(err, pflag.ErrHelp):
			return ExitOK
		case errors.Is(err, errNotRunning):
			fmt.Fprintf(stderr, "outpost %s: %v\n", c.name, err)
			return ExitNotRunning
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "outpost %s: %v\nRun 'outpost %s --help'.\n", c.name, strings.TrimPrefix(err.Error(), "usage: "), c.name)
			return ExitUsage
		default:
			fmt.Fprintf(stderr, "outpost %s: %v\n", c.name, err)
			return ExitFailure
		}
	}
	fmt.Fprintf(stderr, "outpost: unknown command %q\n\n", args[0])
	fmt.Fprintf(stderr, mainHelp, list.String())
	return ExitUsage
}

// newFlags makes a FlagSet whose --help prints usage, then the flags, then examples.
func newFlags(io IO, name, usage, examples string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Err)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(io.Out, "Usage:\n  %s\n\nFlags:\n%s", usage, fs.FlagUsages())
		if examples != "" {
			fmt.Fprintf(io.Out, "\nExamples:\n%s", examples)
		}
	}
	return fs
}

func parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	return nil
}

// runtimeFlags are shared by commands that load models.
type runtimeFlags struct {
	ortLib    string
	modelsDir string
	dirFlag   string
	threads   int
}

// register adds the flags. The models directory is --models-dir in
// every command; `outpost models` also takes its old name --dir (an alias,
// issue 26: two names for one thing).
func (r *runtimeFlags) register(fs *pflag.FlagSet, dirFlag string) {
	r.dirFlag = "models-dir"
	fs.StringVar(&r.ortLib, "ort-lib", os.Getenv("OUTPOST_ORT_LIB"), "ONNX Runtime library (env OUTPOST_ORT_LIB; default: search next to the binary, the build cache, system paths)")
	fs.StringVar(&r.modelsDir, "models-dir", os.Getenv("OUTPOST_MODELS_DIR"), "models directory (env OUTPOST_MODELS_DIR; default: next to the binary, then ./models)")
	if dirFlag != "models-dir" {
		fs.StringVar(&r.modelsDir, dirFlag, os.Getenv("OUTPOST_MODELS_DIR"), "the same as --models-dir")
	}
	fs.IntVar(&r.threads, "threads", 1, "intra-op threads per model (1 suits a Pi running several models)")
}

// dir resolves the models directory.
func (r *runtimeFlags) dir() (string, error) {
	if r.modelsDir != "" {
		return r.modelsDir, nil
	}
	var cands []string
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		d := filepath.Dir(exe)
		cands = append(cands, filepath.Join(d, "models"), filepath.Join(d, "..", "models"),
			filepath.Join(d, "..", "share", "outpost", "models"))
	}
	cands = append(cands, "models", "/usr/share/outpost/models")
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && st.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("no models directory found (looked in %s); pass --%s", strings.Join(cands, ", "), r.dirFlag)
}

func (r *runtimeFlags) env() (*onnx.Env, error) {
	lib, err := onnx.FindLibrary(r.ortLib)
	if err != nil {
		return nil, err
	}
	return onnx.NewEnv(onnx.Options{LibraryPath: lib})
}

func (r *runtimeFlags) registry() (*models.Registry, error) {
	dir, err := r.dir()
	if err != nil {
		return nil, err
	}
	return models.LoadDir(dir)
}

func runVersion(_ context.Context, io IO, args []string) error {
	var rf runtimeFlags
	fs := newFlags(io, "version", "outpost version [--ort-lib PATH]", "  outpost version\n")
	rf.register(fs, "models-dir")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(io.Out, "outpost %s (commit %s)\ngo %s %s/%s\n", Version, Commit, goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
	env, err := rf.env()
	if err != nil {
		fmt.Fprintf(io.Out, "onnxruntime: not loaded: %v\n", err)
		return err
	}
	defer env.Close()
	fmt.Fprintf(io.Out, "onnxruntime %s (%s)\n", env.RuntimeVersion(), env.Library())
	return nil
}
