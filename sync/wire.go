// Package sync moves results from a device's outbox to the hub and back:
// the wire format (versioned, compressed batches and acks), the Uplink that
// drains an outbox over MQTT with end-to-end acknowledgement, and the
// Collector that stores results on the hub idempotently. sync/mqtt adapts
// paho; everything here talks to the small Conn interface so tests can put
// a real broker, a fault proxy or a fake behind it.
//
// Inside outpost, import the standard library's sync as gosync.
package sync

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	_ "embed" // the zstd dictionary
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	gosync "sync"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"

	"github.com/outpost-edge/outpost/outbox"
)

// ProtocolVersion is the wire version this build speaks.
const ProtocolVersion = 1

// Topic layout (docs/PROTOCOL.md). {device} is the device ID.
const (
	TopicPrefix = "outpost/v1/"
)

// Topics for one device.
func ResultsTopic(device string) string { return TopicPrefix + device + "/results" }

// AckTopic is where the collector acknowledges a device's batches.
func AckTopic(device string) string { return TopicPrefix + device + "/ack" }

// StatusTopic carries the device's retained status and Last Will.
func StatusTopic(device string) string { return TopicPrefix + device + "/status" }

// CmdTopic is reserved for hub → device commands.
func CmdTopic(device string) string { return TopicPrefix + device + "/cmd" }

// DeviceFromTopic extracts {device} from outpost/v1/{device}/{kind}.
func DeviceFromTopic(topic string) (device, kind string, ok bool) {
	rest, found := strings.CutPrefix(topic, TopicPrefix)
	if !found {
		return "", "", false
	}
	device, kind, found = strings.Cut(rest, "/")
	return device, kind, found && ValidDeviceID(device) && !strings.Contains(kind, "/")
}

// ValidDeviceID: 1–64 of [A-Za-z0-9._-]; no MQTT wildcards or separators.
func ValidDeviceID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ErrMalformed wraps every decoding failure; the message says what was wrong.
var ErrMalformed = errors.New("malformed message")

// ErrVersion: a message of a protocol version this build does not read.
var ErrVersion = errors.New("unsupported protocol version")

// Message kinds (second magic byte).
const (
	kindBatch = 'B'
	kindAck   = 'A'
)

// Flags.
const flagZstd = 1

// Batch is one MQTT message of results.
type Batch struct {
	ID      outbox.ID // batch ID (UUIDv7), named by the ack
	Device  string
	Sent    time.Time // device clock at send; the collector derives clock offset
	Records []*outbox.Record
	// Key is the device key that signed the batch (verified by
	// DecodeBatch), nil for an unsigned one.
	Key ed25519.PublicKey
	// Sums holds, parallel to Records, the Sum of each record's bytes as
	// received (DecodeBatch fills it; acks name records with it).
	Sums []Sum
	// Bad lists records DecodeBatch could frame but not decode (never
	// encoded): the collector names them in the ack's rejected list so a
	// poison record cannot make the device resend its batch forever.
	Bad []BadRecord
	// Unnamed counts framed records too short to carry an ID: the
	// collector cannot name them, so its ack refuses the rest of the batch
	// (Ack.Refused) and the device backs off on what the ack left out.
	Unnamed int
	// NewerRecords counts records of a version this build does not read:
	// the collector refuses the batch rather than reject them for good.
	NewerRecords int
}

// maxRecordVersion is the newest record encoding this build reads.
const maxRecordVersion = outbox.RecordVersion

// BadRecord is an undecodable record inside a well-framed batch.
type BadRecord struct {
	ID  outbox.ID
	Sum Sum // of the bytes received
	Err error
}

// Sum names the exact bytes of one record: the first 8 bytes of the
// SHA-256 of its encoding. Acks and bundle receipts carry it beside each
// record ID, and a device deletes a record only when the sum matches the
// bytes it sent — so a copy a stranger substituted or cut short under the
// same ID (and the same batch ID) deletes nothing, signed ack or not. 64
// bits: a second preimage costs 2^64 hashes.
type Sum [8]byte

// MarshalText writes the sum as 16 hex digits (receipts, bundle records).
func (s Sum) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(s[:])), nil }

// UnmarshalText reads 16 hex digits.
func (s *Sum) UnmarshalText(b []byte) error {
	if len(b) != 16 {
		return fmt.Errorf("%w: record sum %q is not 16 hex digits", ErrMalformed, b)
	}
	_, err := hex.Decode(s[:], b)
	if err != nil {
		return fmt.Errorf("%w: record sum %q: %v", ErrMalformed, b, err)
	}
	return nil
}

// RecordSum is the Sum of an encoded record.
func RecordSum(enc []byte) Sum {
	h := sha256.Sum256(enc)
	return Sum(h[:8])
}

// maxRecordsPerBatch and maxDecoded bound what a decoder allocates.
const (
	maxRecordsPerBatch = 100_000
	maxDecoded         = 64 << 20
)

// dictV1 is a zstd dictionary trained on synthetic outpost traffic (model
// names, JSON result shapes, advice in five languages; TestZstdDict
// rebuilds it with -update-dict). Small batches — one result sent the
// moment it is made — come out at 43 % of their raw size with it, against
// 75 % with zstd alone (TestZstdDict). A zstd frame names
// its dictionary by ID, so decoders keep every dictionary ever shipped.
//
//go:embed zstd-v1.dict
var dictV1 []byte

const dictID = 0x6f700001 // "op" 1

// DictV1SHA256 is the published checksum of dictionary v1 (docs/PROTOCOL.md).
const DictV1SHA256 = "f274b68cf03082894fd5e69f26cf53b20a362217ce818e32bfd1d456f8875c39"

// DictionaryV1 returns zstd dictionary v1 (ID 0x6f700001), for hubs written
// in other languages: `outpost collect dictionary --out FILE`.
func DictionaryV1() []byte { return append([]byte(nil), dictV1...) }

var (
	encOnce  gosync.Once
	encPlain *zstd.Encoder
	encDict  *zstd.Encoder
	dec      *zstd.Decoder
)

func codecs() {
	encOnce.Do(func() {
		// Nil writers/readers: these are used through EncodeAll/DecodeAll only.
		encPlain, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		encDict, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithEncoderDict(dictV1))
		dec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxDecoded), zstd.WithDecoderDicts(dictV1))
	})
}

// EncodeBatch writes the v1 batch envelope:
//
//	'O' 'B' version(1) flags(1) | body
//	body (zstd-compressed when flags&1, with or without dictionary v1) =
//	  batch id [16] | device (uvarint len + bytes) | sent unix-ms varint |
//	  count uvarint | count × (uvarint len + outbox record encoding)
//
// Small bodies use the dictionary (that is what it is for); large ones
// carry their own context, and compressing them once is cheaper. The body
// goes raw when compression does not make it smaller.
func EncodeBatch(b *Batch) []byte {
	body := batchBody(b)
	codecs()
	e := encPlain
	if len(body) < dictBelow {
		e = encDict
	}
	out := []byte{'O', kindBatch, ProtocolVersion, 0}
	if z := e.EncodeAll(body, nil); len(z) < len(body) {
		out[3] = flagZstd
		return append(out, z...)
	}
	return append(out, body...)
}

// dictBelow is the body size under which the dictionary is used.
const dictBelow = 8 << 10

func batchBody(b *Batch) []byte {
	var body []byte
	body = append(body, b.ID[:]...)
	body = binary.AppendUvarint(body, uint64(len(b.Device)))
	body = append(body, b.Device...)
	body = binary.AppendVarint(body, b.Sent.UnixMilli())
	body = binary.AppendUvarint(body, uint64(len(b.Records)))
	var rec []byte
	for _, r := range b.Records {
		rec = r.Encode(rec[:0])
		body = binary.AppendUvarint(body, uint64(len(rec)))
		body = append(body, rec...)
	}
	return body
}

func header(msg []byte, kind byte) ([]byte, error) {
	if len(msg) < 4 || msg[0] != 'O' || msg[1] != kind {
		return nil, fmt.Errorf("%w: not an outpost %c message (%d bytes)", ErrMalformed, kind, len(msg))
	}
	if msg[2] != ProtocolVersion {
		return nil, fmt.Errorf("%w: version %d (this build speaks %d)", ErrVersion, msg[2], ProtocolVersion)
	}
	body := msg[4:]
	switch msg[3] {
	case 0:
		return body, nil
	case flagZstd:
		codecs()
		out, err := dec.DecodeAll(body, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrMalformed, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, msg[3])
}

// DecodeBatch parses a batch. Errors wrap ErrMalformed or ErrVersion and
// say what was wrong; it never panics (FuzzDecodeBatch).
func DecodeBatch(msg []byte) (*Batch, error) {
	msg, key, err := splitSignedBatch(msg)
	if err != nil {
		return nil, err
	}
	body, err := header(msg, kindBatch)
	if err != nil {
		return nil, err
	}
	if len(body) < 16 {
		return nil, fmt.Errorf("%w: batch id truncated", ErrMalformed)
	}
	b := &Batch{Key: key}
	copy(b.ID[:], body)
	r := bytes.NewReader(body[16:])
	dev, err := readField(r, 64)
	if err != nil || !ValidDeviceID(string(dev)) {
		return nil, fmt.Errorf("%w: device id %q", ErrMalformed, dev)
	}
	b.Device = string(dev)
	ms, err := binary.ReadVarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: sent time", ErrMalformed)
	}
	b.Sent = time.UnixMilli(ms).UTC()
	n, err := binary.ReadUvarint(r)
	if err != nil || n > maxRecordsPerBatch {
		return nil, fmt.Errorf("%w: record count %d", ErrMalformed, n)
	}
	for i := uint64(0); i < n; i++ {
		raw, err := readField(r, 16<<20)
		if err != nil {
			return nil, fmt.Errorf("%w: record %d of %d: %v", ErrMalformed, i, n, err)
		}
		if len(raw) > 0 && raw[0] > maxRecordVersion {
			// A newer record version: not this hub's to reject for good
			// (the device would drop it); the batch is refused and the
			// device keeps it until a hub that reads it.
			b.NewerRecords++
			continue
		}
		rec, err := outbox.DecodeRecord(raw)
		if err == nil && rec.Device != b.Device {
			// A device speaks only for itself: a record naming another
			// device is refused alone (never stored under either).
			err = fmt.Errorf("record names device %q, the batch is from %q", rec.Device, b.Device)
		}
		if err == nil {
			// One record with invalid UTF-8 or a NUL made PostgreSQL refuse
			// every batch committed with it: refused alone, here.
			err = checkText(rec)
		}
		if err != nil {
			if len(raw) < 17 {
				// No ID to name; the framing still holds, so the good
				// records around it are kept.
				b.Unnamed++
				continue
			}
			// The ID sits at a fixed place (after the version byte): keep
			// the rest of the batch, name this one.
			var id outbox.ID
			copy(id[:], raw[1:17])
			b.Bad = append(b.Bad, BadRecord{ID: id, Sum: RecordSum(raw), Err: err})
			continue
		}
		b.Records = append(b.Records, rec)
		b.Sums = append(b.Sums, RecordSum(raw))
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, r.Len())
	}
	return b, nil
}

// checkText refuses a record whose strings a store could not keep as
// text: invalid UTF-8 or NUL in its names, evidence type or output.
func checkText(r *outbox.Record) error {
	fields := [][2]string{{"model", r.Model}, {"version", r.Version}, {"task", r.Task}, {"output", string(r.Output)}}
	if r.Evidence != nil {
		fields = append(fields, [2]string{"evidence type", r.Evidence.ContentType}, [2]string{"evidence sha256", r.Evidence.SHA256})
	}
	for _, f := range fields {
		if !utf8.ValidString(f[1]) || strings.IndexByte(f[1], 0) >= 0 {
			return fmt.Errorf("record %s: %s is not valid UTF-8 text (or holds a NUL)", r.ID, f[0])
		}
	}
	if len(r.Output) > 0 && !json.Valid(r.Output) {
		return fmt.Errorf("record %s: output is not JSON", r.ID)
	}
	if bytes.Contains(r.Output, []byte(`\u0000`)) {
		return fmt.Errorf("record %s: output holds an escaped NUL", r.ID)
	}
	return nil
}

// BatchID reads just the batch ID of a message DecodeBatch refused, so the
// collector can refuse it by name rather than stay silent (a device would
// otherwise resend it on every ack timeout). ok is false when not even the
// ID can be read; such a message cannot be answered.
func BatchID(msg []byte) (id outbox.ID, ok bool) {
	if len(msg) >= 4+batchTrailer && msg[3]&flagSigned != 0 {
		msg = append(msg[:4:4], msg[4:len(msg)-batchTrailer]...)
		msg[3] &^= flagSigned
	}
	body, err := header(msg, kindBatch)
	if err != nil && len(msg) >= 20 && msg[0] == 'O' && msg[1] == kindBatch && msg[2] == ProtocolVersion && msg[3]&flagZstd == 0 {
		// Unknown flag bits on an uncompressed body: the ID is still
		// readable, so the batch is refused by name.
		body, err = msg[4:], nil
	}
	if err != nil || len(body) < 16 {
		return id, false
	}
	copy(id[:], body)
	return id, true
}

func readField(r *bytes.Reader, max uint64) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("length: %v", err)
	}
	if n > max || n > uint64(r.Len()) {
		return nil, fmt.Errorf("length %d exceeds %d remaining", n, r.Len())
	}
	b := make([]byte, n)
	r.Read(b)
	return b, nil
}

// Ack is the collector's answer to a batch: which records it has durably
// stored (including ones it already had), which it refused for good, and —
// when it could not take the whole batch — a batch-level refusal.
type Ack struct {
	Batch    outbox.ID
	Stored   []outbox.ID
	Rejected []outbox.ID // undecodable for the collector; the device drops them (counted)
	// StoredSums and RejectedSums, parallel to Stored and Rejected, name
	// the bytes the hub received for each record (flag 0x08). A device
	// applies an ack to a record only when its sum matches what it sent.
	StoredSums, RejectedSums []Sum
	// Refused is set when the collector did not store every record it was
	// sent and could not name the rest (a batch it could not decode, records
	// without an ID, a store that failed): the device keeps the records the
	// ack does not name and resends them only after a growing backoff.
	Refused *Refusal
}

// Refusal is a batch-level "not taken" (ack flag 0x02).
type Refusal struct {
	Code   RefusalCode
	Reason string // for logs; at most 255 bytes on the wire
}

// RefusalCode says why a collector did not take (all of) a batch.
type RefusalCode byte

// Refusal codes (docs/PROTOCOL.md). A device treats every code the same
// way — keep, back off, resend — and logs the code and reason.
const (
	RefusedMalformed   RefusalCode = 1 // the batch, or records in it, could not be decoded
	RefusedUnavailable RefusalCode = 2 // the hub could not store it now (storage error, overload)
	RefusedTooLarge    RefusalCode = 3 // over the hub's message or batch limits
	RefusedConflict    RefusalCode = 4 // the hub holds other bytes under a record's ID; the device keeps its own
	RefusedNotDevice   RefusalCode = 5 // not signed by the key the hub enrolled for the device
)

func (c RefusalCode) String() string {
	switch c {
	case RefusedMalformed:
		return "malformed"
	case RefusedUnavailable:
		return "unavailable"
	case RefusedTooLarge:
		return "too-large"
	case RefusedConflict:
		return "conflict"
	case RefusedNotDevice:
		return "not-device"
	}
	return fmt.Sprintf("code-%d", byte(c))
}

const (
	flagRefused = 2
	flagSums    = 8
)

// maxReason bounds a refusal's reason on the wire.
const maxReason = 255

// EncodeAck writes 'O' 'A' version flags | batch [16] | n uvarint | n×id |
// m uvarint | m×id, then, when flags&2 (refused), code(1) | reason len(1) | reason.
// When the ack carries sums (flags&8), each id is followed by its Sum.
func EncodeAck(a *Ack) []byte {
	out := []byte{'O', kindAck, ProtocolVersion, 0}
	sums := a.StoredSums != nil || a.RejectedSums != nil
	if sums {
		out[3] |= flagSums
	}
	out = append(out, a.Batch[:]...)
	for k, ids := range [][]outbox.ID{a.Stored, a.Rejected} {
		out = binary.AppendUvarint(out, uint64(len(ids)))
		for i, id := range ids {
			out = append(out, id[:]...)
			if sums {
				var s Sum // zero (matches nothing) where the caller gave none
				if list := [][]Sum{a.StoredSums, a.RejectedSums}[k]; i < len(list) {
					s = list[i]
				}
				out = append(out, s[:]...)
			}
		}
	}
	if a.Refused != nil {
		out[3] |= flagRefused
		reason := a.Refused.Reason
		if len(reason) > maxReason {
			reason = reason[:maxReason]
		}
		out = append(out, byte(a.Refused.Code), byte(len(reason)))
		out = append(out, reason...)
	}
	return out
}

// DecodeAck parses an ack; errors wrap ErrMalformed or ErrVersion. A
// signed ack's trailer is not checked here: VerifyAck does that.
func DecodeAck(msg []byte) (*Ack, error) {
	if len(msg) >= 4 && msg[0] == 'O' && msg[1] == kindAck && msg[2] == ProtocolVersion && msg[3]&^(flagRefused|flagSigned|flagSums) == 0 {
		// Acks are never compressed; refused, signed and sums are the only flags.
		flags := msg[3]
		if flags&flagSigned != 0 {
			if len(msg) < 4+sigTrailer {
				return nil, fmt.Errorf("%w: signed ack shorter than its signature", ErrMalformed)
			}
			msg = msg[:len(msg)-sigTrailer]
		}
		msg = append([]byte{'O', kindAck, ProtocolVersion, 0}, msg[4:]...)
		return decodeAckBody(msg, flags&flagRefused != 0, flags&flagSums != 0)
	}
	return decodeAckBody(msg, false, false)
}

func decodeAckBody(msg []byte, refused, sums bool) (*Ack, error) {
	body, err := header(msg, kindAck)
	if err != nil {
		return nil, err
	}
	if len(body) < 16 {
		return nil, fmt.Errorf("%w: ack batch id truncated", ErrMalformed)
	}
	a := &Ack{}
	copy(a.Batch[:], body)
	r := bytes.NewReader(body[16:])
	per := uint64(16)
	if sums {
		per += 8
		a.StoredSums, a.RejectedSums = []Sum{}, []Sum{}
	}
	for k, dst := range []*[]outbox.ID{&a.Stored, &a.Rejected} {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > uint64(r.Len())/per {
			return nil, fmt.Errorf("%w: ack id count", ErrMalformed)
		}
		ids := make([]outbox.ID, n)
		for i := range ids {
			r.Read(ids[i][:])
			if sums {
				var s Sum
				r.Read(s[:])
				sp := []*[]Sum{&a.StoredSums, &a.RejectedSums}[k]
				*sp = append(*sp, s)
			}
		}
		*dst = ids
	}
	if refused {
		code, err1 := r.ReadByte()
		n, err2 := r.ReadByte()
		if err1 != nil || err2 != nil || code == 0 || int(n) > r.Len() {
			return nil, fmt.Errorf("%w: ack refusal truncated", ErrMalformed)
		}
		reason := make([]byte, n)
		r.Read(reason)
		a.Refused = &Refusal{Code: RefusalCode(code), Reason: strings.ToValidUTF8(string(reason), "?")}
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes in ack", ErrMalformed, r.Len())
	}
	return a, nil
}
