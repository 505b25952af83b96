package sync

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/outbox"
)

func sampleBatch(n int) *Batch {
	g := outbox.NewIDGen()
	b := &Batch{ID: g.New(), Device: "pi-07", Sent: time.UnixMilli(1_764_000_000_123).UTC()}
	for i := 0; i < n; i++ {
		b.Records = append(b.Records, &outbox.Record{ID: g.New(), Seq: uint64(i + 1), Created: time.Unix(1_764_000_000, int64(i)).UTC(),
			Device: "pi-07", Model: "crop-disease", Version: "1.0.0", Task: "image-classification", Priority: outbox.Normal,
			Output: []byte(fmt.Sprintf(`{"labels":[{"label":"leaf_rust","score":0.%02d}]}`, i%100))})
	}
	return b
}

func TestBatch_RoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 500} {
		b := sampleBatch(n)
		msg := EncodeBatch(b)
		got, err := DecodeBatch(msg)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if got.ID != b.ID || got.Device != b.Device || !got.Sent.Equal(b.Sent) || len(got.Records) != n {
			t.Fatalf("n=%d: got %+v", n, got)
		}
		for i := range got.Records {
			if !bytes.Equal(got.Records[i].Encode(nil), b.Records[i].Encode(nil)) {
				t.Fatalf("record %d differs", i)
			}
		}
		if n == 500 {
			var raw int
			for _, r := range b.Records {
				raw += len(r.Encode(nil))
			}
			t.Logf("500 records: %d bytes encoded, %d on the wire (%.1f B/record, zstd ratio %.2f)", raw, len(msg), float64(len(msg))/500, float64(raw)/float64(len(msg)))
			if msg[3] != flagZstd || len(msg) > raw/2 {
				t.Fatalf("batch of 500 not compressed usefully: %d -> %d", raw, len(msg))
			}
		}
	}
}

func TestDecode_Malformed(t *testing.T) {
	good := EncodeBatch(sampleBatch(3))
	bad := append([]byte{}, good...)
	bad[2] = 9
	tests := []struct {
		name string
		msg  []byte
		want error
		text string
	}{
		{"empty", nil, ErrMalformed, "not an outpost"},
		{"json", []byte(`{"records":[]}`), ErrMalformed, "not an outpost"},
		{"version", bad, ErrVersion, "version 9"},
		{"flags", append([]byte{'O', 'B', 1, 7}, good[4:]...), ErrMalformed, "unknown flags"},
		{"bad zstd", append([]byte{'O', 'B', 1, 1}, []byte("not zstd at all")...), ErrMalformed, "zstd"},
		{"truncated", EncodeBatch(&Batch{Device: "d", Records: sampleBatch(1).Records})[:30], ErrMalformed, ""},
		{"ack as batch", EncodeAck(&Ack{}), ErrMalformed, "not an outpost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeBatch(tt.msg)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.text)
			}
		})
	}
}

func TestAck_RoundTrip(t *testing.T) {
	g := outbox.NewIDGen()
	a := &Ack{Batch: g.New(), Stored: []outbox.ID{g.New(), g.New()}, Rejected: []outbox.ID{g.New()}}
	got, err := DecodeAck(EncodeAck(a))
	if err != nil || got.Batch != a.Batch || len(got.Stored) != 2 || got.Stored[1] != a.Stored[1] || got.Rejected[0] != a.Rejected[0] {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := DecodeAck(EncodeAck(a)[:30]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated ack: %v", err)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(EncodeBatch(sampleBatch(2)))
	f.Add(EncodeBatch(sampleBatch(50)))
	f.Add([]byte{'O', 'B', 1, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		b, err := DecodeBatch(msg)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("unwrapped error: %v", err)
			}
			return
		}
		if !ValidDeviceID(b.Device) {
			t.Fatalf("accepted device %q", b.Device)
		}
	})
}

// fuzzDevice is the device key FuzzSignedBatch's seed is signed with.
var fuzzDevice = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))

// FuzzSignedBatch: a device-signed batch changed anywhere either fails to
// decode, decodes as unsigned, or names another key: whatever decodes
// under the device's key is exactly what the device signed.
func FuzzSignedBatch(f *testing.F) {
	// Fixed IDs: fuzz workers run this function again and must get the
	// same seeds.
	fixed := func(n int) []byte {
		b := sampleBatch(n)
		b.ID = outbox.ID{1}
		for i, r := range b.Records {
			r.ID = outbox.ID{2, byte(i)}
		}
		return SignBatch(EncodeBatch(b), fuzzDevice)
	}
	signed, one := fixed(3), fixed(1)
	f.Add(signed)
	f.Add(one)
	f.Add(signed[:len(signed)-1])
	f.Fuzz(func(t *testing.T, msg []byte) {
		b, err := DecodeBatch(msg)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("unwrapped error: %v", err)
			}
			return
		}
		if b.Key.Equal(fuzzDevice.Public()) && !bytes.Equal(msg, signed) && !bytes.Equal(msg, one) {
			t.Fatalf("a batch the device never signed decoded under its key (%d bytes)", len(msg))
		}
	})
}

// TestSignedBatch: signed batches decode with their key; a signature over
// other bytes or cut short is malformed, never unsigned.
func TestSignedBatch(t *testing.T) {
	msg := SignBatch(EncodeBatch(sampleBatch(3)), fuzzDevice)
	b, err := DecodeBatch(msg)
	if err != nil || !b.Key.Equal(fuzzDevice.Public()) || len(b.Records) != 3 {
		t.Fatalf("signed batch: %+v %v", b, err)
	}
	if id, ok := BatchID(msg); !ok || id != b.ID {
		t.Fatalf("BatchID of a signed batch: %v %v", id, ok)
	}
	bad := append([]byte(nil), msg...)
	bad[10] ^= 1
	if _, err := DecodeBatch(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("altered signed batch: %v", err)
	}
	if _, err := DecodeBatch(msg[:len(msg)-10]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("cut signed batch: %v", err)
	}
	if b, err := DecodeBatch(EncodeBatch(sampleBatch(1))); err != nil || b.Key != nil {
		t.Fatalf("unsigned batch: key %v, %v", b.Key, err)
	}
}

func FuzzDecodeAck(f *testing.F) {
	f.Add(EncodeAck(&Ack{Stored: make([]outbox.ID, 3)}))
	f.Add(EncodeAck(&Ack{Stored: make([]outbox.ID, 2), StoredSums: make([]Sum, 2), Rejected: make([]outbox.ID, 1), RejectedSums: []Sum{{1}}}))
	f.Add(EncodeAck(&Ack{StoredSums: []Sum{}, Refused: &Refusal{Code: RefusedConflict, Reason: "x"}}))
	f.Fuzz(func(t *testing.T, msg []byte) {
		a, err := DecodeAck(msg)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("unwrapped error: %v", err)
			}
			return
		}
		// The content-bound ack: every ID carries a sum or none does, and
		// what decodes encodes back to an ack that decodes the same.
		if a.StoredSums != nil && (len(a.StoredSums) != len(a.Stored) || len(a.RejectedSums) != len(a.Rejected)) {
			t.Fatalf("sums not parallel to IDs: %d/%d %d/%d", len(a.StoredSums), len(a.Stored), len(a.RejectedSums), len(a.Rejected))
		}
		b, err := DecodeAck(EncodeAck(a))
		if err != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip: %+v → %+v, %v", a, b, err)
		}
	})
}

// TestAck_SumsNameTheBytes: an ack names each record with the sum of the
// bytes received; a record cut short or substituted under the same ID
// gets another sum (issue 25, hole 1).
func TestAck_SumsNameTheBytes(t *testing.T) {
	g := outbox.NewIDGen()
	real := &outbox.Record{ID: g.New(), Device: "pi-1", Model: "crop", Version: "1", Task: "image_classification", Output: []byte(`{"label":"blight"}`)}
	fake := *real
	fake.Output = []byte(`{"label":"healthy"}`)
	b, err := DecodeBatch(EncodeBatch(&Batch{ID: g.New(), Device: "pi-1", Records: []*outbox.Record{real}}))
	if err != nil || len(b.Sums) != 1 {
		t.Fatal(err)
	}
	if b.Sums[0] != RecordSum(real.Encode(nil)) || b.Sums[0] == RecordSum(fake.Encode(nil)) {
		t.Fatal("the received sum is not the sum of the bytes sent")
	}
	a := &Ack{Batch: b.ID, Stored: []outbox.ID{real.ID}, Rejected: []outbox.ID{}, StoredSums: b.Sums, RejectedSums: []Sum{}}
	got, err := DecodeAck(EncodeAck(a))
	if err != nil || !reflect.DeepEqual(got, a) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	// Invalid UTF-8 or a NUL in one record is refused alone (issue 25:
	// PostgreSQL refused every batch committed with it).
	for _, bad := range []*outbox.Record{
		{ID: g.New(), Device: "pi-1", Model: "crop\xff", Version: "1", Task: "t", Output: []byte(`{}`)},
		{ID: g.New(), Device: "pi-1", Model: "crop", Version: "1\x00", Task: "t", Output: []byte(`{}`)},
		{ID: g.New(), Device: "pi-1", Model: "crop", Version: "1", Task: "t", Output: []byte(`{"label":"a\u0000b"}`)},
		{ID: g.New(), Device: "pi-1", Model: "crop", Version: "1", Task: "t", Output: []byte(`not json`)},
	} {
		b, err := DecodeBatch(EncodeBatch(&Batch{ID: g.New(), Device: "pi-1", Records: []*outbox.Record{real, bad}}))
		if err != nil || len(b.Records) != 1 || len(b.Bad) != 1 || b.Bad[0].ID != bad.ID {
			t.Fatalf("a record with bad text beside a good one: %+v, %v", b, err)
		}
	}
	// A record that names another device is refused alone (hole 5).
	other := *real
	other.ID, other.Device = g.New(), "pi-2"
	b, err = DecodeBatch(EncodeBatch(&Batch{ID: g.New(), Device: "pi-1", Records: []*outbox.Record{real, &other}}))
	if err != nil || len(b.Records) != 1 || len(b.Bad) != 1 || b.Bad[0].ID != other.ID {
		t.Fatalf("a record of another device in pi-1's batch: %+v, %v", b, err)
	}
}

func TestTopics(t *testing.T) {
	if d, k, ok := DeviceFromTopic(ResultsTopic("kiosk-3")); !ok || d != "kiosk-3" || k != "results" {
		t.Fatalf("%q %q %v", d, k, ok)
	}
	for _, bad := range []string{"outpost/v1/+/results", "outpost/v2/x/results", "outpost/v1/a/b/c", "outpost/v1//results"} {
		if _, _, ok := DeviceFromTopic(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestBackoff_FullJitter(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	var maxSeen time.Duration
	for i := 0; i < 200; i++ {
		d := b.Next()
		ceil := min(100*time.Millisecond<<min(i, 30), 2*time.Second)
		if d <= 0 || d > ceil {
			t.Fatalf("attempt %d: %s outside (0, %s]", i, d, ceil)
		}
		maxSeen = max(maxSeen, d)
	}
	if maxSeen < time.Second {
		t.Fatalf("never approached the cap: max %s", maxSeen)
	}
	// Jitter: many devices starting together do not pick the same delay.
	seen := map[time.Duration]bool{}
	for i := 0; i < 100; i++ {
		bb := Backoff{Min: time.Second, Max: time.Minute}
		seen[bb.Next()] = true
	}
	if len(seen) < 90 {
		t.Fatalf("only %d distinct first delays of 100", len(seen))
	}
}

func TestBudget(t *testing.T) {
	path := t.TempDir() + "/budget.json"
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.Local)
	b, err := LoadBudget(10_000, path)
	if err != nil {
		t.Fatal(err)
	}
	lo, _ := b.leaseOptions(now, 100, 1<<20)
	if lo.MaxPriority != outbox.Bulk || lo.MaxBytes != 10_000 {
		t.Fatalf("fresh day: %+v", lo)
	}
	b.spend(now, 6_000)
	if lo, _ = b.leaseOptions(now, 100, 1<<20); lo.MaxPriority != outbox.Normal {
		t.Fatalf("past bulk share: %+v", lo)
	}
	b.spend(now, 4_500)
	if lo, _ = b.leaseOptions(now, 100, 1<<20); lo.MaxPriority != outbox.Alert {
		t.Fatalf("spent: %+v", lo)
	}
	alert := []*outbox.Record{{Priority: outbox.Alert}}
	normal := []*outbox.Record{{Priority: outbox.Normal}}
	if !b.fits(now, 5_000, alert) || b.fits(now, 1, normal) {
		t.Fatal("alerts may overspend, normal records may not")
	}
	// A reboot keeps the day's spending; the next day starts fresh.
	b2, _ := LoadBudget(10_000, path)
	if got := b2.Spent(now); got != 10_500 {
		t.Fatalf("after reload spent %d, want 10500", got)
	}
	if got := b2.Remaining(now.Add(24 * time.Hour)); got != 10_000 {
		t.Fatalf("next day remaining %d", got)
	}
}

func TestAck_Refused(t *testing.T) {
	g := outbox.NewIDGen()
	a := &Ack{Batch: g.New(), Stored: []outbox.ID{g.New()}, Refused: &Refusal{Code: RefusedUnavailable, Reason: strings.Repeat("x", 300)}}
	msg := EncodeAck(a)
	got, err := DecodeAck(msg)
	if err != nil || got.Refused == nil || got.Refused.Code != RefusedUnavailable || len(got.Refused.Reason) != maxReason || len(got.Stored) != 1 {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := DecodeAck(msg[:len(msg)-10]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated refusal: %v", err)
	}
}

func TestParseBytes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true}, {"5MB", 5e6, true}, {"500KiB", 500 << 10, true}, {"1.5 GB", 1.5e9, true}, {"2TB", 2e12, true},
		{"1024", 1024, true}, {"7b", 7, true},
		{"5MB/day", 0, false}, {"5XB", 0, false}, {"five", 0, false}, {"-1MB", 0, false}, {"NaNMB", 0, false}, {"1e30GB", 0, false},
	} {
		got, err := ParseBytes(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

// TestDecodeBatch_NewerRecordVersion (issue 26): a record of a version
// this hub does not read is not rejected for good (the device would drop
// it); it is counted so the collector refuses the batch and the device
// keeps it.
func TestDecodeBatch_NewerRecordVersion(t *testing.T) {
	g := outbox.NewIDGen()
	good := (&outbox.Record{ID: g.New(), Device: "pi-1", Model: "m", Version: "1", Task: "t", Output: []byte(`{}`)}).Encode(nil)
	newer := append([]byte{outbox.RecordVersion + 1}, good[1:]...)
	bid := g.New()
	body := append([]byte(nil), bid[:]...)
	body = binary.AppendUvarint(body, 4)
	body = append(body, "pi-1"...)
	body = binary.AppendVarint(body, 0)
	body = binary.AppendUvarint(body, 2)
	for _, r := range [][]byte{good, newer} {
		body = binary.AppendUvarint(body, uint64(len(r)))
		body = append(body, r...)
	}
	b, err := DecodeBatch(append([]byte{'O', 'B', 1, 0}, body...))
	if err != nil || len(b.Records) != 1 || len(b.Bad) != 0 || b.NewerRecords != 1 {
		t.Fatalf("a record newer than this build beside a v1: %+v %v", b, err)
	}
}

// TestBatch_CarriesMeaning: a record with its meaning (v3) crosses the wire
// and the hub's decoder takes it as a record it reads (it refused it as
// "newer" once, the demo found).
func TestBatch_CarriesMeaning(t *testing.T) {
	g := outbox.NewIDGen()
	r := &outbox.Record{ID: g.New(), Seq: 1, Device: "pi", Model: "crop", Task: "image_classification", Output: []byte(`{}`),
		Outcome: "diagnosis", Label: "blight"}
	b, err := DecodeBatch(EncodeBatch(&Batch{ID: g.New(), Device: "pi", Records: []*outbox.Record{r}}))
	if err != nil || b.NewerRecords != 0 || len(b.Records) != 1 || b.Records[0].Label != "blight" || b.Records[0].Outcome != "diagnosis" {
		t.Fatalf("decoded %+v, %v", b, err)
	}
}
