package sync

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/outpost-edge/outpost/outbox"
)

// Warnings: the hub tells the devices of a region that a disease is rising
// there (its outbreak rule fired, or a program officer wrote one). Each
// device gets its own copy on its cmd topic ('O' 'N', JSON, signed by the
// hub for that device, so a copy cannot be replayed to another device);
// the device stores it and confirms on its evidence topic
// ('O' 'Y' | warning id [16], signed by the device) so the hub stops
// resending. Devices that travel by USB stick get the same signed copies in
// their bundle receipts.

const (
	kindWarning        = 'N'
	kindWarningReceipt = 'Y'
	// MaxWarningDays bounds how long one warning stays up.
	MaxWarningDays = 90
)

// Warning is a regional outbreak warning.
type Warning struct {
	ID      outbox.ID `json:"id"`
	Region  string    `json:"region"`
	Disease string    `json:"disease"`         // a label of the model, e.g. "rust"
	Model   string    `json:"model,omitempty"` // the model whose label it is
	// Advice per language ("en", "sw", …): what to look for and do.
	Advice map[string]string `json:"advice"`
	From   time.Time         `json:"from"`
	Until  time.Time         `json:"until"`            // expires: devices drop it after this
	Source string            `json:"source,omitempty"` // "outbreak" (the rule) or "officer"
	Issued time.Time         `json:"issued"`
	// Evidence: what made the rule fire ("7 of 9 results rust at 2 kiosks").
	Evidence string `json:"evidence,omitempty"`
}

// Validate checks a warning's fields (the hub's API and the device both).
func (w *Warning) Validate() error {
	switch {
	case w.ID == (outbox.ID{}):
		return fmt.Errorf("no warning id")
	case !printable(w.Region, 64) || w.Region == "":
		return fmt.Errorf("region %q: 1 to 64 printable bytes", w.Region)
	case !printable(w.Disease, 64) || w.Disease == "" || len(w.Model) > 64:
		return fmt.Errorf("disease %q: 1 to 64 printable bytes", w.Disease)
	case w.From.IsZero() || !w.Until.After(w.From):
		return fmt.Errorf("until %s must be after from %s", w.Until.Format(time.RFC3339), w.From.Format(time.RFC3339))
	case w.Until.Sub(w.From) > MaxWarningDays*24*time.Hour:
		return fmt.Errorf("a warning lasts at most %d days", MaxWarningDays)
	case len(w.Advice) == 0 || len(w.Advice) > 16:
		return fmt.Errorf("advice in 1 to 16 languages")
	case len(w.Source) > 16 || len(w.Evidence) > 256:
		return fmt.Errorf("source or evidence too long")
	}
	for lang, text := range w.Advice {
		if len(lang) == 0 || len(lang) > 8 || !utf8.ValidString(text) || len(text) > MaxAdvice {
			return fmt.Errorf("advice %q: a language code of 1 to 8 bytes and at most %d bytes of UTF-8", lang, MaxAdvice)
		}
	}
	return nil
}

// Active says whether the warning applies at now.
func (w *Warning) Active(now time.Time) bool { return !now.Before(w.From) && now.Before(w.Until) }

// Text returns the advice in lang, falling back to English, then to any.
func (w *Warning) Text(lang string) (string, string) {
	if t := w.Advice[lang]; t != "" {
		return t, lang
	}
	if t := w.Advice["en"]; t != "" {
		return t, "en"
	}
	for l, t := range w.Advice {
		return t, l
	}
	return "", ""
}

func printable(s string, n int) bool {
	if len(s) > n || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// EncodeWarning writes a warning for one device, signed when key is set.
func EncodeWarning(w *Warning, device string, key ed25519.PrivateKey) []byte {
	body, _ := json.Marshal(w)
	msg := append([]byte{'O', kindWarning, ProtocolVersion, 0}, body...)
	if key != nil {
		msg = signMsg(cmdSignLabel, msg, device, key)
	}
	return msg
}

// DecodeWarning checks the signature (for device, against the pinned hub
// keys) and the fields. Region, expiry and replay are the device's checks:
// it knows its region, its clock and what it stored.
func DecodeWarning(msg []byte, device string, hubKeys []ed25519.PublicKey) (*Warning, error) {
	body, err := cmdBody(msg, kindWarning, "a warning", device, hubKeys)
	if err != nil {
		return nil, err
	}
	var w Warning
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("%w: warning: %v", ErrMalformed, err)
	}
	if err := w.Validate(); err != nil {
		return nil, fmt.Errorf("%w: warning: %v", ErrMalformed, err)
	}
	return &w, nil
}

// IsWarning says whether a cmd-topic message is a warning.
func IsWarning(msg []byte) bool { return len(msg) >= 2 && msg[0] == 'O' && msg[1] == kindWarning }

const warningReceiptLabel = "outpost warning receipt v1\x00"

// EncodeWarningReceipt confirms a warning is stored on the device.
func EncodeWarningReceipt(id outbox.ID, device string, key ed25519.PrivateKey) []byte {
	return encodeReceipt(kindWarningReceipt, warningReceiptLabel, id, device, key)
}

// DecodeWarningReceipt parses a warning receipt from device and checks its
// signature, returning the key that signed it (nil: unsigned).
func DecodeWarningReceipt(msg []byte, device string) (outbox.ID, ed25519.PublicKey, error) {
	return decodeReceipt(kindWarningReceipt, warningReceiptLabel, "warning receipt", msg, device)
}

// IsWarningReceipt says whether a message on the evidence topic is a
// warning receipt.
func IsWarningReceipt(msg []byte) bool {
	return len(msg) >= 2 && msg[0] == 'O' && msg[1] == kindWarningReceipt
}
