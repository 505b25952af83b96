package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	gosync "sync"
	"time"

	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// EvidenceInfo describes one piece of evidence a device uploaded (or is
// uploading): the photo or recording behind result Of.
type EvidenceInfo struct {
	Device      string    `json:"device"`
	ID          outbox.ID `json:"id"` // the evidence record
	Of          outbox.ID `json:"of"` // the result
	ContentType string    `json:"content_type"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	Have        int64     `json:"have"`
	Complete    bool      `json:"complete"`
	Received    time.Time `json:"received"`
	Refused     string    `json:"refused,omitempty"` // set only in the answer to a chunk
}

func newEvidenceInfo(device string, c *osync.EvidenceChunk, received time.Time) EvidenceInfo {
	return EvidenceInfo{Device: device, ID: c.ID, Of: c.Of, ContentType: c.ContentType, Size: c.Size,
		SHA256: hex.EncodeToString(c.SHA256[:]), Received: received}
}

// applyChunk is the one rule both stores follow. A chunk lands only at
// the offset stored so far, inside the declared size, agreeing with the
// upload's size, digest and result; anything else just learns that
// offset (a stranger's chunk cannot make the hub refuse a device's
// photo). A whole piece whose SHA-256 matches (a bundle, or a resend from
// the start) replaces whatever part was there. The first bytes must look
// like a photo or a recording; a whole that does not match its SHA-256
// starts again from zero rather than being refused. keep false: drop
// what is stored (refused).
func applyChunk(info EvidenceInfo, data []byte, c *osync.EvidenceChunk) (EvidenceInfo, []byte, bool) {
	if info.Complete || len(c.Data) == 0 {
		return info, data, true
	}
	if c.Offset == 0 && int64(len(c.Data)) == c.Size && sha256.Sum256(c.Data) == c.SHA256 {
		if !looksLikeEvidence(c.Data) {
			info.Refused = fmt.Sprintf("not a photo or recording (%s)", http.DetectContentType(c.Data))
			return info, nil, false
		}
		whole := newEvidenceInfo(info.Device, c, info.Received)
		whole.Have, whole.Complete = c.Size, true
		return whole, append([]byte(nil), c.Data...), true
	}
	if c.Offset != info.Have || info.Size != c.Size || info.SHA256 != hex.EncodeToString(c.SHA256[:]) ||
		info.Of != c.Of || info.Have+int64(len(c.Data)) > info.Size {
		return info, data, true
	}
	if info.Have == 0 && !looksLikeEvidence(c.Data) {
		info.Refused = fmt.Sprintf("not a photo or recording (%s)", http.DetectContentType(c.Data))
		return info, nil, false
	}
	data = append(data, c.Data...)
	// Have grows by the chunk: a store may pass only what it needs to
	// check (the bbolt store passes the stored bytes only for the chunk
	// that completes an upload).
	info.Have += int64(len(c.Data))
	if info.Have == info.Size {
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != info.SHA256 {
			// A chunk on the way was not the device's: start over.
			info.Have = 0
			return info, []byte{}, true
		}
		info.Complete = true
	}
	return info, data, true
}

func looksLikeEvidence(b []byte) bool {
	kind := http.DetectContentType(b)
	return strings.HasPrefix(kind, "image/") || strings.HasPrefix(kind, "audio/")
}

// handleEvidence stores one uploaded chunk and answers with what the hub
// has: go on from there, done, or refused.
func (c *Collector) handleEvidence(ctx context.Context, conn osync.Conn, device string, payload []byte, now time.Time) {
	ch, err := osync.DecodeEvidenceChunk(payload)
	if err != nil {
		c.count(&c.n.C.Malformed, 1)
		c.log.Warn("collector: evidence chunk rejected", "device", device, "err", err)
		if id, ok := osync.EvidenceID(payload); ok {
			// Refused by name, so the device drops it instead of resending
			// it forever (too large, or not decodable at all).
			c.count(&c.n.C.EvRefused, 1)
			a := &osync.EvidenceAck{ID: id, State: osync.EvidenceRefused, Reason: err.Error()}
			conn.Publish(ctx, osync.CmdTopic(device), 1, false, osync.EncodeEvidenceAck(a, device, c.o.Key))
		}
		return
	}
	if len(ch.Data) > 0 && !c.evQuota.take(device, int64(len(ch.Data)), now, c.o.EvidenceDaily) {
		// Over the device's daily quota: store nothing, tell it what the
		// hub has (it resumes from there another day).
		c.count(&c.n.C.EvThrottled, 1)
		ch.Data = nil
	}
	info, err := c.putInOrder(ctx, device, ch, now)
	if err != nil {
		c.log.Error("collector: storing evidence failed (the device resends)", "device", device, "err", err)
		return
	}
	a := &osync.EvidenceAck{ID: ch.ID, Have: info.Have, State: osync.EvidencePartial}
	switch {
	case info.Refused != "":
		a.State, a.Reason = osync.EvidenceRefused, info.Refused
		c.count(&c.n.C.EvRefused, 1)
		c.log.Warn("collector: evidence refused", "device", device, "id", ch.ID.String(), "reason", info.Refused)
	case info.Complete:
		a.State = osync.EvidenceStored
		if len(ch.Data) > 0 && ch.Offset+int64(len(ch.Data)) == info.Size {
			c.count(&c.n.C.Evidence, 1)
		}
	}
	c.count(&c.n.C.EvBytes, int64(len(ch.Data)))
	if err := conn.Publish(ctx, osync.CmdTopic(device), 1, false, osync.EncodeEvidenceAck(a, device, c.o.Key)); err != nil {
		c.log.Warn("collector: evidence ack not sent", "device", device, "err", err)
	}
}

// Early chunks kept per upload, and uploads with early chunks, at most.
const (
	maxEarlyChunks  = 16
	maxEarlyUploads = 256
)

// putInOrder stores a chunk; one that came before its turn (a device sends
// several at once and paho hands them over in any order) is kept in memory
// until the upload reaches its offset, then stored with the ones after it.
// Only the collector's run goroutine calls it.
func (c *Collector) putInOrder(ctx context.Context, device string, ch *osync.EvidenceChunk, now time.Time) (EvidenceInfo, error) {
	info, err := c.st.PutEvidence(ctx, device, ch, now)
	if err != nil {
		return info, err
	}
	k := device + "/" + ch.ID.String()
	buf := c.early[k]
	if !info.Complete && info.Refused == "" && len(ch.Data) > 0 && ch.Offset > info.Have && ch.Size == info.Size {
		if buf == nil && len(c.early) < maxEarlyUploads {
			if c.early == nil {
				c.early = map[string]map[int64]*osync.EvidenceChunk{}
			}
			buf = map[int64]*osync.EvidenceChunk{}
			c.early[k] = buf
		}
		if buf != nil && len(buf) < maxEarlyChunks {
			buf[ch.Offset] = ch
		}
		return info, nil
	}
	for buf != nil && !info.Complete && info.Refused == "" {
		next, ok := buf[info.Have]
		if !ok {
			break
		}
		delete(buf, info.Have)
		if info, err = c.st.PutEvidence(ctx, device, next, now); err != nil {
			return info, err
		}
	}
	if buf != nil && (info.Complete || info.Refused != "" || len(buf) == 0) {
		delete(c.early, k)
	}
	return info, nil
}

// DefaultEvidenceDaily is CollectorOptions.EvidenceDaily's default.
const DefaultEvidenceDaily = 256 << 20

// evidenceQuota counts each device's evidence bytes per UTC day.
type evidenceQuota struct {
	mu   gosync.Mutex
	day  string
	used map[string]int64
}

// take counts n bytes for device, or reports false when they would pass
// the daily cap.
func (q *evidenceQuota) take(device string, n int64, now time.Time, daily int64) bool {
	if daily <= 0 {
		daily = DefaultEvidenceDaily
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if d := now.UTC().Format("2006-01-02"); d != q.day || q.used == nil {
		q.day, q.used = d, map[string]int64{}
	}
	if q.used[device]+n > daily {
		return false
	}
	q.used[device] += n
	return true
}
