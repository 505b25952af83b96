package sync

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/outbox"
)

func bundleRecords(n int) []*outbox.Record {
	g := outbox.NewIDGen()
	labels := []string{"healthy", "leaf_spot", "rust", "blight"}
	var recs []*outbox.Record
	for i := 0; i < n; i++ {
		out := fmt.Sprintf(`{"outcome":"diagnosis","label":%q,"score":0.%d,"uncertain":false,"top":[{"label":%q,"score":0.%d}],"lang":"sw"}`,
			labels[i%4], 90+i%9, labels[i%4], 90+i%9)
		recs = append(recs, &outbox.Record{ID: g.New(), Seq: uint64(i + 1), Created: time.Now(), Device: "kiosk-7", Model: "crop-disease",
			Version: "0.2.0-demo", Task: "image-classification", Output: []byte(out)})
	}
	return recs
}

// TestBundle_RoundTrip: what goes in comes out (records across several
// batches, evidence), receipts verify only for their device and key, and
// the size per record is reported.
func TestBundle_RoundTrip(t *testing.T) {
	recs := bundleRecords(25_000) // three record parts
	ev := map[outbox.ID][]byte{recs[3].ID: bytes.Repeat([]byte{0xff, 0xd8, 0xff}, 1000)}
	var buf bytes.Buffer
	id := outbox.NewIDGen().New()
	_, devKey, _ := ed25519.GenerateKey(nil)
	m, err := WriteBundle(&buf, id, "kiosk-7", time.Now(), recs, ev, devKey)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ReadBundle(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !b.Key.Equal(devKey.Public()) {
		t.Fatal("the bundle does not carry the key that signed it")
	}
	// A manifest altered on the stick no longer verifies.
	bad := bytes.Replace(buf.Bytes(), []byte(`"device": "kiosk-7"`), []byte(`"device": "kiosk-8"`), 1)
	if _, err := ReadBundle(bytes.NewReader(bad)); !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("a bundle whose manifest was altered: %v", err)
	}
	if len(b.Records) != 25_000 || b.Manifest.ID != id || len(b.Evidence) != 1 || len(m.Parts) != 4 || b.Manifest.First != recs[0].ID {
		t.Fatalf("round trip: %d records, %d evidence, %d parts", len(b.Records), len(b.Evidence), len(m.Parts))
	}
	for i, r := range b.Records {
		if r.ID != recs[i].ID || !bytes.Equal(r.Output, recs[i].Output) {
			t.Fatalf("record %d differs", i)
		}
	}
	t.Logf("bundle of %d label records: %d bytes, %.1f bytes per record (raw output %d bytes per record)",
		len(recs), buf.Len()-3000, float64(buf.Len()-3000)/float64(len(recs)), len(recs[0].Output))

	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	if b.Sums[recs[0].ID] != RecordSum(recs[0].Encode(nil)) {
		t.Fatal("the bundle's record sum is not the sum of the bytes written")
	}
	rc := EncodeReceiptFile(&Receipt{Bundle: id, Device: "kiosk-7", Stored: []outbox.ID{recs[0].ID}, StoredSums: []Sum{b.Sums[recs[0].ID]}}, key)
	if r, err := DecodeReceiptFile(rc, "kiosk-7", []ed25519.PublicKey{pub}); err != nil || r.Stored[0] != recs[0].ID || r.StoredSums[0] != b.Sums[recs[0].ID] {
		t.Fatalf("receipt: %v", err)
	}
	// A receipt that does not name the bytes deletes nothing.
	if _, err := DecodeReceiptFile(EncodeReceiptFile(&Receipt{Bundle: id, Device: "kiosk-7", Stored: []outbox.ID{recs[0].ID}}, key), "kiosk-7", nil); !errors.Is(err, ErrBundle) {
		t.Fatalf("a receipt without sums: %v", err)
	}
	if _, err := DecodeReceiptFile(rc, "kiosk-8", []ed25519.PublicKey{pub}); !errors.Is(err, ErrBundle) {
		t.Fatalf("receipt for another device: %v", err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := DecodeReceiptFile(rc, "kiosk-7", []ed25519.PublicKey{other.Public().(ed25519.PublicKey)}); !errors.Is(err, ErrForged) {
		t.Fatalf("receipt under another key: %v", err)
	}
}

// FuzzReadBundle: random and damaged bundles never panic the reader.
func FuzzReadBundle(f *testing.F) {
	var buf bytes.Buffer
	WriteBundle(&buf, outbox.ID{1}, "d", time.Now(), bundleRecords(3), map[outbox.ID][]byte{{2}: []byte("x")}, nil)
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:700])
	f.Fuzz(func(t *testing.T, b []byte) {
		if bd, err := ReadBundle(bytes.NewReader(b)); err == nil && len(bd.Records)+len(bd.Bad) != bd.Manifest.Records {
			t.Fatalf("inconsistent bundle accepted")
		}
		DecodeReceiptFile(b, "d", nil)
	})
}

// TestReceipt_ExactBytes (issue 26): a receipt written by another hub, its
// time as "+00:00" and its keys in another order, verifies: the signature
// covers the bytes written, not outpost's re-serialisation of them.
func TestReceipt_ExactBytes(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	body := []byte(`{"time":"2026-12-06T10:00:00.120+00:00","device":"kiosk-7","format":"outpost-receipt/1","bundle":"01934b2c-0000-7000-8000-000000000001",` +
		`"stored":["01934b2c-0000-7000-8000-000000000002"],"stored_sums":["0011223344556677"],"rejected":[],"rejected_sums":[]}`)
	sig := ed25519.Sign(key, append([]byte(receiptLabel), body...))
	file, _ := json.Marshal(map[string]any{"format": "outpost-receipt/2", "receipt": json.RawMessage(body), "sig": sig})
	r, err := DecodeReceiptFile(file, "kiosk-7", []ed25519.PublicKey{pub})
	if err != nil || len(r.Stored) != 1 || r.StoredSums[0] != (Sum{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77}) {
		t.Fatalf("another hub's receipt: %+v %v", r, err)
	}
	tampered := bytes.Replace(file, []byte(`0011223344556677`), []byte(`0011223344556678`), 1)
	if _, err := DecodeReceiptFile(tampered, "kiosk-7", []ed25519.PublicKey{pub}); !errors.Is(err, ErrForged) {
		t.Fatalf("a receipt changed after signing: %v", err)
	}
}
