package cli

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	osync "github.com/outpost-edge/outpost/sync"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/httpguard"
	"github.com/spf13/pflag"
)

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

// collectOpts: what a collect subcommand was asked, beyond the hub.Config
// its flags fill.
type collectOpts struct {
	cfg         hub.Config
	args        []string // after the subcommand
	format, out string
	reviewed    bool
	verbose     bool
	device      string
	deviceKey   string
	passwd      string
	to          []string
	chunk       int
	printConfig bool
}

// collectSub is one collect subcommand: the flags it takes (a flag of
// another is a usage error naming it: `collect acl --chunk-size 5` exited
// 0 when one FlagSet served all nine) and what it does.
type collectSub struct {
	usage string
	flags []string
	run   func(ctx context.Context, std IO, o *collectOpts) error
}

var (
	storeFlags  = []string{"config", "data-dir", "store", "name", "verbose"}
	brokerNames = []string{"broker", "username", "password", "ca-file", "cert-file", "key-file"}
)

func collectSubs() map[string]collectSub {
	with := func(sets ...[]string) []string { return slices.Concat(sets...) }
	return map[string]collectSub{
		"": {"outpost collect [--config hub.json] [--data-dir DIR | --store postgres://…] --broker URL [--listen ADDR]",
			with(storeFlags, []string{"key", "registry", "advice", "packages", "share-group", "commits", "listen", "token", "print-config"}, brokerNames), runHub},
		"export": {"outpost collect export [--format jsonl|csv] | --reviewed --out DIR  [--data-dir DIR | --store URL]",
			with(storeFlags, []string{"format", "out", "reviewed"}), collectExport},
		"devices": {"outpost collect devices [--data-dir DIR | --store URL]", storeFlags, collectDevices},
		"migrate": {"outpost collect migrate --store postgres://…", storeFlags, collectMigrate},
		"import": {"outpost collect import PATH... [--data-dir DIR | --store URL] [--key FILE]",
			with(storeFlags, []string{"key", "registry"}), collectImportCmd},
		"enroll": {"outpost collect enroll --device ID --device-key ed25519:… [--data-dir DIR | --store URL]",
			with(storeFlags, []string{"device", "device-key"}), collectEnroll},
		"acl": {"outpost collect acl [--hub-user hub]", []string{"config", "hub-user"}, func(_ context.Context, std IO, o *collectOpts) error {
			fmt.Fprint(std.Out, hub.MosquittoACL(o.cfg.HubUser))
			return nil
		}},
		"provision": {"outpost collect provision --device ID [--passwd-file FILE] [--broker URL] [--key FILE]",
			[]string{"config", "data-dir", "key", "broker", "device", "passwd-file", "hub-user"}, collectProvision},
		"revoke":     {"outpost collect revoke --device ID --passwd-file FILE", []string{"config", "device", "passwd-file"}, collectRevoke},
		"dictionary": {"outpost collect dictionary --out FILE", []string{"config", "out"}, collectDictionary},
		"models": {"outpost collect models publish --to TARGETS FILE.opkg | models list",
			[]string{"config", "data-dir", "packages", "registry", "to", "chunk-size"}, func(_ context.Context, std IO, o *collectOpts) error {
				reg, err := o.cfg.LoadRegistry()
				if err != nil {
					return err
				}
				return collectModels(std, o.cfg.PackagesDir(), reg, o.args, o.to, o.chunk)
			}},
	}
}

// collectFlagSet declares every collect flag once, bound to o, with
// defaults from the config file and environment already in o.cfg; the
// secrets' defaults stay out of --help.
func collectFlagSet(o *collectOpts, secret *struct{ password, token string }) *pflag.FlagSet {
	c := &o.cfg
	fs := pflag.NewFlagSet("collect", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.String("config", "", `hub config file, JSON keyed by these flags' names ({"data-dir": …, "broker": …}); environment and flags override it (env OUTPOST_HUB_CONFIG)`)
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "hub data directory: collector.db, hub.key, packages/ (env OUTPOST_DATA_DIR; default "+defaultDataDirDoc+")")
	fs.StringVar(&c.Store, "store", c.Store, "where results are kept: postgres://… (several collectors may share it), or empty for collector.db in --data-dir (env OUTPOST_HUB_STORE)")
	fs.StringVar(&c.Name, "name", c.Name, "this collector's name among those sharing a PostgreSQL store (default: the host name)")
	fs.BoolVarP(&o.verbose, "verbose", "v", true, "log connections and rejected messages")
	fs.StringVar(&c.Key, "key", c.Key, "the hub's private signing key file (default: hub.key in --data-dir, made on first use); devices pin its public key (env OUTPOST_HUB_SIGNING_KEY)")
	fs.StringVar(&c.Registry, "registry", c.Registry, `device registry for the hub page: JSON {"device-id": {"name": …, "region": …, "lat": …, "lon": …}}`)
	fs.StringVar(&c.Advice, "advice", c.Advice, "the model's advice.json that regional outbreak warnings quote (env OUTPOST_HUB_ADVICE)")
	fs.StringVar(&c.Packages, "packages", c.Packages, "model packages published to devices (default: packages/ in --data-dir)")
	fs.StringVar(&c.ShareGroup, "share-group", c.ShareGroup, "subscribe to results as $share/GROUP/…: collectors in one group split the load")
	fs.IntVar(&c.Commits, "commits", c.Commits, "commit groups in flight at once: the collector reads and commits the next while one waits on the store (default 4)")
	fs.StringVar(&c.Listen, "listen", c.Listen, "serve the hub page and API here (/, /healthz, /v1/…, /metrics); off loopback a --token is required")
	fs.StringVar(&secret.token, "token", "", "bearer token for the page and API (prefer env OUTPOST_HUB_TOKEN or the config file)")
	fs.BoolVar(&o.printConfig, "print-config", false, "print the config in effect (file < environment < flags), secrets masked, and exit")
	fs.StringVar(&c.Broker, "broker", c.Broker, "MQTT broker URL, comma-separated for a cluster: tcp://host:1883, ssl://host:8883 (env OUTPOST_BROKER)")
	fs.StringVar(&c.Username, "username", c.Username, "MQTT username (env OUTPOST_MQTT_USERNAME)")
	fs.StringVar(&secret.password, "password", "", "MQTT password (prefer env OUTPOST_MQTT_PASSWORD: flags show in ps)")
	fs.StringVar(&c.CAFile, "ca-file", c.CAFile, "PEM CA bundle for ssl:// brokers (env OUTPOST_MQTT_CA)")
	fs.StringVar(&c.CertFile, "cert-file", c.CertFile, "client certificate for mutual TLS (env OUTPOST_MQTT_CERT)")
	fs.StringVar(&c.KeyFile, "key-file", c.KeyFile, "client key for mutual TLS (env OUTPOST_MQTT_KEY)")
	fs.StringVar(&o.format, "format", "jsonl", "jsonl or csv")
	fs.Lookup("store").DefValue = hub.RedactURL(c.Store) // --help shows defaults: no database password in it
	fs.StringVar(&o.out, "out", "", "export --reviewed: the folder to write; dictionary: the file")
	fs.BoolVar(&o.reviewed, "reviewed", false, "reviewed photos and recordings as training data, DIR/<label>/… and reviews.csv (with --out DIR)")
	fs.StringVar(&o.device, "device", "", "the device ID")
	fs.StringVar(&o.deviceKey, "device-key", "", "the device's public key (ed25519:…, as its `outpost status` shows), replacing the one enrolled")
	fs.StringVar(&o.passwd, "passwd-file", "", "the mosquitto password file (provision creates it if missing)")
	fs.StringVar(&c.HubUser, "hub-user", cmp.Or(c.HubUser, "hub"), "the broker user collectors log in as")
	fs.StringSliceVar(&o.to, "to", nil, "device IDs, registry regions, or all (comma-separated)")
	fs.IntVar(&o.chunk, "chunk-size", osync.DefaultChunk, "bytes per chunk devices fetch (1 KiB–1 MiB)")
	return fs
}

// runCollect is `outpost collect [SUBCOMMAND]`: with none it runs the hub
// (hub.OpenServer, the same assembly `serve --demo` uses).
func runCollect(ctx context.Context, std IO, args []string) error {
	subs := collectSubs()
	name := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	sub, ok := subs[name]
	if !ok {
		return usagef("unknown collect command %q (want export, devices, import, enroll, migrate, models, acl, provision, revoke or dictionary; none runs the hub)", name)
	}
	// The config file comes first (file < environment < flags): find it
	// before the flags take their defaults from it.
	var probe collectOpts
	var junk struct{ password, token string }
	pre := collectFlagSet(&probe, &junk)
	pre.ParseErrorsAllowlist.UnknownFlags = true
	_ = pre.Parse(args)
	confFile, _ := pre.GetString("config")
	if confFile == "" {
		confFile = os.Getenv("OUTPOST_HUB_CONFIG")
	}
	o := &collectOpts{}
	if confFile != "" {
		c, err := hub.LoadConfig(confFile)
		if err != nil {
			return usagef("collect --config: %v", err)
		}
		o.cfg = c
	}
	o.cfg.Env(os.Getenv)
	var secret struct{ password, token string }
	all := collectFlagSet(o, &secret)
	// Its own flags only, in --help and in what it accepts.
	fs := newFlags(std, "collect "+name, sub.usage, collectExamples)
	for _, f := range sub.flags {
		fs.AddFlag(all.Lookup(f))
	}
	if err := all.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.Usage()
			return err
		}
		return usagef("collect %s: %v", name, err)
	}
	var bad []string
	all.Visit(func(f *pflag.Flag) {
		if !slices.Contains(sub.flags, f.Name) {
			bad = append(bad, "--"+f.Name)
		}
	})
	if len(bad) > 0 {
		what := name
		if what == "" {
			what = "(running the hub)"
		}
		return usagef("collect %s does not take %s (its flags: --%s)", what, strings.Join(bad, ", "), strings.Join(sub.flags, ", --"))
	}
	if all.Changed("password") {
		o.cfg.Password = secret.password
	}
	if all.Changed("token") {
		o.cfg.Token = secret.token
	}
	if o.cfg.DataDir == "" {
		o.cfg.DataDir = (&dataFlags{}).path() // $STATE_DIRECTORY under systemd
	}
	o.args = all.Args()
	if name != "import" && name != "models" && len(o.args) > 0 {
		return usagef("collect %s takes no arguments, got %q (a subcommand comes first: collect export --data-dir DIR)", name, o.args)
	}
	o.cfg.Logger = logTo(std.Err, o.verbose)
	return sub.run(ctx, std, o)
}

// runHub runs the hub until ctx ends.
func runHub(ctx context.Context, std IO, o *collectOpts) error {
	if o.printConfig {
		b, _ := json.MarshalIndent(o.cfg.Masked(), "", "  ")
		fmt.Fprintf(std.Out, "%s\n", b)
		return nil
	}
	if o.cfg.Broker == "" {
		return usagef("collect needs --broker (or OUTPOST_BROKER, or \"broker\" in --config)")
	}
	if o.cfg.Listen != "" {
		if host, _, err := net.SplitHostPort(o.cfg.Listen); err != nil {
			return usagef("--listen %q is not host:port", o.cfg.Listen)
		} else if o.cfg.Token == "" && !httpguard.IsLoopback(host) {
			return usagef("--listen %s is reachable from other machines: set --token (or OUTPOST_HUB_TOKEN)", o.cfg.Listen)
		}
	}
	srv, err := hub.OpenServer(ctx, o.cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for its store
		}
		return err
	}
	defer srv.Close()
	if a := srv.Addr(); a != "" {
		fmt.Fprintf(std.Err, "hub page and API on http://%s/ (a browser signs in with the token at /login; healthz, v1/…, metrics)\n", a)
	}
	c := srv.Collector()
	fmt.Fprintf(std.Err, "collecting from %s into %s as MQTT client %s (Ctrl-C stops)\n", hub.RedactURL(o.cfg.Broker), srv.Where(), c.ClientID())
	err = srv.Run(ctx)
	if errors.Is(err, context.Canceled) {
		fmt.Fprintf(std.Err, "stopped: %+v\n", c.Stats())
		return nil
	}
	return err
}

// offlineHub opens the store for a one-shot subcommand. locked: a running
// hub holds the embedded store, and the caller goes through its socket.
func offlineHub(ctx context.Context, o *collectOpts, mustExist bool) (c *hub.Collector, locked bool, err error) {
	st, _, err := o.cfg.OpenStore(ctx, mustExist)
	if errors.Is(err, hub.ErrLocked) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	reg, err := o.cfg.LoadRegistry()
	if err != nil {
		st.Close()
		return nil, false, err
	}
	c, err = hub.New(st, hub.CollectorOptions{Logger: o.cfg.Logger, Registry: reg})
	if err != nil {
		st.Close()
		return nil, false, err
	}
	return c, false, nil
}

func collectExport(ctx context.Context, std IO, o *collectOpts) error {
	if o.reviewed && o.out == "" {
		return usagef("collect export --reviewed needs --out DIR")
	}
	if !o.reviewed && o.format != "jsonl" && o.format != "csv" {
		return usagef("--format must be jsonl or csv")
	}
	c, locked, err := offlineHub(ctx, o, true)
	switch {
	case err != nil:
		return err
	case locked && o.reviewed:
		return exportReviewedViaSocket(ctx, std, o.cfg.SocketPath(), o.out)
	case locked:
		return collectViaSocket(ctx, std, o.cfg.SocketPath(), "export", o.format)
	}
	defer c.Close()
	if o.reviewed {
		n, without, err := hub.ExportReviewed(ctx, c.Store(), o.out)
		if err == nil {
			fmt.Fprintf(std.Err, "exported %d reviewed photos/recordings to %s (by label, with reviews.csv); %d reviews had no evidence\n", n, o.out, without)
		}
		return err
	}
	var n int
	if o.format == "csv" {
		reg, _ := o.cfg.LoadRegistry() // offlineHub read it already
		n, err = hub.ExportCSV(ctx, c.Store(), reg, std.Out)
	} else {
		n, err = hub.ExportJSONL(ctx, c.Store(), std.Out)
	}
	if err == nil {
		fmt.Fprintf(std.Err, "exported %d results\n", n)
	}
	return err
}

func collectDevices(ctx context.Context, std IO, o *collectOpts) error {
	c, locked, err := offlineHub(ctx, o, true)
	if err != nil {
		return err
	}
	if locked {
		return collectViaSocket(ctx, std, o.cfg.SocketPath(), "devices", "")
	}
	defer c.Close()
	devs, err := c.Devices()
	if err != nil {
		return err
	}
	return printDevices(std.Out, devs)
}

func collectMigrate(ctx context.Context, std IO, o *collectOpts) error {
	st, where, err := o.cfg.OpenStore(ctx, true)
	if err != nil {
		return err
	}
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

func collectImportCmd(ctx context.Context, std IO, o *collectOpts) error {
	if len(o.args) == 0 {
		return usagef("collect import PATH... (bundle files or folders holding them)")
	}
	c, locked, err := offlineHub(ctx, o, false)
	if err != nil {
		return err
	}
	if locked {
		// The running hub imports: the CLI streams each bundle to its
		// socket and writes the receipt beside it (no need to stop it).
		return importViaSocket(ctx, std, o.cfg.SocketPath(), o.args)
	}
	defer c.Close()
	key, err := o.cfg.SigningKey(o.cfg.Logger)
	if err != nil {
		return err
	}
	reg, _ := o.cfg.LoadRegistry() // offlineHub loaded it once already
	return collectImport(ctx, std, c.Store(), key, reg, o.args)
}

func collectEnroll(ctx context.Context, std IO, o *collectOpts) error {
	pub, err := osync.ParsePublicKey(o.deviceKey)
	if o.device == "" || err != nil {
		return usagef("collect enroll --device ID --device-key ed25519:… (%v)", err)
	}
	st, _, err := o.cfg.OpenStore(ctx, false)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := hub.SetDeviceKey(ctx, st, o.device, pub, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(std.Err, "enrolled %s with key %s: its batches and bundles signed by any other key are refused (restart running collectors)\n", o.device, osync.Fingerprint(pub))
	return nil
}

func collectProvision(_ context.Context, std IO, o *collectOpts) error {
	key, err := o.cfg.SigningKey(o.cfg.Logger)
	if err != nil {
		return err
	}
	return provision(std, o.device, o.cfg.HubUser, o.passwd, o.cfg.Broker, key)
}

func collectRevoke(_ context.Context, std IO, o *collectOpts) error {
	if o.device == "" || o.passwd == "" {
		return usagef("collect revoke --device ID --passwd-file FILE")
	}
	found, err := hub.RevokePassword(o.passwd, o.device)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("collect revoke: %s has no login in %s", o.device, o.passwd)
	}
	fmt.Fprintf(std.Err, "removed %s from %s; reload mosquitto (kill -HUP) and it can no longer log in\n", o.device, o.passwd)
	return nil
}

// collectDictionary writes the wire's zstd dictionary, for hubs in other
// languages (docs/PROTOCOL.md); it needs no store.
func collectDictionary(_ context.Context, std IO, o *collectOpts) error {
	if o.out == "" {
		return usagef("collect dictionary needs --out FILE")
	}
	if _, err := atomicfile.Write(o.out, 0o644, func(w io.Writer) (int, error) { return w.Write(osync.DictionaryV1()) }); err != nil {
		return err
	}
	fmt.Fprintf(std.Err, "wrote zstd dictionary v1 (ID 0x6f700001, sha256 %s) to %s\n", osync.DictV1SHA256, o.out)
	return nil
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
func collectModels(std IO, dir string, reg hub.Registry, args, to []string, chunk int) error {
	shelf, err := hub.OpenShelf(dir)
	if err != nil {
		return err
	}
	switch {
	case len(args) == 2 && args[0] == "publish":
		if chunk < osync.MinChunk || chunk > osync.MaxChunk {
			return usagef("--chunk-size %d: want %d to %d", chunk, osync.MinChunk, osync.MaxChunk)
		}
		warnUnknownTargets(std.Err, reg, to)
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

// warnUnknownTargets says which publish targets the registry does not
// know: a misspelt region ("Kisumo") is offered to no device, silently.
// Not refused: a device may be missing from the registry.
func warnUnknownTargets(w io.Writer, reg hub.Registry, to []string) {
	if len(reg) == 0 {
		return
	}
	regions := map[string]bool{}
	for _, e := range reg {
		regions[e.Region] = true
	}
	for _, t := range to {
		if _, device := reg[t]; t != "all" && !device && !regions[t] {
			fmt.Fprintf(w, "note: --to %q is neither a device nor a region in the registry; only a device with that ID will be offered it\n", t)
		}
	}
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
