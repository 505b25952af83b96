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
