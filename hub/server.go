package hub

import (
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
	"strings"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/internal/httpguard"
	"github.com/outpost-edge/outpost/internal/safefile"
	osync "github.com/outpost-edge/outpost/sync"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

// Config is everything a hub is made of, as `outpost collect` and its
// config file name it (keys are the flag names). The CLI, `serve --demo`
// and the page tests all build their hub from one of these through
// OpenServer, so they cannot drift apart (they did: three assemblies).
type Config struct {
	DataDir  string `json:"data-dir,omitempty"` // holds collector.db, hub.key, packages/, collector.sock
	Store    string `json:"store,omitempty"`    // postgres://… (shared by several collectors), or "" for DataDir/collector.db
	Name     string `json:"name,omitempty"`     // this collector's name on a shared PostgreSQL store
	Key      string `json:"key,omitempty"`      // the signing key file; default DataDir/hub.key, made on first use
	Registry string `json:"registry,omitempty"` // device registry (names, regions, lat/lon) for the page
	Advice   string `json:"advice,omitempty"`   // advice.json that regional warnings quote
	Packages string `json:"packages,omitempty"` // model packages offered to devices; default DataDir/packages
	// ShareGroup subscribes to results as $share/GROUP/…: collectors in one
	// group split the devices between them.
	ShareGroup string `json:"share-group,omitempty"`
	// Commits is how many commit groups may be in flight at once (default
	// 4; 1 commits one group at a time).
	Commits int    `json:"commits,omitempty"`
	Listen  string `json:"listen,omitempty"`   // HTTP page and API; off loopback a Token is required
	HubUser string `json:"hub-user,omitempty"` // the broker login collectors use (ACL, provision); default "hub"
	Token   string `json:"token,omitempty"`

	Broker   string `json:"broker,omitempty"` // comma-separated for a cluster
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	CAFile   string `json:"ca-file,omitempty"`
	CertFile string `json:"cert-file,omitempty"`
	KeyFile  string `json:"key-file,omitempty"`

	// Not in the file: how the process hosting the hub wants it run.
	Logger *slog.Logger `json:"-"`
	// Dialer replaces the MQTT dialer Broker would make (tests).
	Dialer osync.Dialer `json:"-"`
	// Collector tunes the collector (backoffs, alert timing); the fields
	// above win over its Key, Registry, Shelf, ShareGroup and Logger.
	Collector CollectorOptions `json:"-"`
}

// Masked is the config with its secrets hidden, for --print-config and logs.
func (c Config) Masked() Config {
	if c.Password != "" {
		c.Password = "********"
	}
	if c.Token != "" {
		c.Token = "********"
	}
	c.Store = RedactURL(c.Store)
	return c
}

// LoadConfig reads a hub config file; an unknown key is refused by name
// (a misspelt "regsitry" silently ignored is a page without names).
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := safefile.ReadFile(path, 1<<20)
	if err != nil {
		return c, fmt.Errorf("hub config: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return c, fmt.Errorf("hub config %s: unknown key %s (keys are the flags of outpost collect --help)", path, f)
		}
		return c, fmt.Errorf("hub config %s: %w (keys are the flags of outpost collect --help)", path, err)
	}
	return c, nil
}

// Env sets, from the environment, every field it names; a config file's
// value yields to it (file < environment < flags, as on the device).
func (c *Config) Env(getenv func(string) string) {
	for _, e := range []struct {
		to   *string
		vars []string
	}{
		{&c.DataDir, []string{"OUTPOST_DATA_DIR"}}, {&c.Store, []string{"OUTPOST_HUB_STORE"}},
		// OUTPOST_HUB_KEY was the first name; SIGNING is one letter further
		// from the device's variables.
		{&c.Key, []string{"OUTPOST_HUB_SIGNING_KEY", "OUTPOST_HUB_KEY"}},
		{&c.Token, []string{"OUTPOST_HUB_TOKEN"}}, {&c.Advice, []string{"OUTPOST_HUB_ADVICE"}},
		{&c.Broker, []string{"OUTPOST_BROKER"}}, {&c.Username, []string{"OUTPOST_MQTT_USERNAME"}},
		{&c.Password, []string{"OUTPOST_MQTT_PASSWORD"}}, {&c.CAFile, []string{"OUTPOST_MQTT_CA"}},
		{&c.CertFile, []string{"OUTPOST_MQTT_CERT"}}, {&c.KeyFile, []string{"OUTPOST_MQTT_KEY"}},
	} {
		for _, v := range e.vars {
			if s := getenv(v); s != "" {
				*e.to = s
				break
			}
		}
	}
}

// DataPath is the data directory: DataDir, else ./outpost-data.
func (c Config) DataPath() string {
	if c.DataDir != "" {
		return c.DataDir
	}
	return "outpost-data"
}

// SocketPath is where a running hub answers local reads, imports and exports.
func (c Config) SocketPath() string { return filepath.Join(c.DataPath(), SocketFile) }

func (c Config) postgres() bool {
	return strings.HasPrefix(c.Store, "postgres://") || strings.HasPrefix(c.Store, "postgresql://")
}

// OpenStore opens the PostgreSQL store Store names, else the embedded one
// in the data directory (made when missing unless mustExist); where says
// which, with any password hidden. ErrLocked: a running hub holds it.
func (c Config) OpenStore(ctx context.Context, mustExist bool) (st Store, where string, err error) {
	if c.postgres() {
		pg, err := OpenPostgres(ctx, c.Store, PGOptions{Name: c.Name})
		if err != nil {
			return nil, "", err
		}
		return pg, RedactURL(c.Store), nil
	}
	if c.Store != "" {
		return nil, "", fmt.Errorf("store %q: want postgres://… or nothing (the embedded store in the data directory)", RedactURL(c.Store))
	}
	path := filepath.Join(c.DataPath(), "collector.db")
	if mustExist {
		if _, err := os.Stat(path); err != nil {
			return nil, "", fmt.Errorf("no hub database at %s (is the data directory right?)", path)
		}
	}
	if err := os.MkdirAll(c.DataPath(), 0o750); err != nil {
		return nil, "", fmt.Errorf("hub data directory: %w", err)
	}
	b, err := OpenBolt(path)
	if err != nil {
		return nil, "", err
	}
	return b, path, nil
}

// SigningKey is the hub's key: Key when set, else hub.key in the data
// directory, made on first use and said once (secure by default).
func (c Config) SigningKey(log *slog.Logger) (ed25519.PrivateKey, error) {
	if c.Key != "" {
		// An admin's file: followed if a symlink (secret mounts are), but
		// read bounded.
		f, err := os.Open(c.Key)
		if err != nil {
			return nil, fmt.Errorf("hub signing key: %w", err)
		}
		b, err := io.ReadAll(io.LimitReader(f, osync.KeyFileMax+1))
		f.Close()
		if err == nil && len(b) > osync.KeyFileMax {
			err = fmt.Errorf("%s is over %d bytes: not a key file", c.Key, osync.KeyFileMax)
		}
		if err != nil {
			return nil, fmt.Errorf("hub signing key: %w", err)
		}
		k, err := osync.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("hub signing key %s: %w", c.Key, err)
		}
		return k, nil
	}
	path := filepath.Join(c.DataPath(), "hub.key")
	k, created, err := osync.LoadOrCreateKey(path)
	if err != nil {
		return nil, fmt.Errorf("hub signing key: %w", err)
	}
	if created && log != nil {
		log.Warn("made the hub's signing key (keep it secret; back it up): devices pin its public key in hub_keys",
			"path", path, "public", osync.FormatPublicKey(k.Public().(ed25519.PublicKey)))
	}
	return k, nil
}

// LoadRegistry is the device registry Registry names (empty when none).
func (c Config) LoadRegistry() (Registry, error) {
	if c.Registry == "" {
		return nil, nil
	}
	return LoadRegistry(c.Registry)
}

// PackagesDir is where published model packages are kept.
func (c Config) PackagesDir() string {
	if c.Packages != "" {
		return c.Packages
	}
	return filepath.Join(c.DataPath(), "packages")
}

// MQTTDialer is the collector's dialer: a persistent session, so batches
// published while it restarts wait for it on the broker.
func (c Config) MQTTDialer() (osync.Dialer, error) {
	if c.Dialer != nil {
		return c.Dialer, nil
	}
	if c.Broker == "" {
		return nil, errors.New("hub: no broker (--broker or OUTPOST_BROKER)")
	}
	return mqtt.Dialer(mqtt.Options{Broker: c.Broker, Username: c.Username, Password: c.Password,
		CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile})
}

// RedactURL hides a password in a connection URL.
func RedactURL(s string) string {
	if s == "" {
		return ""
	}
	if u, err := neturl.Parse(s); err == nil {
		return u.Redacted()
	}
	return "postgres://…"
}

// Server is a running hub: its store, key, registry, shelf, collector,
// guarded HTTP page and API, and local socket, built in one place.
type Server struct {
	cfg   Config
	log   *slog.Logger
	c     *Collector
	where string
	ln    net.Listener
	http  *http.Server
	late  lateHandler
}

// OpenServer builds the hub cfg describes. With Listen set, the page and
// API listen first and answer 503 with the reason while the store opens;
// a PostgreSQL store not yet reachable is waited for (with backoff) until
// ctx ends, since a hub that exits because its database restarts stays
// down. Run connects it to the broker; Close releases everything.
func OpenServer(ctx context.Context, cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.late.waiting("opening the store")
	if cfg.Listen != "" {
		host, _, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("hub listen %q is not host:port", cfg.Listen)
		}
		if cfg.Token == "" && !httpguard.IsLoopback(host) {
			return nil, fmt.Errorf("hub listen %s is reachable from other machines: set a token (--token or OUTPOST_HUB_TOKEN)", cfg.Listen)
		}
		if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("hub: listen %s: %w", cfg.Listen, err)
		}
		s.http = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: &s.late}
		go s.http.Serve(s.ln)
	}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	st, where, err := cfg.OpenStore(ctx, false)
	bo := osync.Backoff{Min: time.Second, Max: 30 * time.Second}
	for err != nil && cfg.postgres() && ctx.Err() == nil {
		why := fmt.Sprintf("store %s not reachable: %v", RedactURL(cfg.Store), err)
		s.late.waiting(why)
		wait := bo.Next()
		s.log.Warn("hub: waiting for its store", "why", why, "retry_in", wait.Round(time.Second))
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		st, where, err = cfg.OpenStore(ctx, false)
	}
	if err != nil {
		return nil, err
	}
	s.where = where
	o := cfg.Collector
	o.Logger, o.ShareGroup = s.log, cfg.ShareGroup
	if cfg.Commits > 0 {
		o.Commits = cfg.Commits
	}
	if o.Key, err = cfg.SigningKey(s.log); err == nil {
		o.Registry, err = cfg.LoadRegistry()
	}
	if err == nil && cfg.Advice != "" {
		if err = safefile.LoadJSON(cfg.Advice, 1<<20, &o.WarningAdvice); err != nil {
			err = fmt.Errorf("hub advice: %w", err)
		}
	}
	if err == nil {
		o.Shelf, err = OpenShelf(cfg.PackagesDir())
	}
	if err == nil && o.Probe == nil && cfg.Broker != "" && cfg.Dialer == nil {
		o.Probe, _ = mqtt.Prober(cfg.Broker) // a URL it cannot probe only loses the shortcut
	}
	if err == nil {
		s.c, err = New(st, o)
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	s.late.ready(httpguard.Wrap(s.c.Handler(), httpguard.Options{Token: cfg.Token, Fail: Fail,
		Protected: func(p string) bool { return strings.HasPrefix(p, "/v1/") || p == "/metrics" }}))
	ok = true
	return s, nil
}

// Collector is the hub's collector (its store, stats and handler).
func (s *Server) Collector() *Collector { return s.c }

// PublicKey is the hub's public key, which devices pin in hub_keys.
func (s *Server) PublicKey() ed25519.PublicKey { return s.c.o.Key.Public().(ed25519.PublicKey) }

// Where names the store, with any password hidden.
func (s *Server) Where() string { return s.where }

// Addr is the address the page and API listen on ("" without Listen).
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Run collects from the broker until ctx ends, and — for an embedded
// store, which this process holds — answers `collect export|devices|
// import` on the data directory's socket meanwhile.
func (s *Server) Run(ctx context.Context) error {
	dial, err := s.cfg.MQTTDialer()
	if err != nil {
		return err
	}
	socket := ""
	if _, embedded := s.c.Store().(*BoltStore); embedded {
		socket = s.cfg.SocketPath()
	}
	return s.c.Serve(ctx, dial, socket)
}

// Close stops the page and closes the collector and its store.
func (s *Server) Close() error {
	if s.http != nil {
		s.http.Close()
	}
	if s.c != nil {
		return s.c.Close()
	}
	return nil
}

// lateHandler answers 503 with the reason until the hub is ready.
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
