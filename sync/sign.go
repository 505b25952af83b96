package sync

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
)

// Signed acks (flag 0x04): a hub with a key appends
//
//	key hint (8: first bytes of SHA-256 of its public key) | ed25519 signature (64)
//
// to every ack. The signature covers "outpost ack v1\x00" + device + "\x00"
// + the ack's bytes up to the trailer (flags included): an ack signed for
// one device does not verify for another. A device that pins hub keys
// deletes nothing on an ack that is unsigned or does not verify.
const (
	flagSigned   = 4
	sigTrailer   = 8 + ed25519.SignatureSize
	ackSignLabel = "outpost ack v1\x00"
)

// ErrForged: an ack that is unsigned while the device pins hub keys, or
// whose signature does not verify under any pinned key.
var ErrForged = errors.New("not signed by a pinned hub key")

// KeyHint names a public key in a signed ack.
func KeyHint(pub ed25519.PublicKey) [8]byte {
	s := sha256.Sum256(pub)
	var h [8]byte
	copy(h[:], s[:8])
	return h
}

// SignAck encodes a for device and signs it with key.
func SignAck(a *Ack, device string, key ed25519.PrivateKey) []byte {
	return signMsg(ackSignLabel, EncodeAck(a), device, key)
}

// signMsg sets the signed flag of an outpost message and appends the
// trailer; label keeps an ack's signature from verifying as a command's.
func signMsg(label string, msg []byte, device string, key ed25519.PrivateKey) []byte {
	msg[3] |= flagSigned
	hint := KeyHint(key.Public().(ed25519.PublicKey))
	sig := ed25519.Sign(key, signedBytes(label, device, msg))
	return append(append(msg, hint[:]...), sig...)
}

func signedBytes(label, device string, msg []byte) []byte {
	b := make([]byte, 0, len(label)+len(device)+1+len(msg))
	b = append(b, label...)
	b = append(b, device...)
	b = append(b, 0)
	return append(b, msg...)
}

// VerifyAck checks a raw ack message for device against the pinned keys.
// With no keys pinned every ack passes (signed or not); with keys, only an
// ack signed by one of them.
func VerifyAck(msg []byte, device string, keys []ed25519.PublicKey) error {
	return verifyMsg(ackSignLabel, msg, device, keys)
}

func verifyMsg(label string, msg []byte, device string, keys []ed25519.PublicKey) error {
	if len(keys) == 0 {
		return nil
	}
	if len(msg) < 4 || msg[3]&flagSigned == 0 {
		return fmt.Errorf("%w: unsigned", ErrForged)
	}
	if len(msg) < 4+sigTrailer {
		return fmt.Errorf("%w: signature truncated", ErrForged)
	}
	body, trailer := msg[:len(msg)-sigTrailer], msg[len(msg)-sigTrailer:]
	for _, k := range keys {
		hint := KeyHint(k)
		if bytes.Equal(trailer[:8], hint[:]) && ed25519.Verify(k, signedBytes(label, device, body), trailer[8:]) {
			return nil
		}
	}
	return fmt.Errorf("%w: signature does not verify (key hint %x)", ErrForged, trailer[:8])
}

// ParsePublicKey reads a hub public key as `outpost keys generate` prints
// it: base64 of the 32-byte ed25519 key, optionally prefixed "ed25519:".
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "ed25519:")
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("hub key %q: want base64 of a 32-byte ed25519 public key (outpost keys generate prints one)", s)
	}
	return ed25519.PublicKey(b), nil
}

// FormatPublicKey is the text form ParsePublicKey reads.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return "ed25519:" + base64.StdEncoding.EncodeToString(pub)
}

// ParsePrivateKey reads an ed25519 private key as `outpost keys generate`
// writes it (PEM, PKCS #8).
func ParsePrivateKey(pemBytes []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM private key (outpost keys generate writes one)")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("not an ed25519 key")
	}
	return ek, nil
}

// KeyFileMax bounds a private key file.
const KeyFileMax = 64 << 10

// LoadOrCreateKey reads the ed25519 key at path, or makes one there
// (0600, with PATH.pub beside it) when none exists: secure by default —
// a hub signs from its first start, and says where its key is.
func LoadOrCreateKey(path string) (key ed25519.PrivateKey, created bool, err error) {
	b, err := safefile.ReadFile(path, KeyFileMax)
	if err == nil {
		k, err := ParsePrivateKey(b)
		if err != nil {
			return nil, false, fmt.Errorf("key %s: %w", path, err)
		}
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("key: %w", err)
	}
	pub, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, false, err
	}
	if err := atomicfile.WriteBytes(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, false, fmt.Errorf("key: %w", err)
	}
	if err := atomicfile.WriteBytes(path+".pub", []byte(FormatPublicKey(pub)+"\n"), 0o644); err != nil {
		return nil, false, fmt.Errorf("key: %w", err)
	}
	return k, true, nil
}
