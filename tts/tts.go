// Package tts speaks text aloud for the kiosk: a small Synthesizer
// interface, espeak-ng behind it (Debian's espeak-ng, run as a process:
// no cgo, nothing to link), and an on-disk cache with a size cap so
// repeated advice costs a file read.
package tts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/outpost-edge/outpost/internal/atomicfile"
)

// ErrNoVoice: the language has no voice here (Hausa, today).
var ErrNoVoice = errors.New("tts: no voice for this language")

// Synthesizer turns text into a WAV file's bytes.
type Synthesizer interface {
	// Speak says text in lang (en, fr, sw, am, … or an espeak-ng voice
	// name) at rate words per minute (0: the default).
	Speak(ctx context.Context, text, lang string, rate int) ([]byte, error)
	// Voice is the voice used for lang, or ErrNoVoice.
	Voice(lang string) (string, error)
}

// Espeak runs espeak-ng.
type Espeak struct {
	Binary string // default "espeak-ng" on PATH
	// Rate in words per minute when Speak's is 0; default 140 (espeak's
	// own 175 is fast for a kiosk).
	Rate int

	once   gosync.Once
	voices map[string]string // language code or voice name -> voice
	err    error
}

// kioskVoices are the voices picked for the kiosk's languages.
var kioskVoices = map[string]string{"en": "en-gb", "fr": "fr-fr", "sw": "sw", "am": "am"}

func (e *Espeak) bin() string {
	if e.Binary != "" {
		return e.Binary
	}
	return "espeak-ng"
}

func (e *Espeak) load() {
	out, err := exec.Command(e.bin(), "--voices").Output()
	if err != nil {
		e.err = fmt.Errorf("tts: %s --voices: %w (install espeak-ng)", e.bin(), err)
		return
	}
	e.voices = map[string]string{}
	for i, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 4 {
			continue
		}
		lang := f[1]
		e.voices[lang] = lang
		if base, _, ok := strings.Cut(lang, "-"); ok && e.voices[base] == "" {
			e.voices[base] = lang
		}
	}
	for lang, v := range kioskVoices {
		if _, ok := e.voices[v]; ok {
			e.voices[lang] = v
		}
	}
}

// Voice implements Synthesizer.
func (e *Espeak) Voice(lang string) (string, error) {
	e.once.Do(e.load)
	if e.err != nil {
		return "", e.err
	}
	if v, ok := e.voices[lang]; ok {
		return v, nil
	}
	return "", fmt.Errorf("%w %q (espeak-ng has none; the kiosk shows the text instead)", ErrNoVoice, lang)
}

// Speak implements Synthesizer.
func (e *Espeak) Speak(ctx context.Context, text, lang string, rate int) ([]byte, error) {
	voice, err := e.Voice(lang)
	if err != nil {
		return nil, err
	}
	if rate <= 0 {
		rate = e.Rate
	}
	if rate <= 0 {
		rate = 140
	}
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("tts: nothing to say")
	}
	cmd := exec.CommandContext(ctx, e.bin(), "-v", voice, "-s", strconv.Itoa(rate), "--stdout", "-b", "1")
	cmd.Stdin = strings.NewReader(text) // never on the command line: it may start with "-"
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("tts: espeak-ng -v %s: %w: %s", voice, err, strings.TrimSpace(errb.String()))
	}
	wav := out.Bytes()
	fixWAVSizes(wav)
	if _, err := Duration(wav); err != nil {
		return nil, fmt.Errorf("tts: espeak-ng -v %s wrote no usable WAV: %w", voice, err)
	}
	return wav, nil
}

// fixWAVSizes fills in the RIFF and data sizes espeak-ng leaves at
// 0xFFFFFFFF when it writes to a pipe (browsers refuse such files).
func fixWAVSizes(b []byte) {
	if len(b) < 44 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return
	}
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
	for p := 12; p+8 <= len(b); {
		size := int(binary.LittleEndian.Uint32(b[p+4:]))
		if string(b[p:p+4]) == "data" {
			binary.LittleEndian.PutUint32(b[p+4:], uint32(len(b)-p-8))
			return
		}
		p += 8 + size
	}
}

// Duration is a PCM WAV's length.
func Duration(wav []byte) (time.Duration, error) {
	if len(wav) < 44 || string(wav[:4]) != "RIFF" || string(wav[8:12]) != "WAVE" {
		return 0, errors.New("not a WAV file")
	}
	var byteRate uint32
	for p := 12; p+8 <= len(wav); {
		id, size := string(wav[p:p+4]), int(binary.LittleEndian.Uint32(wav[p+4:]))
		switch id {
		case "fmt ":
			if p+16 > len(wav) {
				return 0, errors.New("fmt chunk truncated")
			}
			byteRate = binary.LittleEndian.Uint32(wav[p+16:])
		case "data":
			if byteRate == 0 {
				return 0, errors.New("data before fmt")
			}
			n := min(size, len(wav)-p-8)
			return time.Duration(float64(n) / float64(byteRate) * float64(time.Second)), nil
		}
		if size < 0 || p+8+size < p {
			break
		}
		p += 8 + size
	}
	return 0, errors.New("no data chunk")
}

// Cache keeps synthesized speech on disk, keyed by (voice, rate, text),
// under a size cap: the least recently used files go first.
type Cache struct {
	Dir      string
	MaxBytes int64 // default 64 MiB
	Synth    Synthesizer

	mu gosync.Mutex
}

// Speak returns cached speech, or synthesizes and stores it. hit says
// which.
func (c *Cache) Speak(ctx context.Context, text, lang string, rate int) (wav []byte, hit bool, err error) {
	voice, err := c.Synth.Voice(lang)
	if err != nil {
		return nil, false, err
	}
	sum := sha256.Sum256([]byte(voice + "\x00" + strconv.Itoa(rate) + "\x00" + text))
	path := filepath.Join(c.Dir, hex.EncodeToString(sum[:16])+".wav")
	if b, err := os.ReadFile(path); err == nil {
		now := time.Now()
		os.Chtimes(path, now, now) // recently used
		return b, true, nil
	}
	wav, err = c.Synth.Speak(ctx, text, lang, rate)
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(c.Dir, 0o750); err == nil {
		if atomicfile.WriteBytes(path, wav, 0o640) == nil {
			c.trim()
		}
	}
	return wav, false, nil
}

func (c *Cache) trim() {
	c.mu.Lock()
	defer c.mu.Unlock()
	max := c.MaxBytes
	if max <= 0 {
		max = 64 << 20
	}
	ents, _ := os.ReadDir(c.Dir)
	type f struct {
		path string
		size int64
		used time.Time
	}
	var files []f
	var total int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".wav") {
			files = append(files, f{filepath.Join(c.Dir, e.Name()), fi.Size(), fi.ModTime()})
			total += fi.Size()
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].used.Before(files[j].used) })
	for _, x := range files {
		if total <= max {
			break
		}
		if os.Remove(x.path) == nil {
			total -= x.size
		}
	}
}
