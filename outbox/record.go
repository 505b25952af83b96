package outbox

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Priority orders delivery and eviction: alerts first, bulk last.
type Priority uint8

// Priorities, lowest value = most urgent. Keys sort by priority then ID.
const (
	Alert  Priority = 0
	Normal Priority = 1
	Bulk   Priority = 2
)

// NumPriorities is the number of priority levels.
const NumPriorities = 3

var prioNames = [...]string{"alert", "normal", "bulk"}

func (p Priority) String() string {
	if int(p) < len(prioNames) {
		return prioNames[p]
	}
	return fmt.Sprintf("priority(%d)", p)
}

// ParsePriority reads "alert", "normal" or "bulk".
func ParsePriority(s string) (Priority, error) {
	for i, n := range prioNames {
		if n == s {
			return Priority(i), nil
		}
	}
	return 0, fmt.Errorf("outbox: priority %q: want alert, normal or bulk", s)
}

// MarshalText implements encoding.TextMarshaler.
func (p Priority) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Priority) UnmarshalText(b []byte) error {
	v, err := ParsePriority(string(b))
	*p = v
	return err
}

// Tier says what a record carries: labels (small, always synced) or
// evidence (photo/audio, synced only when configured and within budget).
type Tier uint8

// Tiers.
const (
	TierLabels   Tier = 0
	TierEvidence Tier = 1
)

// Evidence references raw input kept beside a record (never inlined in it).
type Evidence struct {
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
}

// Record is one inference result as it waits for the hub.
type Record struct {
	ID       ID        `json:"id"`
	Seq      uint64    `json:"seq"`     // outbox-assigned, strictly increasing across restarts
	Created  time.Time `json:"created"` // device wall clock; the hub corrects drift with Seq and its receive time
	Device   string    `json:"device"`
	Model    string    `json:"model"`
	Version  string    `json:"model_version"`
	Task     string    `json:"task"`
	Priority Priority  `json:"priority"`
	Tier     Tier      `json:"tier"`
	Output   []byte    `json:"output"` // the task's JSON output (labels+scores, segments, keyword)
	Evidence *Evidence `json:"evidence,omitempty"`
	// Boot and Mono place the record on the device's monotonic clock: the
	// boot it was made in (the OS boot ID) and the time since that boot.
	// Unlike Created (the wall clock, which a Pi without an RTC may have
	// wrong by months), they never jump: ages and TTLs use them, and the
	// hub corrects Created with them.
	Boot ID            `json:"boot,omitzero"`
	Mono time.Duration `json:"mono_ns,omitempty"`
	// Outcome and Label are what the result means, set by the device from
	// its task table (models.MeaningOf) so the hub never guesses it from
	// the output's field names: what happened ("diagnosis", "retake",
	// "command", …) and the label the hub counts ("" when none: an
	// uncertain answer counts as no disease). Empty in records from
	// devices before they were carried (the hub derives them once).
	Outcome string `json:"outcome,omitempty"`
	Label   string `json:"label,omitempty"`
}

// MarshalJSON writes Output as embedded JSON (not base64) when it is valid
// JSON, so exports read naturally in jq, a spreadsheet or a text editor.
func (r Record) MarshalJSON() ([]byte, error) {
	type plain Record
	out := json.RawMessage(r.Output)
	if !json.Valid(r.Output) {
		b, _ := json.Marshal(string(r.Output))
		out = b
	}
	return json.Marshal(struct {
		plain
		Output json.RawMessage `json:"output"`
	}{plain(r), out})
}

// UnmarshalJSON reads what MarshalJSON writes (used by bundle import).
func (r *Record) UnmarshalJSON(b []byte) error {
	type plain Record
	var v struct {
		*plain
		Output json.RawMessage `json:"output"`
	}
	v.plain = (*plain)(r)
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	r.Output = []byte(v.Output)
	return nil
}

// ErrCorruptRecord is returned by DecodeRecord for bytes that are not a record.
var ErrCorruptRecord = errors.New("outbox: corrupt record")

// recordV1 is the encoding version byte. Layout (all integers varint unless noted):
//
//	0x01 | id [16] | seq uvarint | created unix-ns varint | priority u8 | tier u8 |
//	device, model, version, task, output: uvarint length + bytes |
//	evidence flag u8 [ | content type, sha256: length+bytes | size uvarint ]
//
// recordV2 (written when the record has a Boot) appends boot [16] | mono-ns uvarint.
// recordV3 (written when the record carries its meaning) appends to the
// V2 layout (boot all zero when unknown) outcome, label: length+bytes.
const (
	recordV1 = 1
	recordV2 = 2
	recordV3 = 3
)

// RecordVersion is the newest record encoding this build writes and
// reads; a hub takes batches whose records are no newer (sync's decoder
// asks this, so a new version cannot be forgotten there: it was, once).
const RecordVersion = recordV3

// maxField bounds any one decoded field so a corrupt length cannot allocate gigabytes.
const maxField = 16 << 20

// Encode appends r's binary form to dst.
func (r *Record) Encode(dst []byte) []byte {
	return r.encodeRest(r.encodeHead(dst))
}

// The encoding is version | ID | Seq | rest. The outbox assigns ID and Seq
// at commit, inside its write transaction; everything else is known at
// Append, so the producer encodes the rest on its own goroutine and the
// committer only joins the two (encodeWithRest).

func (r *Record) version() byte {
	switch {
	case r.Outcome != "" || r.Label != "" || r.Boot == (ID{}) && r.Mono != 0:
		return recordV3
	case r.Boot != (ID{}):
		return recordV2
	}
	return recordV1
}

func (r *Record) encodeHead(dst []byte) []byte {
	dst = append(dst, r.version())
	dst = append(dst, r.ID[:]...)
	return binary.AppendUvarint(dst, r.Seq)
}

// encodeWithRest is Encode given rest = encodeRest(nil) made earlier.
func (r *Record) encodeWithRest(rest []byte) []byte {
	dst := make([]byte, 0, 1+len(r.ID)+binary.MaxVarintLen64+len(rest))
	return append(r.encodeHead(dst), rest...)
}

func (r *Record) encodeRest(dst []byte) []byte {
	v := r.version()
	dst = binary.AppendVarint(dst, r.Created.UnixNano())
	dst = append(dst, byte(r.Priority), byte(r.Tier))
	for _, s := range []string{r.Device, r.Model, r.Version, r.Task} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Output)))
	dst = append(dst, r.Output...)
	if r.Evidence == nil {
		dst = append(dst, 0)
	} else {
		dst = append(dst, 1)
		for _, s := range []string{r.Evidence.ContentType, r.Evidence.SHA256} {
			dst = binary.AppendUvarint(dst, uint64(len(s)))
			dst = append(dst, s...)
		}
		dst = binary.AppendUvarint(dst, uint64(r.Evidence.Size))
	}
	// V2 adds the boot and monotonic clock; V3 (boot all zero when
	// unknown) also outcome and label.
	if v >= recordV2 {
		dst = append(dst, r.Boot[:]...)
		dst = binary.AppendUvarint(dst, uint64(max(r.Mono, 0)))
	}
	if v == recordV3 {
		for _, s := range []string{r.Outcome, r.Label} {
			dst = binary.AppendUvarint(dst, uint64(len(s)))
			dst = append(dst, s...)
		}
	}
	return dst
}

// DecodeRecord parses an encoded record. It never panics; errors wrap ErrCorruptRecord.
func DecodeRecord(b []byte) (*Record, error) {
	d := decoder{b: b}
	v := d.byte()
	if v != recordV1 && v != recordV2 && v != recordV3 {
		if d.err != nil {
			return nil, d.err
		}
		return nil, fmt.Errorf("%w: version %d (this build reads %d to %d)", ErrCorruptRecord, v, recordV1, recordV3)
	}
	r := &Record{}
	copy(r.ID[:], d.bytes(16))
	r.Seq = d.uvarint()
	ns := d.varint()
	r.Created = time.Unix(0, ns).UTC()
	r.Priority, r.Tier = Priority(d.byte()), Tier(d.byte())
	r.Device, r.Model, r.Version, r.Task = d.str(), d.str(), d.str(), d.str()
	if out := d.field(); len(out) > 0 {
		r.Output = append([]byte(nil), out...)
	}
	switch flag := d.byte(); flag {
	case 0:
	case 1:
		ev := &Evidence{ContentType: d.str(), SHA256: d.str()}
		ev.Size = int64(d.uvarint())
		r.Evidence = ev
	default:
		if d.err == nil {
			d.err = fmt.Errorf("%w: evidence flag %d (want 0 or 1)", ErrCorruptRecord, flag)
		}
	}
	if v >= recordV2 {
		copy(r.Boot[:], d.bytes(16))
		r.Mono = time.Duration(d.uvarint())
		if d.err == nil && (v == recordV2 && r.Boot == ID{} || r.Mono < 0) {
			d.err = fmt.Errorf("%w: v2 record without a boot id", ErrCorruptRecord)
		}
	}
	if v == recordV3 {
		r.Outcome, r.Label = d.str(), d.str()
	}
	if d.err == nil && d.p != len(b) {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorruptRecord, len(b)-d.p)
	}
	if d.err == nil && r.Priority >= NumPriorities {
		d.err = fmt.Errorf("%w: priority %d", ErrCorruptRecord, r.Priority)
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

type decoder struct {
	b   []byte
	p   int
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or bad %s at byte %d", ErrCorruptRecord, what, d.p)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || d.p >= len(d.b) {
		d.fail("byte")
		return 0
	}
	d.p++
	return d.b[d.p-1]
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b)-d.p {
		d.fail("field")
		return nil
	}
	d.p += n
	return d.b[d.p-n : d.p]
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.p:])
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.p += n
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.p:])
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.p += n
	return v
}

func (d *decoder) field() []byte {
	n := d.uvarint()
	if n > maxField {
		d.fail("length")
		return nil
	}
	return d.bytes(int(n))
}

func (d *decoder) str() string { return string(d.field()) }
