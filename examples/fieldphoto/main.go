// Fieldphoto is the extension worker's flow in one program: diagnose a leaf
// photo, answer in the worker's language, and keep the result durably in
// the outbox until a hub acknowledges it.
//
//	go run ./examples/fieldphoto --lang sw models/crop-disease/samples/rust.jpg
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/outbox"
	"github.com/outpost-edge/outpost/runtime/onnx"
)

func main() {
	lang := flag.String("lang", "en", "advice language: en, fr, sw, ha, am")
	data := flag.String("data-dir", "outpost-data", "where the outbox lives")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: fieldphoto [--lang sw] PHOTO.jpg")
	}
	env, err := onnx.NewEnv(onnx.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close()
	reg, err := models.LoadDir("models")
	if err != nil {
		log.Fatal(err)
	}
	m, err := reg.Get("crop-disease")
	if err != nil {
		log.Fatal(err)
	}
	sess, err := m.Open(env.Loader(onnx.SessionOptions{}))
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()
	p, err := models.NewPipeline(m, sess, models.PipelineOptions{Lang: *lang})
	if err != nil {
		log.Fatal(err)
	}
	photo, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	res, err := p.Infer(context.Background(), models.Input{Name: flag.Arg(0), Data: photo})
	if err != nil {
		log.Fatal(err) // a blurred or broken photo: the error says what was wrong
	}
	ans := res.Output.(*models.ClassResult)
	fmt.Printf("%s (%.0f%%)\n%s\n", ans.Label, ans.Score*100, ans.Advice)

	// Durable before we say "saved": Append returns after fsync.
	ob, err := outbox.Open(*data+"/outbox.db", outbox.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer ob.Close()
	out, _ := json.Marshal(ans)
	prio := outbox.Normal
	if ans.Label == "blight" { // spreads in days: send first, even over budget
		prio = outbox.Alert
	}
	id, err := ob.Append(context.Background(), &outbox.Record{Device: "field-kit", Model: m.Name, Version: m.Version,
		Task: string(m.Task), Priority: prio, Output: out}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("saved as", id, "- it syncs to the hub with 'outpost sync --once'")
}
