package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	devcfg "github.com/outpost-edge/outpost/internal/device"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// brokerFlags are the device commands' broker flags (the hub's are in
// hub.Config, see collect.go).
type brokerFlags struct {
	url, user, pass, ca, cert, key string
}

func (b *brokerFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&b.url, "broker", os.Getenv("OUTPOST_BROKER"), "MQTT broker URL: tcp://host:1883, ssl://host:8883, ws://host/mqtt (env OUTPOST_BROKER)")
	fs.StringVar(&b.user, "username", os.Getenv("OUTPOST_MQTT_USERNAME"), "MQTT username (env OUTPOST_MQTT_USERNAME)")
	fs.StringVar(&b.pass, "password", "", "MQTT password (prefer env OUTPOST_MQTT_PASSWORD: flags show in ps)")
	fs.StringVar(&b.ca, "ca-file", os.Getenv("OUTPOST_MQTT_CA"), "PEM CA bundle for ssl:// brokers (env OUTPOST_MQTT_CA)")
	fs.StringVar(&b.cert, "cert-file", os.Getenv("OUTPOST_MQTT_CERT"), "client certificate for mutual TLS (env OUTPOST_MQTT_CERT)")
	fs.StringVar(&b.key, "key-file", os.Getenv("OUTPOST_MQTT_KEY"), "client key for mutual TLS (env OUTPOST_MQTT_KEY)")
}

func logTo(w io.Writer, verbose bool) *slog.Logger {
	lvl := slog.LevelWarn
	if verbose {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

const syncExamples = `  outpost sync --once --broker tcp://hub.local:1883          # drain now, exit 0 when empty
  outpost sync --once --broker ssl://hub:8883 --ca-file hub-ca.pem --daily-budget 5MB
  OUTPOST_BROKER=tcp://10.0.0.2:1883 outpost sync --once --timeout 10m
`

func runSync(ctx context.Context, std IO, args []string) error {
	var (
		dflags  deviceFlags
		once    bool
		timeout time.Duration
		reach   time.Duration
		verbose bool
	)
	fs := newFlags(std, "sync", "outpost sync --once [--config FILE] [--broker URL] [--data-dir DIR]", syncExamples)
	dflags.register(fs, "broker", "device-id", "daily-budget", "batch", "ack-timeout", "hub-key")
	fs.BoolVar(&once, "once", false, "drain the outbox now and exit (the daemon syncs continuously)")
	fs.DurationVar(&timeout, "timeout", 0, "give up after this long (0 = until drained or interrupted)")
	fs.DurationVar(&reach, "connect-timeout", time.Minute, "give up when the broker cannot be reached at all for this long (0 = keep trying)")
	fs.BoolVarP(&verbose, "verbose", "v", false, "log connections and retries")
	if err := parse(fs, args); err != nil {
		return err
	}
	if !once {
		return usagef("continuous sync runs in the daemon ('outpost serve'); use --once here")
	}
	cfg, _, err := dflags.config()
	if err != nil {
		return err
	}
	if cfg.Broker == "" {
		return usagef("--broker is required (or OUTPOST_BROKER, or broker in --config)")
	}
	// An empty ID is the one kept in the data dir (else the host name):
	// device.Open decides.
	if cfg.DeviceID != "" && !osync.ValidDeviceID(cfg.DeviceID) {
		return usagef("device id %q: use letters, digits, '.', '_' or '-' (set --device-id)", cfg.DeviceID)
	}
	if _, err := osync.ParseBytes(cfg.DailyBudget); err != nil {
		return usagef("--daily-budget: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		return usagef("%v", strings.TrimPrefix(err.Error(), "config: "))
	}
	dev, err := devcfg.Open(cfg, devcfg.Options{Version: Version, Logger: logTo(std.Err, verbose), NoModels: true})
	if err != nil {
		return err
	}
	defer dev.Close()
	ob, up, bud, device := dev.Outbox(), dev.Uplink(), dev.Budget(), dev.Config().DeviceID
	daily, _ := osync.ParseBytes(cfg.DailyBudget)
	bf := brokerFlags{url: cfg.Broker}
	st0, _ := ob.Stats()
	parent := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	// A broker that never answers is a config or network problem: say so
	// after --connect-timeout instead of retrying silently forever.
	ctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)
	errUnreachable := errors.New("unreachable")
	if reach > 0 {
		go func() {
			t := time.NewTimer(reach)
			defer t.Stop()
			select {
			case <-t.C:
				if up.Stats().Connects == 0 {
					cancelCause(errUnreachable)
				}
			case <-ctx.Done():
			}
		}()
	}
	stopBar := progress(std.Err, ob, st0.Count)
	start := time.Now()
	err = up.Drain(ctx)
	stopBar()
	s := up.Stats()
	st, _ := ob.Stats()
	// Only records a hub acknowledged, in a batch this run sent, count as synced.
	fmt.Fprintf(std.Out, "synced %d records in %d batches to %s as %s in %s; %s on the wire (%.0f B/record); %d left\n",
		s.Records, s.Batches, devcfg.RedactURL(bf.url), device, time.Since(start).Round(time.Millisecond), humanBytes(s.WireBytes),
		float64(s.WireBytes)/float64(max(s.Records, 1)), st.Count)
	if s.Rejected > 0 {
		fmt.Fprintf(std.Out, "rejected by the hub: %d records it could not decode (dropped; see the hub's log)\n", s.Rejected)
	}
	if s.Refused > 0 {
		fmt.Fprintf(std.Out, "refused by the hub: %d batches (their records stay on this device)\n", s.Refused)
	}
	if s.StrayAcks > 0 {
		fmt.Fprintf(std.Out, "ignored: %d acks for batches this run did not send\n", s.StrayAcks)
	}
	if bud != nil {
		fmt.Fprintf(std.Out, "budget: %s of %s used today\n", humanBytes(bud.Spent(time.Now())), humanBytes(daily))
	}
	if err != nil {
		switch {
		case context.Cause(ctx) == errUnreachable:
			return fmt.Errorf("could not connect to %s for %s (%d attempts); %d records stay queued: check --broker and the network (--connect-timeout 0 keeps trying)",
				devcfg.RedactURL(bf.url), reach, s.ConnectFails, st.Count)
		case parent.Err() != nil && errors.Is(parent.Err(), context.Canceled):
			return fmt.Errorf("interrupted; %d records stay queued in %s (nothing is lost)", st.Count, cfg.DataDir)
		case errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("timed out after %s with %d records left (are the broker and collector reachable?)", timeout, st.Count)
		}
		return err
	}
	return nil
}

// progress draws a bar on a terminal while the outbox drains.
func progress(w io.Writer, ob *outbox.Outbox, total int64) func() {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || total == 0 {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			st, _ := ob.Stats()
			sent := max(total-st.Count, 0)
			n := int(30 * sent / total)
			fmt.Fprintf(w, "\r[%s%s] %d/%d", strings.Repeat("#", n), strings.Repeat(".", 30-n), sent, total)
			select {
			case <-stop:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(stop); <-done }
}
