package device

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/internal/httpguard"
	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// Config is every setting of a device (serve's HTTP keys included: one
// file configures every command). Each key can come from the JSON
// config file, from the environment as OUTPOST_<KEY> (upper case), and for
// the common ones from flags; later sources win (file < env < flags).
type Config struct {
	DataDir   string `json:"data_dir"`   // outbox, budget, inbox; default per dataFlags
	ModelsDir string `json:"models_dir"` // default: next to the binary, then ./models
	ORTLib    string `json:"ort_lib"`    // default: search (runtime/onnx.Candidates)
	Threads   int    `json:"threads"`    // intra-op threads per model; default 1
	Listen    string `json:"listen"`     // HTTP address; default 127.0.0.1:8080
	Token     string `json:"token"`      // bearer token; required when Listen is not loopback
	DeviceID  string `json:"device_id"`  // default: hostname
	Lang      string `json:"lang"`       // default advice language; default en
	// Region is where the device stands, as the hub's registry names it:
	// regional warnings for other regions are refused. Empty: any the hub
	// signs for this device.
	Region string `json:"region"`

	Broker       string `json:"broker"`        // MQTT URL; "" stays offline and queues
	MQTTUsername string `json:"mqtt_username"` //
	MQTTPassword string `json:"mqtt_password"` // secret: masked by --print-config
	MQTTCA       string `json:"mqtt_ca"`
	MQTTCert     string `json:"mqtt_cert"`
	MQTTKey      string `json:"mqtt_key"`
	DailyBudget  string `json:"daily_budget"`     // e.g. "5MB"; "" = unlimited
	SyncBatch    int    `json:"sync_batch"`       // records per MQTT message; default 500
	SyncAckWait  string `json:"sync_ack_timeout"` // resend a batch unacknowledged this long; default 30s
	// HubKeys pins the hub's ack-signing keys ("ed25519:BASE64", as
	// `outpost keys generate` prints; two during a rotation). Set, the
	// device deletes records only on acks they signed.
	HubKeys []string `json:"hub_keys,omitempty"`
	// ModelKeys are the public keys whose signed model packages this
	// device installs (`outpost models install`).
	ModelKeys []string `json:"model_keys,omitempty"`
	// Sharing says, per model, what may leave the device besides the
	// answer (docs/SHARING.md). Missing: labels and scores only.
	Sharing map[string]SharePolicy `json:"sharing,omitempty"`
	// Model updates (docs/UPDATES.md): the largest package taken over
	// MQTT, and the crash-loop rule — this many restarts within this long
	// after an update was activated put the previous version back.
	UpdateMaxBytes      int64  `json:"update_max_bytes"`      // default 64 MiB
	UpdateCrashRestarts int    `json:"update_crash_restarts"` // default 3
	UpdateCrashWindow   string `json:"update_crash_window"`   // default 10m

	MaxBodyBytes  int64  `json:"max_body_bytes"` // per request; default 16 MiB
	MaxConcurrent int    `json:"max_concurrent"` // inferences at once; more get 429; default 2
	QueueMaxBytes int64  `json:"queue_max_bytes"`
	QueueMaxItems int64  `json:"queue_max_records"`
	QueuePolicy   string `json:"queue_policy"` // pause | drop-lowest

	Inbox string `json:"inbox"` // watch folder; "" = off
	// USBDir is where a USB stick mounts (e.g. /media/usb): while it is
	// there, the kiosk offers "export to USB" (bundles, receipts).
	USBDir string `json:"usb_dir"`
	// SpeechRate is the kiosk's speaking rate in words per minute
	// (espeak-ng); default 140, slower is clearer.
	SpeechRate int    `json:"speech_rate"`
	ImageModel string `json:"image_model"` // for photos dropped in the inbox; default crop-disease
	AudioModel string `json:"audio_model"` // for WAVs dropped in the inbox; default kws
	VADModel   string `json:"vad_model"`   // finds speech for keyword spotting; default silero-vad ("" = whole input)

	Demo bool `json:"demo"` // embedded broker + collector + sample inputs (make demo)
}

// SharePolicy is one model's sharing policy.
type SharePolicy struct {
	// Evidence: the photo or recording leaves the device never (default),
	// when the model is uncertain, or always.
	Evidence string `json:"evidence"`
	// Form: downscaled (default; a JPEG of at most MaxSide pixels, no
	// EXIF) or original (the bytes as taken). Recordings go as recorded.
	Form    string `json:"form,omitempty"`
	MaxSide int    `json:"max_side,omitempty"` // default 512
}

// Sharing policy values.
const (
	ShareNever     = "never"
	ShareUncertain = "uncertain"
	ShareAlways    = "always"
	FormDownscaled = "downscaled"
	FormOriginal   = "original"
	defaultMaxSide = 512
)

// Policy is model's sharing policy with defaults filled in.
func (c *Config) Policy(model string) SharePolicy {
	p := c.Sharing[model]
	if p.Evidence == "" {
		p.Evidence = ShareNever
	}
	if p.Form == "" {
		p.Form = FormDownscaled
	}
	if p.MaxSide <= 0 {
		p.MaxSide = defaultMaxSide
	}
	return p
}

// Defaults returns a Config with every default filled in.
func Defaults() Config {
	return Config{Threads: 1, Listen: "127.0.0.1:8080", Lang: "en", MaxBodyBytes: 16 << 20, MaxConcurrent: 2,
		QueuePolicy: string(outbox.PolicyPause), ImageModel: "crop-disease", AudioModel: "kws", VADModel: "silero-vad",
		SyncBatch: 500, SyncAckWait: "30s", UpdateMaxBytes: 64 << 20, UpdateCrashRestarts: 3, UpdateCrashWindow: "10m"}
}

// LoadFile merges a JSON config file into c. Unknown keys are errors.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// LoadEnv merges OUTPOST_<KEY> variables (e.g. OUTPOST_LISTEN, OUTPOST_QUEUE_MAX_BYTES).
func (c *Config) LoadEnv(getenv func(string) string) error {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key := strings.Split(t.Field(i).Tag.Get("json"), ",")[0]
		s := getenv("OUTPOST_" + strings.ToUpper(key))
		if s == "" {
			continue
		}
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(s)
		case reflect.Int, reflect.Int64:
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return fmt.Errorf("config: OUTPOST_%s=%q: want a whole number", strings.ToUpper(key), s)
			}
			f.SetInt(n)
		case reflect.Slice: // a list: comma-separated
			var list []string
			for _, e := range strings.Split(s, ",") {
				if e = strings.TrimSpace(e); e != "" {
					list = append(list, e)
				}
			}
			f.Set(reflect.ValueOf(list))
		case reflect.Bool:
			b, err := strconv.ParseBool(s)
			if err != nil {
				return fmt.Errorf("config: OUTPOST_%s=%q: want true or false", strings.ToUpper(key), s)
			}
			f.SetBool(b)
		default:
			// Structured keys (sharing) as JSON: they were silently ignored.
			if err := json.Unmarshal([]byte(s), f.Addr().Interface()); err != nil {
				return fmt.Errorf("config: OUTPOST_%s: want JSON as in the config file (%v)", strings.ToUpper(key), err)
			}
		}
	}
	return nil
}

// EnvKeys are the OUTPOST_ variables that set config keys.
func EnvKeys() map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		if key := strings.Split(t.Field(i).Tag.Get("json"), ",")[0]; key != "" && key != "-" {
			out["OUTPOST_"+strings.ToUpper(key)] = true
		}
	}
	return out
}

// Validate checks every key and names the first wrong one.
func (c *Config) Validate() error {
	bad := func(key, format string, a ...any) error {
		return fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, a...))
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return bad("listen", "%q is not host:port (%v)", c.Listen, err)
	}
	if !IsLoopback(host) && c.Token == "" {
		return bad("token", "required when listen (%s) is not a loopback address: anyone on the network could use the API", c.Listen)
	}
	for _, k := range append(append([]string{}, c.HubKeys...), c.ModelKeys...) {
		if _, err := osync.ParsePublicKey(k); err != nil {
			return bad("hub_keys/model_keys", "%v", err)
		}
	}
	if c.DeviceID != "" && !osync.ValidDeviceID(c.DeviceID) {
		return bad("device_id", "%q: use 1-64 of A-Z a-z 0-9 . _ -", c.DeviceID)
	}
	if c.Threads < 1 || c.Threads > 64 {
		return bad("threads", "%d: want 1 to 64", c.Threads)
	}
	if c.MaxBodyBytes < 1024 {
		return bad("max_body_bytes", "%d is too small (at least 1024)", c.MaxBodyBytes)
	}
	if c.MaxConcurrent < 1 {
		return bad("max_concurrent", "%d: want at least 1", c.MaxConcurrent)
	}
	if c.QueuePolicy != string(outbox.PolicyPause) && c.QueuePolicy != string(outbox.PolicyDropLowest) {
		return bad("queue_policy", "%q: want pause or drop-lowest", c.QueuePolicy)
	}
	if c.QueueMaxBytes < 0 || c.QueueMaxItems < 0 {
		return bad("queue_max_bytes", "caps must not be negative")
	}
	if c.SyncBatch < 1 || c.SyncBatch > 100_000 {
		return bad("sync_batch", "%d: want 1 to 100000", c.SyncBatch)
	}
	if d, err := time.ParseDuration(c.SyncAckWait); err != nil || d <= 0 {
		return bad("sync_ack_timeout", "%q: want a duration like 30s", c.SyncAckWait)
	}
	for model, p := range c.Sharing {
		switch p.Evidence {
		case "", ShareNever, ShareUncertain, ShareAlways:
		default:
			return bad("sharing", "%s: evidence %q: want never, uncertain or always", model, p.Evidence)
		}
		switch p.Form {
		case "", FormDownscaled, FormOriginal:
		default:
			return bad("sharing", "%s: form %q: want downscaled or original", model, p.Form)
		}
		if p.MaxSide < 0 || p.MaxSide > 8192 {
			return bad("sharing", "%s: max_side %d: want 1 to 8192", model, p.MaxSide)
		}
	}
	if c.SpeechRate != 0 && (c.SpeechRate < 60 || c.SpeechRate > 400) {
		return bad("speech_rate", "%d words per minute: want 60 to 400", c.SpeechRate)
	}
	if c.UpdateMaxBytes < 1<<10 {
		return bad("update_max_bytes", "%d is too small (at least 1024)", c.UpdateMaxBytes)
	}
	if c.UpdateCrashRestarts < 1 {
		return bad("update_crash_restarts", "%d: want at least 1", c.UpdateCrashRestarts)
	}
	if d, err := time.ParseDuration(c.UpdateCrashWindow); err != nil || d <= 0 {
		return bad("update_crash_window", "%q: want a duration like 10m", c.UpdateCrashWindow)
	}
	if _, err := osync.ParseBytes(c.DailyBudget); err != nil {
		return bad("daily_budget", "%v", err)
	}
	if c.Broker != "" && !strings.Contains(c.Broker, "://") {
		return bad("broker", "%q: want a URL like tcp://host:1883, ssl://host:8883, ws://host/mqtt", c.Broker)
	}
	if !slices.Contains(models.Languages, c.Lang) {
		return bad("lang", "%q: want one of %s", c.Lang, strings.Join(models.Languages, ", "))
	}
	if c.Inbox != "" && c.DataDir != "" {
		// The watcher moves whatever it finds in the inbox: the outbox, the
		// budget file or anything else the daemon keeps must not be there.
		// (An inbox inside the data dir is fine: the watcher never leaves
		// it, since it refuses symlinks.)
		in, data := resolved(c.Inbox), resolved(c.DataDir)
		if within(data, in) {
			return bad("inbox", "the data dir %s is inside the watch folder %s: the watcher would move the daemon's own files", c.DataDir, c.Inbox)
		}
	}
	return nil
}

// resolved is an absolute path with symlinks followed as far as it exists.
func resolved(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	return abs
}

// within: p is dir or inside it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// IsLoopback: localhost or a loopback address (httpguard's rule).
func IsLoopback(host string) bool { return httpguard.IsLoopback(host) }

// Masked returns the config as indented JSON with secrets replaced.
func (c Config) Masked() string {
	if c.Token != "" {
		c.Token = "********"
	}
	if c.MQTTPassword != "" {
		c.MQTTPassword = "********"
	}
	c.Broker = RedactURL(c.Broker) // tcp://u:password@host printed the password
	b, _ := json.MarshalIndent(c, "", "  ")
	return string(b)
}

// RedactURL masks a password in a URL (tcp://user:secret@host → tcp://user:xxxxx@host).
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			return u.Redacted()
		}
	}
	return s
}

// PinnedHubKeys are hub_keys parsed (Validate checked them).
func (c *Config) PinnedHubKeys() []ed25519.PublicKey { return parseKeys(c.HubKeys) }

// PinnedModelKeys are model_keys parsed (Validate checked them).
func (c *Config) PinnedModelKeys() []ed25519.PublicKey { return parseKeys(c.ModelKeys) }

// CrashWindow is update_crash_window as a duration (Validate checked it).
func (c *Config) CrashWindow() time.Duration {
	d, _ := time.ParseDuration(c.UpdateCrashWindow)
	return d
}

func parseKeys(keys []string) []ed25519.PublicKey {
	var out []ed25519.PublicKey
	for _, k := range keys {
		if pub, err := osync.ParsePublicKey(k); err == nil {
			out = append(out, pub)
		}
	}
	return out
}

// AckTimeout is sync_ack_timeout as a duration (Validate checked it).
func (c *Config) AckTimeout() time.Duration {
	d, _ := time.ParseDuration(c.SyncAckWait)
	return d
}
