// Embed is the smallest useful outpost program: load the bundled models,
// open one, and find speech in a WAV file.
//
//	go run ./examples/embed speech.wav
package main

import (
	"context"
	"encoding/json"
	"log"
	"os"

	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: embed FILE.wav")
	}
	env, err := onnx.NewEnv(onnx.Options{}) // finds libonnxruntime.so.1 (see onnx.Candidates)
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close()

	reg, err := models.LoadDir("models") // every folder with a manifest.json, checksums verified
	if err != nil {
		log.Fatal(err)
	}
	m, err := reg.Get("silero-vad")
	if err != nil {
		log.Fatal(err)
	}
	sess, err := m.Open(env.Loader(onnx.SessionOptions{IntraOpThreads: 1}))
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()

	p, err := models.NewPipeline(m, sess, models.PipelineOptions{})
	if err != nil {
		log.Fatal(err)
	}
	wav, err := os.ReadFile(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	res, err := p.Infer(context.Background(), models.Input{Name: os.Args[1], Data: wav})
	if err != nil {
		log.Fatal(err)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}
