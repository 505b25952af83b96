package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/outpost-edge/outpost/internal/daemon"
	"github.com/outpost-edge/outpost/internal/device"
)

const serveExamples = `  outpost serve                                   # 127.0.0.1:8080, offline: results queue on disk
  outpost serve --broker tcp://hub.local:1883 --device-id kiosk-3
  outpost serve --config /etc/outpost/outpost.json --print-config
  outpost serve --demo                            # embedded broker + hub collector, bundled samples
  OUTPOST_LISTEN=0.0.0.0:8080 OUTPOST_TOKEN=s3cret outpost serve   # reachable on the LAN, with a token
`

func runServe(ctx context.Context, std IO, args []string) error {
	var (
		dflags deviceFlags
		print  bool
	)
	fs := newFlags(std, "serve", "outpost serve [--config FILE] [flags]", serveExamples)
	fs.BoolVar(&print, "print-config", false, "print the merged configuration (secrets masked) and exit")
	dflags.register(fs, "models", "listen", "broker", "device-id", "inbox", "token", "demo", "hub-key")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, _, err := dflags.config()
	if err != nil {
		return err
	}
	if c.Demo && c.Inbox == "" {
		c.Inbox = filepath.Join(c.DataDir, "inbox")
	}
	if err := c.Validate(); err != nil {
		if print {
			fmt.Fprintln(std.Out, c.Masked())
		}
		return usagef("%v", err)
	}
	if c.ModelsDir == "" || dflags.modelsDefault {
		dir, err := dflags.rf.dir()
		if err != nil {
			return err
		}
		c.ModelsDir = dir
		if unix.Access(dir, unix.W_OK) != nil && c.DataDir != "" {
			// Shipped models on a read-only system (the unit's
			// ProtectSystem=strict): run a writable copy in the data dir
			// so updates can be installed.
			own := filepath.Join(c.DataDir, device.ModelsSubdir)
			copied, err := device.SeedModels(dir, own)
			if err != nil {
				return err
			}
			if len(copied) > 0 {
				fmt.Fprintf(std.Err, "models: %s is read-only; running a writable copy in %s (copied %s)\n", dir, own, strings.Join(copied, ", "))
			}
			c.ModelsDir = own
		}
	}
	if print {
		fmt.Fprintln(std.Out, c.Masked())
		return nil
	}
	log := newLogger(std)

	// Second signal: exit at once (the first one, via ctx, drains). bbolt
	// keeps the outbox consistent either way.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		<-sigs
		<-sigs
		log.Warn("second signal: exiting now")
		os.Exit(130)
	}()

	var emb *daemon.Embedded
	if c.Demo && c.Broker == "" {
		var err error
		emb, err = daemon.StartEmbedded("127.0.0.1:1883", filepath.Join(c.DataDir, "hub"), std.Out, log)
		if err != nil {
			return fmt.Errorf("demo broker: %w", err)
		}
		defer emb.Close()
		c.Broker = emb.Broker
		if len(c.HubKeys) == 0 {
			c.HubKeys = []string{emb.HubKey}
		}
		fmt.Fprintf(std.Out, "demo: embedded MQTT broker at %s, hub collector storing into %s\n", emb.Broker, filepath.Join(c.DataDir, "hub"))
	}
	d, err := daemon.New(c, Version, log)
	if err != nil {
		return err
	}
	defer d.Close()
	go func() {
		addr, ok := <-d.Addr()
		if !ok {
			return
		}
		fmt.Fprintf(std.Out, "kiosk: %s  (API: /v1/status, /v1/models, metrics: /metrics)\n", kioskURL(addr, c.Token != ""))
		if c.Demo {
			n, err := daemon.CopySamples(c.ModelsDir, c.Inbox)
			if err != nil {
				log.Error("demo: copying samples", "err", err)
			}
			fmt.Fprintf(std.Out, "demo: %d sample photos and recordings dropped into %s; watch them reach the hub. Ctrl-C stops.\n", n, c.Inbox)
		}
	}()
	return d.Run(ctx)
}

// newLogger: text on a terminal, JSON otherwise (journald, files).
func newLogger(std IO) *slog.Logger {
	if f, ok := std.Err.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return slog.New(slog.NewTextHandler(std.Err, nil))
	}
	return slog.New(slog.NewJSONHandler(std.Err, nil))
}

// kioskURL is the address a person should open. An unspecified listen
// address (0.0.0.0, ::) is not one; show loopback and say how to reach it
// from elsewhere. With a token the page asks for it on a sign-in form.
func kioskURL(addr string, token bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr + "/"
	}
	q := ""
	if token {
		q = " (sign in with the token)"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Sprintf("http://127.0.0.1:%s/%s (all interfaces: from another machine use this device's address and port %s)", port, q, port)
	}
	return "http://" + net.JoinHostPort(host, port) + "/" + q
}
