package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/outpost-edge/outpost/hub"
	osync "github.com/outpost-edge/outpost/sync"
)

// Embedded is an in-process MQTT broker (mochi-mqtt) and hub collector, for
// `outpost serve --demo` and a single-box install with no separate hub.
type Embedded struct {
	Broker string // tcp:// URL of the embedded broker
	HubKey string // the embedded hub's public key, for the device's hub_keys
	srv    *mochi.Server
	hub    *hub.Server
	col    *hub.Collector
	cancel context.CancelFunc
	done   chan struct{}
}

// StartEmbedded runs a broker on addr (loopback only) and a collector
// storing into dir/collector.db, reporting what it stores to w.
func StartEmbedded(addr, dir string, w io.Writer, log *slog.Logger) (*Embedded, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil { // default port taken: any free loopback port
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	addr = ln.Addr().String()
	ln.Close()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{Type: "tcp", ID: "demo", Address: addr})); err != nil {
		return nil, err
	}
	go srv.Serve()
	e := &Embedded{Broker: "tcp://" + addr, srv: srv, done: make(chan struct{})}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		srv.Close()
		return nil, err
	}
	// The demo's hub is assembled as `outpost collect` assembles one
	// (hub.OpenServer): signed, its key beside its database (the demo
	// device pins it), and `collect export|devices|import --data-dir
	// DIR/hub` reach it through its socket while the demo runs.
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	if e.hub, err = hub.OpenServer(ctx, hub.Config{DataDir: dir, Broker: e.Broker, Logger: log}); err != nil {
		cancel()
		srv.Close()
		return nil, err
	}
	e.HubKey = osync.FormatPublicKey(e.hub.PublicKey())
	e.col = e.hub.Collector()
	go func() {
		defer close(e.done)
		go e.hub.Run(ctx)
		var last int64
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if s := e.col.Stats(); s.Stored != last {
					fmt.Fprintf(w, "hub: %d results stored by the collector (%d duplicate deliveries ignored)\n", s.Stored, s.Duplicates)
					last = s.Stored
				}
			}
		}
	}()
	return e, nil
}

// Close stops the collector and the broker.
func (e *Embedded) Close() {
	e.cancel()
	<-e.done
	e.hub.Close()
	e.srv.Close()
}

// CopySamples puts the bundled sample inputs into the inbox for the demo.
func CopySamples(modelsDir, inbox string) (int, error) {
	if err := os.MkdirAll(inbox, 0o750); err != nil {
		return 0, err
	}
	var files []string
	jpgs, _ := filepath.Glob(filepath.Join(modelsDir, "crop-disease", "samples", "*.jpg"))
	files = append(files, jpgs...)
	for _, w := range []string{"000_en_yes.wav", "060_sw_repeat.wav", "140_am_help.wav"} {
		files = append(files, filepath.Join(modelsDir, "kws", "eval", w))
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// Written under a temporary name and renamed, as a camera app should.
		tmp := filepath.Join(inbox, "."+filepath.Base(f)+".part")
		if err := os.WriteFile(tmp, b, 0o640); err != nil {
			return n, err
		}
		if err := os.Rename(tmp, filepath.Join(inbox, filepath.Base(f))); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
