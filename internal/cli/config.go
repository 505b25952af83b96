package cli

import (
	"os"

	"github.com/spf13/pflag"

	"github.com/outpost-edge/outpost/internal/device"
)

// deviceFlags are what every command that touches a device shares:
// --config, the models and runtime flags, --data-dir, and whichever of the
// common keys the command offers. One precedence everywhere: defaults <
// config file < OUTPOST_<KEY> environment < flags given.
type deviceFlags struct {
	file string
	rf   runtimeFlags
	df   dataFlags
	f    device.Config
	mqtt brokerFlags
	fs   *pflag.FlagSet
	// modelsDefault: no flag, env or config named the models directory;
	// config() filled in the default (next to the binary). serve then
	// runs a writable copy when that folder is read-only.
	modelsDefault bool
}

// register adds --config, runtime and data-dir flags, and the named keys.
func (d *deviceFlags) register(fs *pflag.FlagSet, keys ...string) {
	d.fs = fs
	fs.StringVar(&d.file, "config", os.Getenv("OUTPOST_CONFIG"), "JSON config file (keys: outpost serve --print-config); env OUTPOST_<KEY> and flags override it")
	d.df.register(fs)
	for _, k := range keys {
		switch k {
		case "models":
			d.rf.register(fs, "models-dir")
		case "listen":
			fs.StringVar(&d.f.Listen, "listen", "", "HTTP address (default 127.0.0.1:8080; off loopback a --token is required)")
		case "broker":
			d.mqtt.register(fs)
		case "device-id":
			fs.StringVar(&d.f.DeviceID, "device-id", "", "device ID in topics and results (env OUTPOST_DEVICE_ID; default: hostname)")
		case "inbox":
			fs.StringVar(&d.f.Inbox, "inbox", "", "watch folder: photos and WAVs dropped here are inferred and stored")
		case "token":
			fs.StringVar(&d.f.Token, "token", "", "bearer token for the API (prefer env OUTPOST_TOKEN)")
		case "demo":
			fs.BoolVar(&d.f.Demo, "demo", false, "demo: embedded MQTT broker and hub collector, bundled samples in the inbox")
		case "lang":
			fs.StringVar(&d.f.Lang, "lang", "", "language of advice text: en, fr, sw, ha, am (env OUTPOST_LANG; default en)")
		case "daily-budget":
			fs.StringVar(&d.f.DailyBudget, "daily-budget", "", "bytes per day on the wire, e.g. 5MB (alerts may exceed it); empty = unlimited (env OUTPOST_DAILY_BUDGET)")
		case "batch":
			fs.IntVar(&d.f.SyncBatch, "batch", 500, "records per MQTT message (config sync_batch)")
		case "ack-timeout":
			fs.StringVar(&d.f.SyncAckWait, "ack-timeout", "30s", "resend a batch the collector has not acknowledged after this long (config sync_ack_timeout)")
		case "hub-key":
			fs.StringSliceVar(&d.f.HubKeys, "hub-key", nil, "pin the hub's ack-signing public key (ed25519:BASE64; repeat for a rotation): only acks it signed delete records (config hub_keys, env OUTPOST_HUB_KEYS)")
		case "vad-model":
			fs.StringVar(&d.f.VADModel, "vad-model", "silero-vad", "keyword spotting: the VAD model that finds speech segments ('' = whole input)")
		}
	}
}

// config merges defaults, the config file, the environment and the flags
// given. explicitData reports whether a data dir was set anywhere (not
// just defaulted): `infer` queues results only then.
func (d *deviceFlags) config() (c device.Config, explicitData bool, err error) {
	c = device.Defaults()
	if d.file != "" {
		if err := c.LoadFile(d.file); err != nil {
			return c, false, err
		}
	}
	if err := c.LoadEnv(os.Getenv); err != nil {
		return c, false, err
	}
	str := func(name string, dst *string, v string) {
		if d.fs.Lookup(name) != nil && d.fs.Changed(name) {
			*dst = v
		}
	}
	str("listen", &c.Listen, d.f.Listen)
	str("device-id", &c.DeviceID, d.f.DeviceID)
	str("inbox", &c.Inbox, d.f.Inbox)
	str("token", &c.Token, d.f.Token)
	str("lang", &c.Lang, d.f.Lang)
	str("daily-budget", &c.DailyBudget, d.f.DailyBudget)
	str("ack-timeout", &c.SyncAckWait, d.f.SyncAckWait)
	str("vad-model", &c.VADModel, d.f.VADModel)
	str("ort-lib", &c.ORTLib, d.rf.ortLib)
	str("data-dir", &c.DataDir, d.df.dir)
	str("models-dir", &c.ModelsDir, d.rf.modelsDir)
	str("broker", &c.Broker, d.mqtt.url)
	str("username", &c.MQTTUsername, d.mqtt.user)
	str("password", &c.MQTTPassword, d.mqtt.pass)
	str("ca-file", &c.MQTTCA, d.mqtt.ca)
	str("cert-file", &c.MQTTCert, d.mqtt.cert)
	str("key-file", &c.MQTTKey, d.mqtt.key)
	if d.fs.Lookup("threads") != nil && d.fs.Changed("threads") {
		c.Threads = d.rf.threads
	}
	if d.fs.Lookup("hub-key") != nil && d.fs.Changed("hub-key") {
		c.HubKeys = d.f.HubKeys
	}
	if d.fs.Lookup("batch") != nil && d.fs.Changed("batch") {
		c.SyncBatch = d.f.SyncBatch
	}
	if d.fs.Lookup("demo") != nil && d.fs.Changed("demo") {
		c.Demo = d.f.Demo
	}
	explicitData = c.DataDir != ""
	if c.DataDir == "" {
		c.DataDir = d.df.path()
	}
	if c.ModelsDir == "" && d.fs.Lookup("models-dir") != nil {
		// Resolved later by commands that need models: a config error
		// should be reported before a missing models directory.
		if dir, err := d.rf.dir(); err == nil {
			c.ModelsDir, d.modelsDefault = dir, true
		}
	}
	return c, explicitData, nil
}
