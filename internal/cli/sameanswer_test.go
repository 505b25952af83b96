package cli

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/daemon"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
)

// TestSameAnswerEverywhere: the same photo and recording through `outpost
// infer --data-dir`, the HTTP API and the watch folder give identical
// stored records apart from ID, time and sequence — one device wiring,
// one task table.
func TestSameAnswerEverywhere(t *testing.T) {
	md := testutil.ModelsDir(t)
	photoPath := filepath.Join(md, "crop-disease", "samples", "blight.jpg")
	wavPath := filepath.Join(md, "kws", "eval", "000_en_yes.wav")
	photo, _ := os.ReadFile(photoPath)
	wav, _ := os.ReadFile(wavPath)
	if len(photo) == 0 || len(wav) == 0 {
		t.Fatal("samples missing")
	}

	// 1. The CLI.
	cliData := t.TempDir()
	for _, in := range []struct{ model, path string }{{"crop-disease", photoPath}, {"kws", wavPath}} {
		if _, errOut, code := run(t, nil, "infer", "--models-dir", md, "--data-dir", cliData, "--device-id", "same-1", "-m", in.model, in.path); code != ExitOK {
			t.Fatalf("infer %s: %s", in.model, errOut)
		}
	}

	// 2 and 3. The daemon: the HTTP API, then the watch folder.
	c := daemon.Defaults()
	c.DataDir, c.ModelsDir, c.ORTLib, c.DeviceID, c.Listen = t.TempDir(), md, testutil.LibPath(t), "same-1", "127.0.0.1:0"
	c.Inbox = filepath.Join(c.DataDir, "inbox")
	os.MkdirAll(c.Inbox, 0o750)
	d, err := daemon.New(c, "test", testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	base := "http://" + <-d.Addr()
	for _, in := range []struct {
		model, ctype string
		body         []byte
	}{{"crop-disease", "image/jpeg", photo}, {"kws", "audio/wav", wav}} {
		resp, err := http.Post(base+"/v1/models/"+in.model+"/infer", in.ctype, bytes.NewReader(in.body))
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("POST %s: %v %v", in.model, err, resp)
		}
		resp.Body.Close()
	}
	os.WriteFile(filepath.Join(c.Inbox, "leaf.jpg"), photo, 0o644)
	os.WriteFile(filepath.Join(c.Inbox, "said.wav"), wav, 0o644)
	testutil.Eventually(t, 20*time.Second, "both inbox files done", func() bool {
		_, e1 := os.Stat(filepath.Join(c.Inbox, "done", "leaf.jpg"))
		_, e2 := os.Stat(filepath.Join(c.Inbox, "done", "said.wav"))
		return e1 == nil && e2 == nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	d.Close()

	records := func(dir string) []*outbox.Record {
		ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer ob.Close()
		recs, err := ob.Lease(100, 0)
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	cliRecs, daemonRecs := records(cliData), records(c.DataDir)
	if len(cliRecs) != 2 || len(daemonRecs) != 4 {
		t.Fatalf("records: CLI %d (want 2), daemon %d (want 4: 2 HTTP + 2 watch folder)", len(cliRecs), len(daemonRecs))
	}
	want := map[string]*outbox.Record{}
	for _, r := range cliRecs {
		want[r.Model] = r
	}
	for _, r := range daemonRecs {
		w := want[r.Model]
		if w == nil || r.Device != w.Device || r.Version != w.Version || r.Task != w.Task || r.Priority != w.Priority ||
			r.Tier != w.Tier || !bytes.Equal(r.Output, w.Output) {
			t.Errorf("%s differs from the CLI's:\n daemon %s %s %v %s\n cli    %s %s %v %s", r.Model,
				r.Device, r.Task, r.Priority, r.Output, w.Device, w.Task, w.Priority, w.Output)
		}
	}
}
