package device

import (
	"strings"
	"testing"
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
