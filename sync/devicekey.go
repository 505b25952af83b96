package sync

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Device-signed batches (flag 0x04 on a batch): a device with a key
// appends
//
//	public key (32) | ed25519 signature (64)
//
// to the batch message. The signature covers "outpost batch v1\x00" + the
// message up to the trailer (flags included, so the body's device field and
// every record are covered). The key travels in full so a hub can enrol a
// device on first contact (trust on first use, the fingerprint shown for a
// person to confirm) or check it against the key enrolled before; either
// way a batch is stored only under the device whose key signed it.
const (
	batchSignLabel = "outpost batch v1\x00"
	batchTrailer   = ed25519.PublicKeySize + ed25519.SignatureSize
)

// SignBatch signs an encoded batch with the device's key.
func SignBatch(msg []byte, key ed25519.PrivateKey) []byte {
	msg = append([]byte(nil), msg...)
	msg[3] |= flagSigned
	sig := ed25519.Sign(key, append([]byte(batchSignLabel), msg...))
	return append(append(msg, key.Public().(ed25519.PublicKey)...), sig...)
}

// splitSignedBatch checks a signed batch's signature and returns the
// message without its trailer (flag cleared) and the signer's key; an
// unsigned message comes back as it is, with a nil key.
func splitSignedBatch(msg []byte) ([]byte, ed25519.PublicKey, error) {
	if len(msg) < 4 || msg[0] != 'O' || msg[1] != kindBatch || msg[3]&flagSigned == 0 || msg[3]&^(flagZstd|flagSigned) != 0 {
		return msg, nil, nil // not a signed batch: header() says what it is
	}
	if len(msg) < 4+batchTrailer {
		return nil, nil, fmt.Errorf("%w: signed batch shorter than its signature", ErrMalformed)
	}
	body, trailer := msg[:len(msg)-batchTrailer], msg[len(msg)-batchTrailer:]
	pub := ed25519.PublicKey(append([]byte(nil), trailer[:ed25519.PublicKeySize]...))
	if !ed25519.Verify(pub, append([]byte(batchSignLabel), body...), trailer[ed25519.PublicKeySize:]) {
		return nil, nil, fmt.Errorf("%w: batch signature does not verify", ErrMalformed)
	}
	out := append([]byte(nil), body...)
	out[3] &^= flagSigned
	return out, pub, nil
}

// Fingerprint names a device key for people: 16 hex digits of its SHA-256,
// in groups of four (shown on the fleet page and by collect devices).
func Fingerprint(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	h := hex.EncodeToString(s[:8])
	return h[0:4] + " " + h[4:8] + " " + h[8:12] + " " + h[12:16]
}
