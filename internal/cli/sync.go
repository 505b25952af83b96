package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/atomicfile"
	devcfg "github.com/outpost-edge/outpost/internal/device"
	"github.com/outpost-edge/outpost/internal/httpguard"
	"github.com/outpost-edge/outpost/internal/safefile"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

// brokerFlags are shared by sync and collect.
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

func (b *brokerFlags) dialer(clean bool) (osync.Dialer, error) {
	if b.url == "" {
		return nil, usagef("--broker is required (or OUTPOST_BROKER)")
	}
	pass := b.pass
	if pass == "" {
		pass = os.Getenv("OUTPOST_MQTT_PASSWORD")
	}
	return mqtt.Dialer(mqtt.Options{Broker: b.url, Username: b.user, Password: pass, CAFile: b.ca,
		CertFile: b.cert, KeyFile: b.key, CleanSession: clean})
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

const collectExamples = `  outpost collect --broker tcp://localhost:1883 --data-dir /var/lib/outpost-hub
  outpost collect export --data-dir /var/lib/outpost-hub --format csv > results.csv
  outpost collect devices --data-dir /var/lib/outpost-hub
  outpost collect --store postgres://hub@db/outpost --name hub-a --share-group hubs --broker tcp://broker:1883
  outpost collect migrate --store postgres://hub@db/outpost     # apply schema migrations and exit
  outpost collect acl > /etc/mosquitto/outpost.acl              # who may publish and read what
  outpost collect provision --device kiosk-12 --passwd-file /etc/mosquitto/passwd --key hub.key
  outpost collect models publish --to all crop-disease-7.opkg   # offer a signed model package (docs/UPDATES.md)
  outpost collect models publish --to kiosk-12,Kisumu crop-disease-7.opkg
  outpost collect models list
  outpost collect export --reviewed --out reviewed/                # photos an expert labelled, for training
  outpost collect import /media/usb --key hub.key                  # bundles from a stick; receipts written beside them
  outpost collect enroll --device kiosk-12 --device-key ed25519:…   # a reinstalled device's new key (its outpost status shows it)
  outpost collect revoke --device kiosk-12 --passwd-file /etc/mosquitto/passwd  # a lost device: no more logins
`

// collectFlags: the flags each collect subcommand reads; any other flag
// given is refused by name (`collect acl --chunk-size 5` exited 0).
var collectFlags = func() map[string][]string {
	store := []string{"data-dir", "store", "name", "key", "verbose"}
	broker := []string{"broker", "username", "password", "ca-file", "cert-file", "key-file"}
	join := func(sets ...[]string) []string {
		var all []string
		for _, s := range sets {
			all = append(all, s...)
		}
		return all
	}
	return map[string][]string{
		"":           join(store, broker, []string{"listen", "token", "registry", "packages", "share-group", "advice"}),
		"export":     join(store, []string{"format", "out", "reviewed"}),
		"devices":    store,
		"migrate":    store,
		"import":     join(store, []string{"registry"}),
		"enroll":     join(store, []string{"device", "device-key"}),
		"acl":        {"hub-user"},
		"provision":  join(broker, []string{"device", "passwd-file", "hub-user", "key", "data-dir"}),
		"revoke":     {"device", "passwd-file"},
		"dictionary": {"out", "verbose"},
		"models":     join(store, []string{"to", "chunk-size", "packages", "registry"}),
	}
}()

// hubEnv: the environment variables that set collect flags; a config
// file's value yields to them, as on the device (file < environment < flags).
var hubEnv = map[string][]string{
	"data-dir": {"OUTPOST_DATA_DIR"}, "broker": {"OUTPOST_BROKER"}, "username": {"OUTPOST_MQTT_USERNAME"},
	"password": {"OUTPOST_MQTT_PASSWORD"}, "ca-file": {"OUTPOST_MQTT_CA"}, "cert-file": {"OUTPOST_MQTT_CERT"},
	"key-file": {"OUTPOST_MQTT_KEY"}, "store": {"OUTPOST_HUB_STORE"}, "key": {"OUTPOST_HUB_SIGNING_KEY", "OUTPOST_HUB_KEY"},
	"token": {"OUTPOST_HUB_TOKEN"}, "advice": {"OUTPOST_HUB_ADVICE"},
}

// applyHubConfig sets, from a JSON file of flag names, every flag neither
// given on the command line nor set by the environment. An unknown key is
// refused by name.
func applyHubConfig(fs *pflag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	b, err := safefile.ReadFile(path, 1<<20)
	if err != nil {
		return fmt.Errorf("collect --config: %w", err)
	}
	var conf map[string]any
	if err := json.Unmarshal(b, &conf); err != nil {
		return usagef("collect --config %s: %v", path, err)
	}
	keys := make([]string, 0, len(conf))
	for k := range conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return usagef("collect --config %s: unknown key %q (keys are the flags of outpost collect --help)", path, k)
		}
		// One file serves every subcommand: a key this one does not read
		// is left alone.
		if fs.Changed(k) || !slices.Contains(collectFlags[fs.Arg(0)], k) ||
			slices.ContainsFunc(hubEnv[k], func(e string) bool { return os.Getenv(e) != "" }) {
			continue
		}
		var val string
		switch v := conf[k].(type) {
		case string:
			val = v
		case bool:
			val = strconv.FormatBool(v)
		case float64:
			val = strconv.FormatFloat(v, 'f', -1, 64)
		case []any:
			var parts []string
			for _, x := range v {
				parts = append(parts, fmt.Sprint(x))
			}
			val = strings.Join(parts, ",")
		default:
			return usagef("collect --config %s: %q: want a string, number, boolean or list", path, k)
		}
		if err := fs.Set(k, val); err != nil {
			return usagef("collect --config %s: %q: %v", path, k, err)
		}
	}
	return nil
}

// collectFlagsFit refuses a flag the subcommand does not read.
func collectFlagsFit(fs *pflag.FlagSet) error {
	allowed, ok := collectFlags[fs.Arg(0)]
	if !ok {
		return nil // an unknown subcommand is reported where it is dispatched
	}
	var bad []string
	fs.Visit(func(f *pflag.Flag) {
		if f.Name != "config" && !slices.Contains(allowed, f.Name) {
			bad = append(bad, "--"+f.Name)
		}
	})
	if len(bad) == 0 {
		return nil
	}
	sub := fs.Arg(0)
	if sub == "" {
		sub = "(running the collector)"
	}
	return usagef("collect %s does not take %s (its flags: --%s)", sub, strings.Join(bad, ", "), strings.Join(allowed, ", --"))
}

func runCollect(ctx context.Context, std IO, args []string) error {
	var (
		df       dataFlags
		bf       brokerFlags
		format   string
		dictOut  string
		verbose  bool
		store    string
		name     string
		share    string
		keyFile  string
		provDev  string
		passwd   string
		hubUser  string
		listen   string
		token    string
		regFile  string
		advFile  string
		pkgDir   string
		devKey   string
		to       []string
		chunk    int
		reviewed bool
	)
	fs := newFlags(std, "collect", "outpost collect [export|devices|migrate|acl|provision] [--data-dir DIR | --store postgres://…] [--broker URL]", collectExamples)
	fs.StringVar(&df.dir, "data-dir", "", "hub data directory holding collector.db (env OUTPOST_DATA_DIR; default ./outpost-data)")
	bf.register(fs)
	fs.StringVar(&format, "format", "jsonl", "export: jsonl or csv")
	fs.StringVar(&dictOut, "out", "", "dictionary: write the zstd dictionary to this file; export --reviewed: the folder to write")
	fs.BoolVar(&reviewed, "reviewed", false, "export: reviewed photos and recordings as training data, DIR/<label>/… and reviews.csv (with --out DIR)")
	fs.BoolVarP(&verbose, "verbose", "v", true, "log connections and rejected messages")
	fs.StringVar(&store, "store", os.Getenv("OUTPOST_HUB_STORE"), "where results are kept: postgres://… (several collectors may share it), or empty for collector.db in --data-dir (env OUTPOST_HUB_STORE)")
	fs.StringVar(&name, "name", "", "this collector's name among those sharing a PostgreSQL store (default: the host name); its MQTT client id is kept under it")
	// OUTPOST_HUB_SIGNING_KEY (the hub's private key file) is one letter
	// away from no device variable; OUTPOST_HUB_KEY is still read.
	signing := os.Getenv("OUTPOST_HUB_SIGNING_KEY")
	if signing == "" {
		signing = os.Getenv("OUTPOST_HUB_KEY")
	}
	fs.StringVar(&keyFile, "key", signing, "the hub's private signing key file (default: hub.key in --data-dir, made on first use); devices pin its public key in hub_keys (env OUTPOST_HUB_SIGNING_KEY)")
	fs.StringVar(&listen, "listen", "", "serve the hub's HTTP API here (GET /healthz, /v1/devices, /v1/stats, /v1/export, /metrics); off loopback a --token is required")
	fs.StringVar(&regFile, "registry", "", `device registry for the hub page: JSON {"device-id": {"name": …, "region": …, "lat": …, "lon": …}}`)
	fs.StringVar(&advFile, "advice", os.Getenv("OUTPOST_HUB_ADVICE"), "the model's advice file (advice.json: label -> language -> text) that regional outbreak warnings quote (env OUTPOST_HUB_ADVICE; default: the disease's name only)")
	fs.StringVar(&token, "token", os.Getenv("OUTPOST_HUB_TOKEN"), "bearer token for the HTTP API (prefer env OUTPOST_HUB_TOKEN)")
	fs.StringVar(&provDev, "device", "", "provision: the device ID to make broker credentials for; enroll: the device whose key to set")
	fs.StringVar(&devKey, "device-key", "", "enroll: the device's public key (ed25519:…, as its `outpost status` shows), replacing the one enrolled")
	fs.StringVar(&passwd, "passwd-file", "", "provision: add the credentials to this mosquitto password file (created if missing)")
	fs.StringVar(&hubUser, "hub-user", "hub", "acl/provision: the broker user collectors log in as")
	fs.StringVar(&pkgDir, "packages", "", "model packages published to devices (default: packages/ in --data-dir)")
	fs.StringSliceVar(&to, "to", nil, "models publish: device IDs, registry regions, or all (comma-separated)")
	fs.IntVar(&chunk, "chunk-size", osync.DefaultChunk, "models publish: bytes per chunk devices fetch (1 KiB–1 MiB)")
	fs.StringVar(&share, "share-group", "", "subscribe to results as MQTT shared subscription $share/GROUP/…: collectors in one group split the load")
	var confFile string
	fs.StringVar(&confFile, "config", os.Getenv("OUTPOST_HUB_CONFIG"), `JSON config, keys named as these flags ({"data-dir": …, "broker": …, "listen": …}); environment and flags override it (env OUTPOST_HUB_CONFIG)`)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := collectFlagsFit(fs); err != nil {
		return err
	}
	if err := applyHubConfig(fs, confFile); err != nil {
		return err
	}
	if fs.Arg(0) == "acl" {
		fmt.Fprint(std.Out, hub.MosquittoACL(hubUser))
		return nil
	}
	if fs.Arg(0) == "revoke" {
		if provDev == "" || passwd == "" {
			return usagef("collect revoke --device ID --passwd-file FILE")
		}
		found, err := hub.RevokePassword(passwd, provDev)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("collect revoke: %s has no login in %s", provDev, passwd)
		}
		fmt.Fprintf(std.Err, "removed %s from %s; reload mosquitto (kill -HUP) and it can no longer log in\n", provDev, passwd)
		return nil
	}
	if fs.Arg(0) == "provision" {
		key, err := hubKey(std, df, keyFile)
		if err != nil {
			return err
		}
		return provision(std, provDev, hubUser, passwd, bf.url, key)
	}
	if fs.Arg(0) == "dictionary" {
		// For hubs in other languages (docs/PROTOCOL.md); needs no database.
		if dictOut == "" {
			return usagef("collect dictionary needs --out FILE")
		}
		if _, err := atomicfile.Write(dictOut, 0o644, func(w io.Writer) (int, error) { return w.Write(osync.DictionaryV1()) }); err != nil {
			return err
		}
		fmt.Fprintf(std.Err, "wrote zstd dictionary v1 (ID 0x6f700001, sha256 %s) to %s\n", osync.DictV1SHA256, dictOut)
		return nil
	}
	if pkgDir == "" {
		pkgDir = filepath.Join(df.path(), "packages")
	}
	if fs.Arg(0) == "models" {
		return collectModels(std, pkgDir, fs.Args()[1:], to, chunk)
	}
	// The collector's HTTP side listens before its store opens: while it
	// waits for PostgreSQL, /healthz answers 503 with the reason.
	var late *lateHandler
	if fs.Arg(0) == "" && listen != "" {
		host, _, err := net.SplitHostPort(listen)
		if err != nil {
			return usagef("--listen %q is not host:port", listen)
		}
		if token == "" && !httpguard.IsLoopback(host) {
			return usagef("--listen %s is reachable from other machines: set --token (or OUTPOST_HUB_TOKEN)", listen)
		}
		l, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("collect: listen %s: %w", listen, err)
		}
		late = &lateHandler{}
		late.waiting("opening the store")
		srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: late}
		go srv.Serve(l)
		defer srv.Close()
		fmt.Fprintf(std.Err, "hub page and API on http://%s/ (a browser signs in with the token at /login; healthz, v1/…, metrics)\n", l.Addr())
	}
	st, where, err := openHubStore(ctx, store, name, df, fs.Arg(0) != "" && fs.Arg(0) != "import" && fs.Arg(0) != "enroll")
	if fs.Arg(0) == "" && store != "" {
		// The collector itself waits for its database (it came up before
		// PostgreSQL, or PostgreSQL is restarting): it exited at once and
		// stayed down before. One-shot subcommands still fail fast.
		bo := osync.Backoff{Min: time.Second, Max: 30 * time.Second}
		for err != nil && !errors.Is(err, hub.ErrLocked) && ctx.Err() == nil {
			wait := bo.Next()
			fmt.Fprintf(std.Err, "collect: store %s not reachable (%v); retrying in %s\n", devcfg.RedactURL(store), err, wait.Round(time.Second))
			if late != nil {
				late.waiting(fmt.Sprintf("store %s not reachable: %v", devcfg.RedactURL(store), err))
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			st, where, err = openHubStore(ctx, store, name, df, false)
		}
	}
	sock := filepath.Join(df.path(), hub.SocketFile)
	if errors.Is(err, hub.ErrLocked) && (fs.Arg(0) == "export" && !reviewed || fs.Arg(0) == "devices") {
		// A collector holds the embedded store: ask it over its socket.
		return collectViaSocket(ctx, std, sock, fs.Arg(0), format)
	}
	if errors.Is(err, hub.ErrLocked) && fs.Arg(0) == "export" && reviewed {
		if dictOut == "" {
			return usagef("collect export --reviewed needs --out DIR")
		}
		return exportReviewedViaSocket(ctx, std, sock, dictOut)
	}
	if errors.Is(err, hub.ErrLocked) && fs.Arg(0) == "import" {
		// The running collector imports: the CLI streams each bundle to
		// its socket and writes the receipt beside it (no need to stop it).
		return importViaSocket(ctx, std, sock, fs.Args()[1:])
	}
	if err != nil {
		return err
	}
	if fs.Arg(0) == "migrate" {
		defer st.Close()
		pg, ok := st.(*hub.PGStore)
		if !ok {
			return usagef("collect migrate is for a PostgreSQL --store (the embedded store needs none)")
		}
		v, applied, err := pg.SchemaVersion(ctx) // opening applied what was missing
		if err != nil {
			return err
		}
		fmt.Fprintf(std.Err, "schema of %s at version %d (applied now: %v)\n", where, v, applied)
		return nil
	}
	key, err := hubKey(std, df, keyFile)
	if err != nil {
		st.Close()
		return err
	}
	var registry hub.Registry
	if regFile != "" {
		if registry, err = hub.LoadRegistry(regFile); err != nil {
			st.Close()
			return err
		}
	}
	var advice map[string]map[string]string
	if advFile != "" {
		if err := safefile.LoadJSON(advFile, 1<<20, &advice); err != nil {
			st.Close()
			return fmt.Errorf("collect --advice: %w", err)
		}
	}
	var shelf *hub.Shelf
	if fs.Arg(0) == "" {
		if shelf, err = hub.OpenShelf(pkgDir); err != nil {
			st.Close()
			return err
		}
	}
	var probe func(context.Context) error
	if bf.url != "" {
		probe, _ = mqtt.Prober(bf.url) // a URL it cannot probe only loses the shortcut
	}
	c, err := hub.New(st, hub.CollectorOptions{Logger: logTo(std.Err, verbose), ShareGroup: share, Key: key, Registry: registry, Shelf: shelf, Probe: probe, WarningAdvice: advice})
	if err != nil {
		st.Close()
		return err
	}
	defer c.Close()
	path := where
	switch fs.Arg(0) {
	case "import":
		if fs.NArg() < 2 {
			return usagef("collect import PATH... (bundle files or folders holding them)")
		}
		return collectImport(ctx, std, c.Store(), key, registry, fs.Args()[1:])
	case "export":
		if reviewed {
			if dictOut == "" {
				return usagef("collect export --reviewed needs --out DIR")
			}
			n, without, err := hub.ExportReviewed(ctx, c.Store(), dictOut)
			if err == nil {
				fmt.Fprintf(std.Err, "exported %d reviewed photos/recordings to %s (by label, with reviews.csv); %d reviews had no evidence\n", n, dictOut, without)
			}
			return err
		}
		var n int
		switch format {
		case "jsonl":
			n, err = hub.ExportJSONL(ctx, c.Store(), std.Out)
		case "csv":
			n, err = hub.ExportCSV(ctx, c.Store(), std.Out)
		default:
			return usagef("--format must be jsonl or csv")
		}
		if err == nil {
			fmt.Fprintf(std.Err, "exported %d results\n", n)
		}
		return err
	case "enroll":
		pub, err := osync.ParsePublicKey(devKey)
		if provDev == "" || err != nil {
			return usagef("collect enroll --device ID --device-key ed25519:… (%v)", err)
		}
		if err := hub.SetDeviceKey(ctx, c.Store(), provDev, pub, time.Now()); err != nil {
			return err
		}
		fmt.Fprintf(std.Err, "enrolled %s with key %s: its batches and bundles signed by any other key are refused (restart running collectors)\n", provDev, osync.Fingerprint(pub))
		return nil
	case "devices":
		devs, err := c.Devices()
		if err != nil {
			return err
		}
		return printDevices(std.Out, devs)
	case "":
		dial, err := bf.dialer(false)
		if err != nil {
			return err
		}
		if late != nil {
			late.ready(httpguard.Wrap(c.Handler(), httpguard.Options{
				Token: token, Fail: hub.Fail, Protected: func(p string) bool { return strings.HasPrefix(p, "/v1/") || p == "/metrics" }}))
		}
		socket := ""
		if _, embedded := st.(*hub.BoltStore); embedded {
			socket = sock // reads, imports and exports reach the held store through us
		}
		fmt.Fprintf(std.Err, "collecting from %s into %s as MQTT client %s (Ctrl-C stops)\n", devcfg.RedactURL(bf.url), path, c.ClientID())
		err = c.Serve(ctx, dial, socket)
		if errors.Is(err, context.Canceled) {
			fmt.Fprintf(std.Err, "stopped: %+v\n", c.Stats())
			return nil
		}
		return err
	}
	return usagef("unknown collect command %q (want export, devices, migrate or dictionary, or none to run)", fs.Arg(0))
}

func printDevices(w io.Writer, devs []hub.DeviceStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSTATE\tLAST SEEN\tBACKLOG\tSTORED\tDUPLICATES\tLOST (REFUSED/EVICTED/EXPIRED)\tCLOCK OFFSET\tKEY\tMODEL UPDATE")
	for _, d := range devs {
		key := d.KeyFingerprint
		if key == "" {
			key = "unsigned"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d/%d/%d\t%s\t%s\t%s\n", d.Device, d.State, d.LastSeen.Local().Format(time.RFC3339),
			d.Backlog, d.Stored, d.Duplicates, d.Refused, d.Evicted, d.Expired, (time.Duration(d.ClockOffset) * time.Millisecond).String(), key, updateText(d.Update))
	}
	return tw.Flush()
}

// updateText says where a device's latest model update stands.
func updateText(u *osync.UpdateStatus) string {
	if u == nil {
		return "-"
	}
	s := fmt.Sprintf("%s %s seq %d: %s", u.Model, u.Version, u.Seq, u.State)
	switch u.State {
	case osync.UpdateDownloading:
		s += fmt.Sprintf(" %d/%d chunks", u.Have, u.Chunks)
	case osync.UpdateRefused, osync.UpdateRolledBack:
		s += " (" + u.Reason + ")"
	}
	return s
}

// collectModels is `collect models publish|list`: the shelf of packages
// a running collector offers to devices.
func collectModels(std IO, dir string, args, to []string, chunk int) error {
	shelf, err := hub.OpenShelf(dir)
	if err != nil {
		return err
	}
	switch {
	case len(args) == 2 && args[0] == "publish":
		if chunk < osync.MinChunk || chunk > osync.MaxChunk {
			return usagef("--chunk-size %d: want %d to %d", chunk, osync.MinChunk, osync.MaxChunk)
		}
		data, err := os.ReadFile(args[1])
		if err != nil {
			return fmt.Errorf("collect models publish: %w", err)
		}
		p, err := shelf.Publish(data, to, chunk)
		if err != nil {
			return fmt.Errorf("collect models publish %s: %w", filepath.Base(args[1]), err)
		}
		o := p.Offer
		fmt.Fprintf(std.Out, "published %s %s seq %d (%d bytes, %d chunks of %d) for %s as offer %s; a running collector offers it to devices as they report in\n",
			o.Model, o.Version, o.Seq, o.Size, o.NumChunks(), o.ChunkSize, strings.Join(p.To, ","), o.ID)
		return nil
	case len(args) == 1 && args[0] == "list":
		list, err := shelf.List()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(std.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "OFFER\tMODEL\tVERSION\tSEQ\tBYTES\tTO\tPUBLISHED")
		for _, p := range list {
			o := p.Offer
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", o.ID, o.Model, o.Version, o.Seq, o.Size, strings.Join(p.To, ","), p.Published.Local().Format(time.RFC3339))
		}
		return tw.Flush()
	}
	return usagef("collect models publish --to TARGETS FILE.opkg | collect models list")
}

// importViaSocket is `collect import` while a collector holds the store.
func importViaSocket(ctx context.Context, std IO, sock string, paths []string) error {
	files, err := bundleFiles(paths)
	if err != nil {
		return err
	}
	var failed int
	for _, f := range files {
		li, out, err := hub.LocalImportFile(ctx, sock, f)
		if err != nil {
			failed++
			fmt.Fprintf(std.Err, "%v\n", err)
			continue
		}
		fmt.Fprintf(std.Out, "%s: %s, %d new, %d already here, %d rejected; receipt %s (through the running collector)\n", filepath.Base(f), li.Device, li.New, li.Duplicate, li.Rejected, out)
	}
	if failed > 0 {
		return fmt.Errorf("collect import: %d of %d bundles refused", failed, len(files))
	}
	return nil
}

// collectViaSocket serves `collect export|devices` through a running
// collector that holds the embedded store.
func collectViaSocket(ctx context.Context, std IO, sock, cmd, format string) error {
	if cmd == "export" {
		if format != "jsonl" && format != "csv" {
			return usagef("--format must be jsonl or csv")
		}
		if err := hub.LocalGet(ctx, sock, "/v1/export?format="+format, std.Out); err != nil {
			return err
		}
		fmt.Fprintf(std.Err, "exported through the running collector (%s)\n", sock)
		return nil
	}
	var buf bytes.Buffer
	if err := hub.LocalGet(ctx, sock, "/v1/devices", &buf); err != nil {
		return err
	}
	var v struct {
		Devices []hub.DeviceStatus `json:"devices"`
	}
	if err := json.Unmarshal(buf.Bytes(), &v); err != nil {
		return fmt.Errorf("collect devices: the running collector's answer: %w", err)
	}
	return printDevices(std.Out, v.Devices)
}

// provision makes broker credentials for a device (or, with --device
// equal to --hub-user, for collectors) and prints its config snippet.
func provision(std IO, device, hubUser, passwdFile, broker string, key ed25519.PrivateKey) error {
	if device == "" {
		return usagef("collect provision needs --device ID")
	}
	if device != hubUser && !osync.ValidDeviceID(device) {
		return usagef("--device %q: use 1-64 of A-Z a-z 0-9 . _ -", device)
	}
	pass := hub.NewPassword()
	if passwdFile != "" {
		if err := hub.SetPassword(passwdFile, device, pass); err != nil {
			return err
		}
		fmt.Fprintf(std.Err, "added %s to %s (reload mosquitto: kill -HUP)\n", device, passwdFile)
	} else {
		fmt.Fprintf(std.Err, "add it to the broker: mosquitto_passwd -b PASSWORD_FILE %s '%s'\n", device, pass)
	}
	cfg := map[string]any{"device_id": device, "mqtt_username": device, "mqtt_password": pass}
	if broker != "" {
		cfg["broker"] = broker
	}
	// The device pins the hub's key: it deletes only on the hub's acks and
	// shows only the hub's reviews.
	cfg["hub_keys"] = []string{osync.FormatPublicKey(key.Public().(ed25519.PublicKey))}
	if device == hubUser {
		delete(cfg, "device_id")
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	fmt.Fprintf(std.Out, "%s\n", b)
	return nil
}

// lateHandler serves the collector's HTTP API once it exists; until then
// every request (/healthz included) is 503 with what it waits for.
type lateHandler struct {
	h   atomic.Pointer[http.Handler]
	why atomic.Pointer[string]
}

func (l *lateHandler) waiting(why string) { l.why.Store(&why) }

func (l *lateHandler) ready(h http.Handler) { l.h.Store(&h) }

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := l.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	why := "starting"
	if p := l.why.Load(); p != nil {
		why = *p
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Retry-After", "5")
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintln(w, "not ready: "+why)
}

// hubKey is the hub's signing key: --key when given, else hub.key in the
// data directory, made on first use (secure by default; where it is, and
// its public key for devices' hub_keys, are said once when it is made).
func hubKey(std IO, df dataFlags, keyFile string) (ed25519.PrivateKey, error) {
	if keyFile != "" {
		return loadPrivateKey(keyFile)
	}
	path := filepath.Join(df.path(), "hub.key")
	k, created, err := osync.LoadOrCreateKey(path)
	if err != nil {
		return nil, err
	}
	if created {
		fmt.Fprintf(std.Err, "made the hub's signing key at %s (keep it secret; back it up): devices pin %s in hub_keys\n",
			path, osync.FormatPublicKey(k.Public().(ed25519.PublicKey)))
	}
	return k, nil
}

// openHubStore opens the PostgreSQL store for a postgres:// URL, else the
// embedded one in the data directory; where says which, for messages.
func openHubStore(ctx context.Context, url, name string, df dataFlags, mustExist bool) (hub.Store, string, error) {
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		st, err := hub.OpenPostgres(ctx, url, hub.PGOptions{Name: name})
		if err != nil {
			return nil, "", err
		}
		return st, redactURL(url), nil
	}
	if url != "" {
		return nil, "", usagef("--store %q: want postgres://… or nothing (the embedded store in --data-dir)", url)
	}
	path := filepath.Join(df.path(), "collector.db")
	if mustExist {
		if _, err := os.Stat(path); err != nil {
			return nil, "", fmt.Errorf("no hub database at %s (is --data-dir right?)", path)
		}
	}
	if err := os.MkdirAll(df.path(), 0o750); err != nil {
		return nil, "", err
	}
	st, err := hub.OpenBolt(path)
	return st, path, err
}

// redactURL hides a password in a connection URL.
func redactURL(s string) string {
	if u, err := neturl.Parse(s); err == nil {
		return u.Redacted()
	}
	return "postgres://…"
}

// exportReviewedViaSocket is `collect export --reviewed --out DIR` while a
// collector holds the store: it streams the export as a tar and this
// process writes the files. Every name is checked (a label folder and a
// file, or reviews.csv) and every file bounded before anything is written.
func exportReviewedViaSocket(ctx context.Context, std IO, sock, dir string) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(hub.LocalGet(ctx, sock, "/v1/export/reviewed", pw)) }()
	defer pr.Close()
	tr := tar.NewReader(pr)
	var counts struct{ Written, Without int }
	done := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("collect export --reviewed: the running collector's export: %w", err)
		}
		name := h.Name
		parts := strings.Split(name, "/")
		ok := h.Typeflag == tar.TypeReg && h.Size >= 0 && h.Size <= osync.MaxEvidenceBytes+1<<20 &&
			(name == "reviews.csv" || name == hub.ReviewedManifest || len(parts) == 2 && safePart(parts[0]) && safePart(parts[1]))
		if !ok {
			return fmt.Errorf("collect export --reviewed: the running collector sent %q (%d bytes): refused", name, h.Size)
		}
		data, err := io.ReadAll(io.LimitReader(tr, h.Size))
		if err != nil {
			return fmt.Errorf("collect export --reviewed: %s: %w", name, err)
		}
		if name == hub.ReviewedManifest {
			if err := json.Unmarshal(data, &counts); err != nil {
				return fmt.Errorf("collect export --reviewed: the export's manifest: %w", err)
			}
			done = true
			continue
		}
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := atomicfile.WriteBytes(path, data, 0o644); err != nil {
			return err
		}
	}
	if !done {
		return errors.New("collect export --reviewed: the running collector's export ended early (no manifest): run it again")
	}
	fmt.Fprintf(std.Err, "exported %d reviewed photos/recordings to %s (by label, with reviews.csv) through the running collector; %d reviews had no evidence\n", counts.Written, dir, counts.Without)
	return nil
}

// safePart: one path element the hub may name (no "..", no separators).
func safePart(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\\x00") && len(s) <= 200
}
