package device

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestDevice_Trust: a device that syncs without a pinned hub key says so
// (/v1/status "trust", outpost status, the kiosk); pinned, or not syncing
// at all, it does not.
func TestDevice_Trust(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		warn bool
	}{
		{Config{Broker: "tcp://hub:1883"}, true},
		{Config{Broker: "tcp://hub:1883", HubKeys: []string{"ed25519:x"}}, false},
		{Config{}, false},
	} {
		d := &Device{cfg: c.cfg}
		if got := d.Trust(); (got.Warning != "") != c.warn || got.HubKeyPinned != (len(c.cfg.HubKeys) > 0) {
			t.Errorf("%+v: %+v", c.cfg, got)
		}
	}
}

// TestConfig_MaskedHidesURLPasswords: --print-config printed
// tcp://u:password@host (issue 25).
func TestConfig_MaskedHidesURLPasswords(t *testing.T) {
	c := Config{Broker: "tcp://u:s3cret@hub:1883", MQTTPassword: "p4ss", Token: "t0k"}
	out := c.Masked()
	for _, secret := range []string{"s3cret", "p4ss", "t0k"} {
		if strings.Contains(out, secret) {
			t.Errorf("--print-config shows %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "tcp://u:") || !strings.Contains(out, "@hub:1883") {
		t.Errorf("the broker is no longer recognisable:\n%s", out)
	}
}

// TestDeviceID_KeptWithTheData (issues 26, 27): a bundle export run
// without the daemon's config used the host name and the hub stored the
// same results twice. The ID is kept in the data dir on first use; a later
// command without one gets it, one naming another is refused by name.
func TestDeviceID_KeptWithTheData(t *testing.T) {
	dir := t.TempDir()
	if id, err := deviceID(dir, "kiosk-7"); err != nil || id != "kiosk-7" {
		t.Fatalf("first use: %q %v", id, err)
	}
	if id, err := deviceID(dir, ""); err != nil || id != "kiosk-7" {
		t.Fatalf("a command without an ID: %q %v, want the kept kiosk-7", id, err)
	}
	if _, err := deviceID(dir, "vm"); err == nil || !strings.Contains(err.Error(), `"kiosk-7"`) || !strings.Contains(err.Error(), `"vm"`) {
		t.Fatalf("another ID for the same data: %v", err)
	}
}

// TestConfig_EnvSetsEveryKey (issue 26): OUTPOST_SHARING was silently
// ignored; structured keys now take JSON, and a bad value is refused by
// name. Every config key has its variable.
func TestConfig_EnvSetsEveryKey(t *testing.T) {
	env := map[string]string{"OUTPOST_SHARING": `{"crop-disease":{"evidence":"uncertain","form":"downscaled"}}`, "OUTPOST_HUB_KEYS": "ed25519:a,ed25519:b"}
	c := Defaults()
	if err := c.LoadEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.Sharing["crop-disease"].Evidence != "uncertain" || len(c.HubKeys) != 2 {
		t.Fatalf("from the environment: sharing %+v, hub keys %v", c.Sharing, c.HubKeys)
	}
	env["OUTPOST_SHARING"] = "uncertain"
	if err := c.LoadEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), "OUTPOST_SHARING") {
		t.Fatalf("a bad OUTPOST_SHARING: %v", err)
	}
	keys := EnvKeys()
	for _, k := range []string{"OUTPOST_SHARING", "OUTPOST_DEVICE_ID", "OUTPOST_HUB_KEYS", "OUTPOST_USB_DIR"} {
		if !keys[k] {
			t.Errorf("%s is not a config variable", k)
		}
	}
}

// TestDevice_RunStopsEveryJob: Run returns once ctx ends, every job
// stopped (a host waits for it before closing the outbox).
func TestDevice_RunStopsEveryJob(t *testing.T) {
	c := Defaults()
	c.DataDir, c.ModelsDir, c.DeviceID = t.TempDir(), t.TempDir(), "run-test"
	d, err := Open(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
