package sync

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/outbox"
)

// Reviews: an expert's answer to a result whose evidence reached the hub,
// sent to the device on its cmd topic ('O' 'R', JSON, signed like acks when
// the hub has a key); the device confirms it stored it with a receipt on
// its evidence topic ('O' 'W' | result id [16]) so the hub stops resending.

const (
	kindReview  = 'R'
	kindReceipt = 'W'
	// MaxAdvice bounds a review's advice text.
	MaxAdvice = 2000
)

// Review is an expert's answer to one result.
type Review struct {
	Device   string    `json:"device"`
	Of       outbox.ID `json:"of"` // the result reviewed
	Label    string    `json:"label"`
	Advice   string    `json:"advice,omitempty"`
	Lang     string    `json:"lang,omitempty"`
	Reviewer string    `json:"reviewer,omitempty"`
	Time     time.Time `json:"time"`
}

// Validate checks a review's fields (the hub's API and the device both).
func (r *Review) Validate() error {
	switch {
	case !ValidDeviceID(r.Device):
		return fmt.Errorf("device %q", r.Device)
	case r.Of == (outbox.ID{}):
		return fmt.Errorf("no result id")
	case r.Label == "" || len(r.Label) > 64:
		return fmt.Errorf("label %q: 1 to 64 bytes", r.Label)
	case len(r.Advice) > MaxAdvice:
		return fmt.Errorf("advice of %d bytes (max %d)", len(r.Advice), MaxAdvice)
	case len(r.Lang) > 8 || len(r.Reviewer) > 64:
		return fmt.Errorf("lang or reviewer too long")
	}
	return nil
}

// EncodeReview writes a review for its device, signed when key is set.
func EncodeReview(r *Review, key ed25519.PrivateKey) []byte {
	body, _ := json.Marshal(r)
	msg := append([]byte{'O', kindReview, ProtocolVersion, 0}, body...)
	if key != nil {
		msg = signMsg(cmdSignLabel, msg, r.Device, key)
	}
	return msg
}

// DecodeReview checks the signature against the pinned hub keys and that
// the review is for device.
func DecodeReview(msg []byte, device string, hubKeys []ed25519.PublicKey) (*Review, error) {
	body, err := cmdBody(msg, kindReview, "a review", device, hubKeys)
	if err != nil {
		return nil, err
	}
	var r Review
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: review: %v", ErrMalformed, err)
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("%w: review: %v", ErrMalformed, err)
	}
	if r.Device != device {
		return nil, fmt.Errorf("%w: review for device %q", ErrMalformed, r.Device)
	}
	return &r, nil
}

// EncodeReviewReceipt confirms a review is stored on the device.
func EncodeReviewReceipt(of outbox.ID, device string, key ed25519.PrivateKey) []byte {
	return encodeReceipt(kindReceipt, receiptSignLabel, of, device, key)
}

const receiptSignLabel = "outpost review receipt v1\x00"

// DecodeReviewReceipt parses a receipt from device and checks its signature,
// returning the key that signed it (nil: unsigned).
func DecodeReviewReceipt(msg []byte, device string) (outbox.ID, ed25519.PublicKey, error) {
	return decodeReceipt(kindReceipt, receiptSignLabel, "review receipt", msg, device)
}

// encodeReceipt: 'O' kind version flags | id [16], then, when key is set,
// the device's public key and signature (flag 0x04): a stranger cannot mark
// delivered what the device never got.
func encodeReceipt(kind byte, label string, id outbox.ID, device string, key ed25519.PrivateKey) []byte {
	msg := append([]byte{'O', kind, ProtocolVersion, 0}, id[:]...)
	if key == nil {
		return msg
	}
	msg[3] |= flagSigned
	sig := ed25519.Sign(key, signedBytes(label, device, msg))
	return append(append(msg, key.Public().(ed25519.PublicKey)...), sig...)
}

func decodeReceipt(kind byte, label, what string, msg []byte, device string) (outbox.ID, ed25519.PublicKey, error) {
	var id outbox.ID
	if len(msg) < 20 || msg[0] != 'O' || msg[1] != kind || msg[2] != ProtocolVersion || msg[3]&^flagSigned != 0 {
		return id, nil, fmt.Errorf("%w: not a %s", ErrMalformed, what)
	}
	var key ed25519.PublicKey
	if msg[3]&flagSigned != 0 {
		if len(msg) != 20+batchTrailer {
			return id, nil, fmt.Errorf("%w: signed %s of %d bytes", ErrMalformed, what, len(msg))
		}
		key = ed25519.PublicKey(msg[20 : 20+ed25519.PublicKeySize])
		if !ed25519.Verify(key, signedBytes(label, device, msg[:20]), msg[20+ed25519.PublicKeySize:]) {
			return id, nil, fmt.Errorf("%w: %s signature does not verify", ErrMalformed, what)
		}
	} else if len(msg) != 20 {
		return id, nil, fmt.Errorf("%w: %s of %d bytes", ErrMalformed, what, len(msg))
	}
	copy(id[:], msg[4:20])
	return id, key, nil
}

// IsReviewReceipt says whether a message on the evidence topic is a receipt.
func IsReviewReceipt(msg []byte) bool { return len(msg) >= 2 && msg[0] == 'O' && msg[1] == kindReceipt }
