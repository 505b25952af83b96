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

// signer is one batch's device and the key that signed it (nil: unsigned).
type signer struct {
	device string
	key    ed25519.PublicKey
}

// checkAll checks a commit group's signers with one store read for those
// not cached; only a first signed contact (enrolment) or a key that does
// not match goes through Enrol, one device at a time.
func (k *keyCache) checkAll(ctx context.Context, st Store, ss []signer, now time.Time) (enrolled []bool, errs []error) {
	enrolled, errs = make([]bool, len(ss)), make([]error, len(ss))
	var miss []string
	for _, s := range ss {
		if !k.cached(s.device, s.key, now) {
			miss = append(miss, s.device)
		}
	}
	if len(miss) == 0 {
		return enrolled, errs
	}
	have, err := st.DeviceKeys(ctx, miss)
	for i, s := range ss {
		switch {
		case k.cached(s.device, s.key, now):
		case err != nil:
			errs[i] = err
		case have[s.device] == "" && s.key == nil:
			k.remember(s.device, nil, now)
		case have[s.device] != "" && s.key != nil && have[s.device] == osync.FormatPublicKey(s.key):
			k.remember(s.device, s.key, now)
		default:
			enrolled[i], errs[i] = k.check(ctx, st, s.device, s.key, now)
		}
	}
	return enrolled, errs
}

// cached reports whether the cache alone accepts key for device.
func (k *keyCache) cached(device string, key ed25519.PublicKey, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	have, ok := k.keys[device]
	seen, known := k.unsigned[device]
	return ok && key != nil && have == osync.FormatPublicKey(key) ||
		!ok && key == nil && known && now.Sub(seen) < unsignedFor
}

func (k *keyCache) remember(device string, key ed25519.PublicKey, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil {
		k.keys, k.unsigned = map[string]string{}, map[string]time.Time{}
	}
	if key != nil {
		k.keys[device] = osync.FormatPublicKey(key)
		delete(k.unsigned, device)
	} else {
		k.unsigned[device] = now
	}
}

func (k *keyCache) check(ctx context.Context, st Store, device string, key ed25519.PublicKey, now time.Time) (bool, error) {
	if k.cached(device, key, now) {
		return false, nil
	}
	enrolled, err := Enrol(ctx, st, device, key, now)
	if err != nil {
		return false, err
	}
	k.remember(device, key, now)
	return enrolled, nil
}
