package sync

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/outbox"
)

// Evidence (the photo or recording behind an answer, when the sharing
// policy lets it leave) goes in its own tier, after every label, in
// chunks the hub acknowledges one by one:
//
//	outpost/v1/{device}/evidence  device → hub  'O' 'E': one chunk
//	outpost/v1/{device}/cmd       hub → device  'O' 'V': bytes stored so far, or done, or refused
//
// The device keeps the evidence until the hub says it has all of it.

// EvidenceTopic is where a device uploads evidence chunks.
func EvidenceTopic(device string) string { return TopicPrefix + device + "/evidence" }

const (
	kindEvidence    = 'E'
	kindEvidenceAck = 'V'
	// DefaultEvidenceChunk: about 3 s at 5 KB/s.
	DefaultEvidenceChunk = 16 << 10
	// MaxEvidenceBytes bounds one piece of evidence (the hub refuses more).
	MaxEvidenceBytes = 16 << 20
)

// EvidenceChunk is one upload message. A chunk with no Data asks the hub
// how much it already has (the first message of a resumed upload).
type EvidenceChunk struct {
	ID          outbox.ID // the evidence record
	Of          outbox.ID // the result it belongs to
	Size        int64     // of the whole evidence
	Offset      int64
	SHA256      [32]byte // of the whole evidence
	ContentType string
	Data        []byte
}

// EncodeEvidenceChunk writes 'O' 'E' version 0 | id [16] | of [16] |
// sha256 [32] | size uvarint | offset uvarint | content type (u8 length +
// bytes) | data.
func EncodeEvidenceChunk(c *EvidenceChunk) []byte {
	msg := []byte{'O', kindEvidence, ProtocolVersion, 0}
	msg = append(msg, c.ID[:]...)
	msg = append(msg, c.Of[:]...)
	msg = append(msg, c.SHA256[:]...)
	msg = binary.AppendUvarint(msg, uint64(c.Size))
	msg = binary.AppendUvarint(msg, uint64(c.Offset))
	ct := c.ContentType
	if len(ct) > 255 {
		ct = ct[:255]
	}
	msg = append(msg, byte(len(ct)))
	msg = append(msg, ct...)
	return append(msg, c.Data...)
}

// DecodeEvidenceChunk parses an upload message; errors wrap ErrMalformed
// or ErrVersion.
func DecodeEvidenceChunk(msg []byte) (*EvidenceChunk, error) {
	if len(msg) < 4+16+16+32+3 || msg[0] != 'O' || msg[1] != kindEvidence || msg[3] != 0 {
		return nil, fmt.Errorf("%w: not an evidence chunk (%d bytes)", ErrMalformed, len(msg))
	}
	if msg[2] != ProtocolVersion {
		return nil, fmt.Errorf("%w: version %d", ErrVersion, msg[2])
	}
	c := &EvidenceChunk{}
	p := 4
	copy(c.ID[:], msg[p:])
	copy(c.Of[:], msg[p+16:])
	copy(c.SHA256[:], msg[p+32:])
	p += 64
	size, n := binary.Uvarint(msg[p:])
	if n <= 0 || size == 0 || size > MaxEvidenceBytes {
		return nil, fmt.Errorf("%w: evidence size %d (1 to %d bytes)", ErrMalformed, size, MaxEvidenceBytes)
	}
	p += n
	off, n := binary.Uvarint(msg[p:])
	if n <= 0 || off > size {
		return nil, fmt.Errorf("%w: evidence offset %d of %d", ErrMalformed, off, size)
	}
	p += n
	if p >= len(msg) || p+1+int(msg[p]) > len(msg) {
		return nil, fmt.Errorf("%w: content type truncated", ErrMalformed)
	}
	c.ContentType = string(msg[p+1 : p+1+int(msg[p])])
	p += 1 + int(msg[p])
	c.Size, c.Offset, c.Data = int64(size), int64(off), msg[p:]
	if c.Offset+int64(len(c.Data)) > c.Size {
		return nil, fmt.Errorf("%w: chunk ends at %d, past the evidence's %d bytes", ErrMalformed, c.Offset+int64(len(c.Data)), c.Size)
	}
	return c, nil
}

// EvidenceID reads the evidence record ID of an upload message that may
// not decode otherwise (to refuse it by name).
func EvidenceID(msg []byte) (outbox.ID, bool) {
	var id outbox.ID
	if len(msg) < 20 || msg[0] != 'O' || msg[1] != kindEvidence || msg[2] != ProtocolVersion {
		return id, false
	}
	copy(id[:], msg[4:20])
	return id, id != outbox.ID{}
}

// Evidence upload outcomes in an EvidenceAck.
const (
	EvidencePartial  = 0 // Have bytes stored: send from there
	EvidenceStored   = 1 // all of it stored and its SHA-256 checked: delete it
	EvidenceRefused  = 2 // never (too large, not a photo or recording, digest mismatch): drop it
	maxEvidenceState = EvidenceRefused
)

// EvidenceAck is the hub's answer to a chunk.
type EvidenceAck struct {
	ID     outbox.ID
	Have   int64
	State  byte
	Reason string
}

// EncodeEvidenceAck writes 'O' 'V' version flags | id [16] | have uvarint
// | state u8 | reason (u8 length + bytes), signed for device when key is
// set.
func EncodeEvidenceAck(a *EvidenceAck, device string, key ed25519.PrivateKey) []byte {
	msg := []byte{'O', kindEvidenceAck, ProtocolVersion, 0}
	msg = append(msg, a.ID[:]...)
	msg = binary.AppendUvarint(msg, uint64(a.Have))
	r := a.Reason
	if len(r) > maxReason {
		r = r[:maxReason]
	}
	msg = append(msg, a.State, byte(len(r)))
	msg = append(msg, r...)
	if key != nil {
		msg = signMsg(cmdSignLabel, msg, device, key)
	}
	return msg
}

// DecodeEvidenceAck checks the signature against the pinned hub keys and
// parses the ack.
func DecodeEvidenceAck(msg []byte, device string, hubKeys []ed25519.PublicKey) (*EvidenceAck, error) {
	body, err := cmdBody(msg, kindEvidenceAck, "an evidence ack", device, hubKeys)
	if err != nil {
		return nil, err
	}
	if len(body) < 16+3 {
		return nil, fmt.Errorf("%w: evidence ack truncated", ErrMalformed)
	}
	a := &EvidenceAck{}
	copy(a.ID[:], body)
	have, n := binary.Uvarint(body[16:])
	if n <= 0 || have > MaxEvidenceBytes || 16+n+2 > len(body) {
		return nil, fmt.Errorf("%w: evidence ack truncated", ErrMalformed)
	}
	p := 16 + n
	a.Have, a.State = int64(have), body[p]
	if a.State > maxEvidenceState || p+2+int(body[p+1]) != len(body) {
		return nil, fmt.Errorf("%w: evidence ack state %d or reason length", ErrMalformed, a.State)
	}
	a.Reason = string(body[p+2:])
	return a, nil
}

// upload is the evidence record the uplink is sending (session goroutine).
type upload struct {
	rec    *outbox.Record
	blob   []byte
	sum    [32]byte
	of     outbox.ID
	have   int64 // bytes the hub has, as it last said
	next   int64 // bytes sent so far (≥ have: the rest are in flight)
	out    int   // chunks sent whose answer has not come (every chunk is answered)
	asked  bool  // chunks are out, their acks not all in
	sentAt time.Time
	probed bool
}

// EvidenceStats count evidence uploads in this process.
type EvidenceStats struct {
	Uploaded  int64 `json:"uploaded" metric:"outpost_sync_evidence_uploaded_total" help:"Photos and recordings the hub stored whole."`
	Refused   int64 `json:"refused" metric:"outpost_sync_evidence_refused_total" help:"Photos and recordings the hub refused for good (dropped)."`
	Withheld  int64 `json:"withheld" metric:"outpost_sync_evidence_withheld_total" help:"Photos and recordings the sharing policy no longer lets go (dropped unsent)."`
	Bytes     int64 `json:"bytes" metric:"outpost_sync_evidence_bytes_total" help:"Evidence chunk bytes sent."`
	Resent    int64 `json:"resent" metric:"outpost_sync_evidence_resent_bytes_total" help:"Evidence chunk bytes sent again (lost link, timeout)."`
	WireBytes int64 `json:"wire_bytes" metric:"outpost_sync_evidence_wire_bytes_total" help:"Estimated bytes on the wire for evidence, both directions."`
}

// sendEvidence moves the evidence tier along by at most one message:
// picks the next piece, asks the hub where it stands, or sends the next
// chunk, inside the budget's bulk share.
func (u *Uplink) sendEvidence(ctx context.Context, conn Conn) (bool, error) {
	now := u.o.Now()
	if u.up == nil {
		recs, err := u.ob.LeaseWith(outbox.LeaseOptions{Max: 1, MinTier: outbox.TierEvidence, MaxTier: outbox.TierEvidence, MaxPriority: outbox.Bulk})
		if err != nil || len(recs) == 0 {
			return false, err
		}
		r := recs[0]
		if u.o.MayShare != nil && !u.o.MayShare(r) {
			// The policy changed since it was kept: it must not leave.
			u.ob.Ack([]outbox.ID{r.ID})
			atomic.AddInt64(&u.ev.C.Withheld, 1)
			u.log.Info("sync: evidence withheld by the sharing policy; deleted", "id", r.ID.String(), "model", r.Model)
			return true, nil
		}
		blob, err := u.ob.Evidence(r.ID)
		var of struct {
			Of string `json:"of"`
		}
		json.Unmarshal(r.Output, &of)
		ofID, perr := outbox.ParseID(of.Of)
		if err != nil || blob == nil || r.Evidence == nil || perr != nil {
			u.ob.Ack([]outbox.ID{r.ID})
			u.log.Error("sync: unreadable evidence record dropped", "id", r.ID.String(), "err", err)
			return true, nil
		}
		if res, _ := u.ob.Get(ofID); res != nil {
			// Its result is still here: the hub has not stored it (it may be
			// refusing it), so its photo would have nothing to belong to.
			// Held back until the result is acknowledged.
			u.ob.Release([]outbox.ID{r.ID}) // looked at again once the result's ack is in
			return false, nil
		}
		sum, _ := hex.DecodeString(r.Evidence.SHA256)
		u.up = &upload{rec: r, blob: blob, of: ofID}
		copy(u.up.sum[:], sum)
	}
	e := u.up
	// Up to EvidenceWindow chunks in flight, acked by offset: one chunk per
	// round trip cost 225 s for 72 MB on loopback, far more on a 2G link.
	if e.asked && now.Sub(e.sentAt) >= u.o.AckTimeout {
		// Nothing heard for a while: send again from what the hub has.
		atomic.AddInt64(&u.ev.C.Resent, max(e.next-e.have, min(int64(u.o.EvidenceChunk), int64(len(e.blob))-e.have)))
		e.next, e.asked, e.out = e.have, false, 0
	}
	if !e.probed && e.asked {
		return false, nil // the probe's answer says where to start
	}
	if e.next < e.have {
		e.next = e.have
	}
	window := int64(u.o.EvidenceWindow) * int64(u.o.EvidenceChunk)
	if e.probed && (e.next >= int64(len(e.blob)) || e.next-e.have >= window) {
		return false, nil
	}
	c := &EvidenceChunk{ID: e.rec.ID, Of: e.of, Size: int64(len(e.blob)), Offset: e.next, SHA256: e.sum, ContentType: e.rec.Evidence.ContentType}
	if e.probed {
		c.Data = e.blob[e.next:min(int64(len(e.blob)), e.next+int64(u.o.EvidenceChunk))]
	}
	msg := EncodeEvidenceChunk(c)
	cost := WireCost(EvidenceTopic(u.o.Device), len(msg), 0) - ackOverhead + WireCost(CmdTopic(u.o.Device), 40, 0) - ackOverhead
	if !u.o.Budget.allowsBulk(now, cost) {
		return false, nil
	}
	// Chunks with data go at QoS 0: every chunk is answered by the hub
	// (and sent again when it is not), and a QoS 1 publish waits a round
	// trip for the broker's PUBACK, which kept one chunk per round trip on
	// the wire whatever the window. The probe stays QoS 1.
	qos := byte(1)
	if len(c.Data) > 0 && u.o.EvidenceWindow > 1 {
		qos = 0
	}
	if err := conn.Publish(ctx, EvidenceTopic(u.o.Device), qos, false, msg); err != nil {
		return false, fmt.Errorf("publish evidence: %w", err)
	}
	u.o.Budget.spendOn(now, TierNameEvidence, cost)
	atomic.AddInt64(&u.ev.C.WireBytes, cost)
	atomic.AddInt64(&u.ev.C.Bytes, int64(len(c.Data)))
	if !e.asked {
		e.sentAt = now // the ack clock runs from the oldest unanswered chunk
	}
	e.asked = true
	e.next += int64(len(c.Data))
	e.out++
	return true, nil
}

// handleEvidenceAck applies the hub's answer to the upload in progress.
func (u *Uplink) handleEvidenceAck(msg []byte) {
	a, err := DecodeEvidenceAck(msg, u.o.Device, u.o.HubKeys)
	if err != nil {
		atomic.AddInt64(&u.n.C.ForgedAcks, 1)
		u.log.Warn("sync: ignoring an evidence ack", "err", err)
		return
	}
	e := u.up
	if e == nil || a.ID != e.rec.ID {
		atomic.AddInt64(&u.n.C.StrayAcks, 1)
		return
	}
	switch a.State {
	case EvidenceStored, EvidenceRefused:
		if _, err := u.ob.Ack([]outbox.ID{e.rec.ID}); err != nil {
			u.log.Error("sync: deleting uploaded evidence failed; it will be offered again", "err", err)
		}
		if a.State == EvidenceStored {
			atomic.AddInt64(&u.ev.C.Uploaded, 1)
		} else {
			atomic.AddInt64(&u.ev.C.Refused, 1)
			u.log.Error("sync: the hub refused evidence; dropped", "id", e.rec.ID.String(), "reason", a.Reason)
		}
		u.up = nil
	default:
		// Answers may arrive out of order (paho hands messages over
		// concurrently): what the hub has only grows, except when it
		// started over, which its answers to every chunk then show.
		h, now := min(a.Have, int64(len(e.blob))), u.o.Now()
		e.out = max(e.out-1, 0)
		if !e.probed {
			// The probe's answer: start from what the hub has.
			e.probed, e.have, e.next, e.sentAt = true, h, h, now
		}
		if h > e.have {
			e.have, e.sentAt = h, now
		}
		if e.out == 0 && e.next > e.have {
			// Every chunk answered, yet the hub lacks some (one came to it
			// out of order, or it started over): send again from its last word.
			e.have = min(e.have, h)
			atomic.AddInt64(&u.ev.C.Resent, e.next-e.have)
			e.next, e.sentAt = e.have, now
		}
		e.asked = e.next > e.have
	}
}

// EvidenceStats returns the evidence counters.
func (u *Uplink) EvidenceStats() EvidenceStats { return u.ev.Snapshot() }
