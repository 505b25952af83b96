package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/tts"
)

const sayExamples = `  outpost say --lang sw "Piga picha ya jani moja kwenye mwanga wa mchana."
  outpost say --lang am --rate 120 --out help-am.wav "በቀን ብርሃን የአንድ ቅጠል ፎቶ ያንሱ።"
  outpost say --voices                       # which languages have a voice here
`

// runSay speaks text with the kiosk's voice for a language (espeak-ng):
// to a WAV file, or through aplay when there is one.
func runSay(ctx context.Context, std IO, args []string) error {
	var lang, out string
	var rate int
	var list bool
	fs := newFlags(std, "say", `outpost say --lang LANG [--out FILE.wav] [--rate WPM] "text"`, sayExamples)
	fs.StringVar(&lang, "lang", "en", "language (en, fr, sw, am, … any espeak-ng voice); Hausa has none yet")
	fs.StringVar(&out, "out", "", "write the WAV here instead of playing it")
	fs.IntVar(&rate, "rate", 140, "words per minute (slower is clearer)")
	fs.BoolVar(&list, "voices", false, "say which kiosk languages have a voice")
	if err := parse(fs, args); err != nil {
		return err
	}
	e := &tts.Espeak{}
	if list {
		for _, l := range models.Languages {
			v, err := e.Voice(l)
			if err != nil {
				fmt.Fprintf(std.Out, "%s: none (%v)\n", l, err)
				continue
			}
			fmt.Fprintf(std.Out, "%s: %s\n", l, v)
		}
		return nil
	}
	text := strings.Join(fs.Args(), " ")
	if strings.TrimSpace(text) == "" {
		return usagef("say: nothing to say")
	}
	wav, err := e.Speak(ctx, text, lang, rate)
	if err != nil {
		return err
	}
	if out != "" {
		return atomicfile.WriteBytes(out, wav, 0o644)
	}
	player, err := exec.LookPath("aplay")
	if err != nil {
		return usagef("no aplay to play it here: pass --out FILE.wav")
	}
	cmd := exec.CommandContext(ctx, player, "-q", "-")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(string(wav)), os.Stdout, std.Err
	return cmd.Run()
}
