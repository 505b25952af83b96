package hub

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	gosync "sync"
	"time"

	osync "github.com/outpost-edge/outpost/sync"
)

// ErrNotDevice: a batch or bundle not signed by the key enrolled for its
// device (or unsigned, from a device that signs).
var ErrNotDevice = errors.New("not signed by the device's enrolled key")

// Enrol checks key against the key enrolled for device and, when none is,
// enrols it (trust on first use: the fingerprint is kept and shown on the
// fleet page and by `collect devices` for a person to compare with the
// device's own `outpost status`). A nil key (an unsigned batch) passes
// only for a device that never signed. It reports whether it enrolled.
func Enrol(ctx context.Context, st Store, device string, key ed25519.PublicKey, now time.Time) (bool, error) {
	enrolled := false
	err := st.UpdateDevice(ctx, device, func(d *DeviceStatus) error {
		switch {
		case d.Key == "" && key == nil:
			return ErrSkip
		case d.Key == "":
			d.Key, d.KeyFingerprint, d.Enrolled = osync.FormatPublicKey(key), osync.Fingerprint(key), now.UTC()
			enrolled = true
			return nil
		case key == nil:
			return fmt.Errorf("%w: %s signs its batches (key %s), this one is unsigned", ErrNotDevice, device, d.KeyFingerprint)
		case d.Key != osync.FormatPublicKey(key):
			return fmt.Errorf("%w: %s is enrolled with key %s, this was signed by %s", ErrNotDevice, device, d.KeyFingerprint, osync.Fingerprint(key))
		}
		return ErrSkip
	})
	return enrolled, err
}

// SetDeviceKey enrols key for device, replacing any key before (a device
// reinstalled with a new key: `outpost collect enroll`).
func SetDeviceKey(ctx context.Context, st Store, device string, key ed25519.PublicKey, now time.Time) error {
	return st.UpdateDevice(ctx, device, func(d *DeviceStatus) error {
		d.Key, d.KeyFingerprint, d.Enrolled = osync.FormatPublicKey(key), osync.Fingerprint(key), now.UTC()
		return nil
	})
}

// keyCache spares the store a lookup per batch: enrolled keys (they change
// only through collect enroll; a mismatch is checked against the store
// before a refusal) and, for a short while, devices known not to sign.
type keyCache struct {
	mu       gosync.Mutex
	keys     map[string]string
	unsigned map[string]time.Time
}

// unsignedFor is how long "this device does not sign" is believed.
const unsignedFor = 30 * time.Second

func (k *keyCache) check(ctx context.Context, st Store, device string, key ed25519.PublicKey, now time.Time) (bool, error) {
	k.mu.Lock()
	if k.keys == nil {
		k.keys, k.unsigned = map[string]string{}, map[string]time.Time{}
	}
	have, ok := k.keys[device]
	seen, known := k.unsigned[device]
	k.mu.Unlock()
	switch {
	case ok && key != nil && have == osync.FormatPublicKey(key):
		return false, nil
	case !ok && key == nil && known && now.Sub(seen) < unsignedFor:
		return false, nil
	}
	enrolled, err := Enrol(ctx, st, device, key, now)
	if err != nil {
		return false, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if key != nil {
		k.keys[device] = osync.FormatPublicKey(key)
		delete(k.unsigned, device)
	} else {
		k.unsigned[device] = now
	}
	return enrolled, nil
}
