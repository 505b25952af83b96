// Command embed is the training scripts' bridge to the speech embedding:
// Python has no ONNX Runtime here, so train_emb.py streams 16 kHz clips to
// this program and reads back openWakeWord embeddings computed exactly as
// the daemon computes them (models.SpeechEmbedding).
//
// Protocol on stdin/stdout, little-endian: a clip is uint32 n, then n
// float32 samples in [-1, 1]; the answer is uint32 w, then w × 96 float32.
// EOF on stdin ends it.
//
// With --calibrate MODEL, it instead runs MODEL's whole pipeline (Silero
// VAD, windows, embedding, head) with no threshold over the WAV files named
// on stdin, one per line, and prints one line per detection: the score,
// the keyword, the file; and last "seconds S". The training script picks
// the threshold from what the daemon's own pipeline does on calibration
// speech.
//
//	go run ./models/kws/embed --models-dir models
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

const maxSamples = 16000 * 60 // a minute per clip at most

func main() {
	dir := pflag.String("models-dir", "models", "models directory holding speech-embedding/")
	lib := pflag.String("ort-lib", os.Getenv("OUTPOST_ORT_LIB"), "ONNX Runtime library (default: search)")
	calibrate := pflag.String("calibrate", "", "keyword model whose pipeline to run over the WAV files listed on stdin")
	pflag.Parse()
	if *calibrate != "" {
		if err := calibrateRun(*dir, *lib, *calibrate, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "embed:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*dir, *lib, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "embed:", err)
		os.Exit(1)
	}
}

func run(dir, lib string, in io.Reader, out io.Writer) error {
	env, err := onnx.NewEnv(onnx.Options{LibraryPath: lib})
	if err != nil {
		return err
	}
	defer env.Close()
	s, err := models.OpenSpeechEmbedding(filepath.Join(dir, models.EmbeddingDir), env.Loader(onnx.SessionOptions{}))
	if err != nil {
		return err
	}
	defer s.Close()
	r, w := bufio.NewReaderSize(in, 1<<20), bufio.NewWriterSize(out, 1<<20)
	for {
		var n uint32
		if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
			if errors.Is(err, io.EOF) {
				return w.Flush()
			}
			return fmt.Errorf("clip length: %w", err)
		}
		if n > maxSamples {
			return fmt.Errorf("a clip of %d samples: more than %d", n, maxSamples)
		}
		pcm := make([]float32, n)
		if err := binary.Read(r, binary.LittleEndian, pcm); err != nil {
			return fmt.Errorf("clip of %d samples: %w", n, err)
		}
		embs, err := s.Embed(context.Background(), pcm)
		if err != nil {
			return err
		}
		binary.Write(w, binary.LittleEndian, uint32(len(embs)))
		for _, e := range embs {
			for _, v := range e {
				binary.Write(w, binary.LittleEndian, math.Float32bits(v))
			}
		}
		// The caller waits for each answer before the next clip.
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

func calibrateRun(dir, lib, name string, in io.Reader, out io.Writer) error {
	env, err := onnx.NewEnv(onnx.Options{LibraryPath: lib})
	if err != nil {
		return err
	}
	defer env.Close()
	reg, err := models.LoadDir(dir)
	if err != nil {
		return err
	}
	m, err := reg.Get(name)
	if err != nil {
		return err
	}
	// Every candidate; the caller picks the thresholds.
	m.Postprocessing.UncertainBelow, m.Postprocessing.WakeBelow, m.Postprocessing.CommandBelow = 0.05, 0.05, 0.05
	load := env.Loader(onnx.SessionOptions{})
	sess, err := m.Open(load)
	if err != nil {
		return err
	}
	vm, err := reg.Get("silero-vad")
	if err != nil {
		return err
	}
	vs, err := vm.Open(load)
	if err != nil {
		return err
	}
	// The daemon's keyword segmentation (internal/device: openLocked).
	vad, err := models.NewVAD(vs, &vm.Manifest, models.VADOptions{MinSpeech: models.Duration(100 * time.Millisecond), SpeechPad: models.Duration(50 * time.Millisecond)})
	if err != nil {
		return err
	}
	emb, err := models.OpenSpeechEmbedding(filepath.Join(dir, models.EmbeddingDir), load)
	if err != nil {
		return err
	}
	p, err := models.NewPipeline(m, sess, models.PipelineOptions{Segmenter: vad, Embedding: emb})
	if err != nil {
		return err
	}
	w := bufio.NewWriter(out)
	defer w.Flush()
	sc := bufio.NewScanner(in)
	seconds := 0.0
	for sc.Scan() {
		f := sc.Text()
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		res, err := p.Infer(context.Background(), models.Input{Name: f, Data: b})
		if err != nil {
			fmt.Fprintf(os.Stderr, "embed: %s: %v (skipped)\n", f, err)
			continue
		}
		r := res.Output.(*models.KWSResult)
		seconds += r.Duration
		for _, k := range r.Keywords {
			fmt.Fprintf(w, "%.4f %s %s\n", k.Score, k.Keyword, f)
		}
	}
	fmt.Fprintf(w, "seconds %.1f\n", seconds)
	return sc.Err()
}
