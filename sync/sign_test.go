package sync

import (
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/outpost-edge/outpost/outbox"
)

func TestSignedAck(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	pub2, key2, _ := ed25519.GenerateKey(nil)
	g := outbox.NewIDGen()
	a := &Ack{Batch: g.New(), Stored: []outbox.ID{g.New(), g.New()}, Refused: &Refusal{Code: RefusedUnavailable, Reason: "db"}}
	msg := SignAck(a, "pi-1", key)
	back, err := DecodeAck(msg)
	if err != nil || back.Batch != a.Batch || len(back.Stored) != 2 || back.Refused == nil || back.Refused.Reason != "db" {
		t.Fatalf("decode signed: %+v %v", back, err)
	}
	for _, c := range []struct {
		name   string
		msg    []byte
		device string
		keys   []ed25519.PublicKey
		ok     bool
	}{
		{"right key", msg, "pi-1", []ed25519.PublicKey{pub}, true},
		{"rotation: second pinned key", SignAck(a, "pi-1", key2), "pi-1", []ed25519.PublicKey{pub, pub2}, true},
		{"no keys pinned: anything passes", EncodeAck(a), "pi-1", nil, true},
		{"unsigned while pinned", EncodeAck(a), "pi-1", []ed25519.PublicKey{pub}, false},
		{"another key", SignAck(a, "pi-1", key2), "pi-1", []ed25519.PublicKey{pub}, false},
		{"replayed to another device", msg, "pi-2", []ed25519.PublicKey{pub}, false},
		{"tampered", append(append([]byte{}, msg[:20]...), append([]byte{msg[20] ^ 1}, msg[21:]...)...), "pi-1", []ed25519.PublicKey{pub}, false},
		{"truncated", msg[:30], "pi-1", []ed25519.PublicKey{pub}, false},
	} {
		err := VerifyAck(c.msg, c.device, c.keys)
		if (err == nil) != c.ok || err != nil && !errors.Is(err, ErrForged) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	k, err := ParsePublicKey(FormatPublicKey(pub))
	if err != nil || !k.Equal(pub) {
		t.Fatalf("key round trip: %v", err)
	}
	if _, err := ParsePublicKey("ed25519:bm90IGEga2V5"); err == nil {
		t.Fatal("a short key parsed")
	}
}
