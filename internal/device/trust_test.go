package device

import "testing"

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
