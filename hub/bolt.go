package hub

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// BoltStore is the embedded Store: one bbolt file, one process at a time.
type BoltStore struct {
	db *bolt.DB
}

var (
	bResults = []byte("results")       // device len(1) | device | id[16] -> received ms (8) | record
	bDevices = []byte("devices")       // device -> DeviceStatus JSON
	bMeta    = []byte("meta")          // client_id -> the collector's MQTT client id
	bEvMeta  = []byte("evidence")      // resultKey(device, evidence id) -> EvidenceInfo JSON
	bEvData  = []byte("evidence_data") // resultKey(device, evidence id) + offset [8] -> one chunk
	bReviews = []byte("reviews")       // resultKey(device, result id) -> StoredReview JSON
	bByTime  = []byte("by_received")   // received ms [8] | resultKey -> nothing: the newest first, cheaply
	bDaily   = []byte("daily")         // day \0 device \0 model \0 label -> count [8]: the page's aggregates
	bWarn    = []byte("warnings")      // warning id [16] -> StoredWarning JSON (deliveries inside: few devices per region)
)

// Keys in bMeta for the indexes: built once over an older store's results.
var (
	metaIndexed = []byte("index_v1")
	metaCount   = []byte("results")
)

// OpenBolt opens (or creates) a bbolt store at path.
func OpenBolt(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s is held by a running 'outpost collect' (export, devices and import go through its socket; stop it for anything else, or use a PostgreSQL store)", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("hub: open %s: %w", path, err)
	}
	// bbolt fsyncs the file, never its directory: without this a new hub
	// store's name would not survive a power cut (TestPowerCut_HubStore).
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bResults, bDevices, bMeta, bEvMeta, bEvData, bReviews, bByTime, bDaily, bWarn} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return backfillIndexes(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("hub: init %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// Close closes the file. Safe to call twice.
func (s *BoltStore) Close() error { return s.db.Close() }

func resultKey(device string, id outbox.ID) []byte {
	k := make([]byte, 0, 1+len(device)+16)
	k = append(k, byte(len(device)))
	k = append(k, device...)
	return append(k, id[:]...)
}

// Commit implements Store.
func (s *BoltStore) Commit(_ context.Context, batches []*osync.Batch, received time.Time) ([]Counts, error) {
	out := make([]Counts, len(batches))
	err := s.db.Update(func(tx *bolt.Tx) error {
		res := tx.Bucket(bResults)
		for i, b := range batches {
			var c Counts
			for _, r := range b.Records {
				k := resultKey(b.Device, r.ID)
				v := binary.BigEndian.AppendUint64(nil, uint64(received.UnixMilli()))
				v = r.Encode(v)
				ms := v[:8]
				if old := res.Get(k); old != nil {
					if len(old) < 8 || !bytes.Equal(old[8:], v[8:]) {
						c.conflict(r.ID)
						continue
					}
					c.Duplicate++
					continue
				}
				if err := res.Put(k, v); err != nil {
					return err
				}
				if err := index(tx, k, ms, received, r); err != nil {
					return err
				}
				c.New++
			}
			out[i] = c
			sent := b.Sent
			err := updateDevice(tx, b.Device, func(d *DeviceStatus) error {
				touch(d, received)
				d.Stored += c.New
				d.Duplicates += c.Duplicate
				d.ClockOffset = received.Sub(sent).Milliseconds()
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// touch moves last seen forward (never back).
func touch(d *DeviceStatus, t time.Time) {
	if t.After(d.LastSeen) {
		d.LastSeen = t.UTC()
	}
}

func updateDevice(tx *bolt.Tx, device string, f func(*DeviceStatus) error) error {
	b := tx.Bucket(bDevices)
	d := DeviceStatus{Device: device}
	if v := b.Get([]byte(device)); v != nil {
		_ = json.Unmarshal(v, &d)
	}
	if err := f(&d); err != nil {
		if errors.Is(err, ErrSkip) {
			return nil
		}
		return err
	}
	v, _ := json.Marshal(d)
	return b.Put([]byte(device), v)
}

// UpdateDevice implements Store.
func (s *BoltStore) UpdateDevice(_ context.Context, device string, f func(*DeviceStatus) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return updateDevice(tx, device, f) })
}

// Devices implements Store.
func (s *BoltStore) Devices(context.Context) ([]DeviceStatus, error) {
	var out []DeviceStatus
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bDevices).ForEach(func(_, v []byte) error {
			var d DeviceStatus
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			out = append(out, d)
			return nil
		})
	})
	return out, err
}

// DeviceKeys implements Store.
func (s *BoltStore) DeviceKeys(_ context.Context, devices []string) (map[string]string, error) {
	out := map[string]string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bDevices)
		for _, name := range devices {
			var d DeviceStatus
			if v := b.Get([]byte(name)); v != nil && json.Unmarshal(v, &d) == nil && d.Key != "" {
				out[name] = d.Key
			}
		}
		return nil
	})
	return out, err
}

// Each implements Store.
func (s *BoltStore) Each(_ context.Context, fn func(StoredResult) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bResults).ForEach(func(k, v []byte) error {
			if len(v) < 8 {
				return fmt.Errorf("hub: short value at %x", k)
			}
			r, err := outbox.DecodeRecord(v[8:])
			if err != nil {
				return err
			}
			return fn(StoredResult{Received: time.UnixMilli(int64(binary.BigEndian.Uint64(v))).UTC(), Record: r})
		})
	})
}

// Count implements Store: a counter kept by Commit (bbolt's own count
// walks every page).
func (s *BoltStore) Count(context.Context) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bMeta).Get(metaCount); len(v) == 8 {
			n = int(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return n, err
}

// index adds one new result to the received-time index, the daily
// aggregates and the count (inside Commit's transaction).
func index(tx *bolt.Tx, k, ms []byte, received time.Time, r *outbox.Record) error {
	if err := tx.Bucket(bByTime).Put(append(append([]byte(nil), ms...), k...), nil); err != nil {
		return err
	}
	m := tx.Bucket(bMeta)
	var n uint64
	if v := m.Get(metaCount); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	if err := m.Put(metaCount, binary.BigEndian.AppendUint64(nil, n+1)); err != nil {
		return err
	}
	lab := CountedLabel(r)
	if lab == "" {
		return nil
	}
	dk := []byte(received.UTC().Format("2006-01-02") + "\x00" + r.Device + "\x00" + r.Model + "\x00" + lab)
	d := tx.Bucket(bDaily)
	var c uint64
	if v := d.Get(dk); len(v) == 8 {
		c = binary.BigEndian.Uint64(v)
	}
	return d.Put(dk, binary.BigEndian.AppendUint64(nil, c+1))
}

// backfillIndexes builds the indexes over the results of a store made
// before them, once.
func backfillIndexes(tx *bolt.Tx) error {
	if tx.Bucket(bMeta).Get(metaIndexed) != nil {
		return nil
	}
	err := tx.Bucket(bResults).ForEach(func(k, v []byte) error {
		if len(v) < 8 {
			return nil
		}
		r, err := outbox.DecodeRecord(v[8:])
		if err != nil {
			return nil // unreadable: left out of the page's views, still exported raw
		}
		return index(tx, k, v[:8], time.UnixMilli(int64(binary.BigEndian.Uint64(v))), r)
	})
	if err != nil {
		return err
	}
	return tx.Bucket(bMeta).Put(metaIndexed, []byte{1})
}

// DailyCounts implements Store.
func (s *BoltStore) DailyCounts(_ context.Context, since time.Time) ([]DeviceDayCount, error) {
	var out []DeviceDayCount
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bDaily).Cursor()
		for k, v := c.Seek([]byte(since.UTC().Format("2006-01-02"))); k != nil; k, v = c.Next() {
			f := strings.SplitN(string(k), "\x00", 4)
			if len(f) != 4 || len(v) != 8 {
				continue
			}
			out = append(out, DeviceDayCount{Day: f[0], Device: f[1], Model: f[2], Label: f[3], Count: int64(binary.BigEndian.Uint64(v))})
		}
		return nil
	})
	return out, err
}

// Recent implements Store: newest first through the received-time index,
// from f.To (or the newest) back to f.From (or the oldest) until f.Limit
// match.
func (s *BoltStore) Recent(_ context.Context, f ResultFilter) ([]StoredResult, error) {
	var out []StoredResult
	err := s.db.View(func(tx *bolt.Tx) error {
		c, res := tx.Bucket(bByTime).Cursor(), tx.Bucket(bResults)
		var k []byte
		if f.To.IsZero() {
			k, _ = c.Last()
		} else if k, _ = c.Seek(binary.BigEndian.AppendUint64(nil, uint64(f.To.UnixMilli()))); k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for ; k != nil && len(out) < f.Limit; k, _ = c.Prev() {
			if len(k) < 8 {
				continue
			}
			received := time.UnixMilli(int64(binary.BigEndian.Uint64(k))).UTC()
			if !f.From.IsZero() && received.Before(f.From) {
				break
			}
			v := res.Get(k[8:])
			if len(v) < 8 {
				continue
			}
			r, err := outbox.DecodeRecord(v[8:])
			if err != nil {
				continue
			}
			sr := StoredResult{Received: received, Record: r}
			if f.matches(sr) {
				out = append(out, sr)
			}
		}
		return nil
	})
	return out, err
}

// ClientID implements Store: "outpost-collector-" + 12 random hex digits,
// made on first use and kept, so the persistent session survives restarts
// but no other client can guess it and take the collector's place.
func (s *BoltStore) ClientID(context.Context) (string, error) {
	var id string
	err := s.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bMeta)
		if v := m.Get([]byte("client_id")); v != nil {
			id = string(v)
			return nil
		}
		var rnd [6]byte
		if _, err := crand.Read(rnd[:]); err != nil {
			return err
		}
		id = "outpost-collector-" + hex.EncodeToString(rnd[:])
		return m.Put([]byte("client_id"), []byte(id))
	})
	return id, err
}

// PutEvidence implements Store.
func (s *BoltStore) PutEvidence(_ context.Context, device string, c *osync.EvidenceChunk, received time.Time) (EvidenceInfo, error) {
	var out EvidenceInfo
	err := s.db.Update(func(tx *bolt.Tx) error {
		k := resultKey(device, c.ID)
		mb, db := tx.Bucket(bEvMeta), tx.Bucket(bEvData)
		info := newEvidenceInfo(device, c, received)
		if v := mb.Get(k); v != nil {
			if err := json.Unmarshal(v, &info); err != nil {
				return err
			}
		}
		// Each chunk is its own key (k + offset): an upload costs its size
		// once, not the whole blob rewritten per chunk (O(n²) before).
		// The stored bytes are read only for the chunk that completes it.
		var data []byte
		if !info.Complete && c.Offset == info.Have && info.Have > 0 && info.Have+int64(len(c.Data)) == info.Size {
			data = evidenceChunks(db, k)
		}
		before := info
		info, _, keep := applyChunk(info, data, c)
		out = info
		switch {
		case !keep:
			mb.Delete(k)
			return deleteChunks(db, k)
		case info == before:
			return nil // learned from, nothing changed
		case info.Have == 0 || (info.Complete && c.Offset == 0 && int64(len(c.Data)) == info.Size && before.Have > 0):
			// Started over, or a whole piece replaced a part.
			if err := deleteChunks(db, k); err != nil {
				return err
			}
		}
		if info.Have > before.Have || (info.Complete && !before.Complete) {
			off := info.Have - int64(len(c.Data))
			if err := db.Put(binary.BigEndian.AppendUint64(append([]byte(nil), k...), uint64(off)), c.Data); err != nil {
				return err
			}
		}
		b, _ := json.Marshal(info)
		return mb.Put(k, b)
	})
	return out, err
}

// evidenceChunks is one upload's bytes: its chunks in offset order (a blob
// stored whole under k by an older build reads as offset 0).
func evidenceChunks(db *bolt.Bucket, k []byte) []byte {
	var out []byte
	c := db.Cursor()
	for ck, v := c.Seek(k); ck != nil && bytes.HasPrefix(ck, k); ck, v = c.Next() {
		out = append(out, v...)
	}
	return out
}

func deleteChunks(db *bolt.Bucket, k []byte) error {
	var keys [][]byte
	c := db.Cursor()
	for ck, _ := c.Seek(k); ck != nil && bytes.HasPrefix(ck, k); ck, _ = c.Next() {
		keys = append(keys, append([]byte(nil), ck...))
	}
	for _, ck := range keys {
		if err := db.Delete(ck); err != nil {
			return err
		}
	}
	return nil
}

// Evidence implements Store.
func (s *BoltStore) Evidence(_ context.Context, device string, of outbox.ID) (*EvidenceInfo, []byte, error) {
	var info *EvidenceInfo
	var data []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bEvMeta).Cursor()
		prefix := resultKey(device, outbox.ID{})[:len(device)+1]
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var e EvidenceInfo
			if json.Unmarshal(v, &e) == nil && e.Of == of && e.Complete {
				info, data = &e, evidenceChunks(tx.Bucket(bEvData), k)
				return nil
			}
		}
		return nil
	})
	return info, data, err
}

// EvidenceList implements Store.
func (s *BoltStore) EvidenceList(context.Context) ([]EvidenceInfo, error) {
	var out []EvidenceInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bEvMeta).ForEach(func(_, v []byte) error {
			var e EvidenceInfo
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if e.Complete {
				out = append(out, e)
			}
			return nil
		})
	})
	return out, err
}

// Result implements Store.
func (s *BoltStore) Result(_ context.Context, device string, id outbox.ID) (*StoredResult, error) {
	var out *StoredResult
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bResults).Get(resultKey(device, id))
		if len(v) < 8 {
			return nil
		}
		r, err := outbox.DecodeRecord(v[8:])
		if err != nil {
			return err
		}
		out = &StoredResult{Received: time.UnixMilli(int64(binary.BigEndian.Uint64(v))).UTC(), Record: r}
		return nil
	})
	return out, err
}

// PutReview implements Store.
func (s *BoltStore) PutReview(_ context.Context, r *osync.Review) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, k := tx.Bucket(bReviews), resultKey(r.Device, r.Of)
		if b.Get(k) != nil {
			return ErrReviewed
		}
		v, _ := json.Marshal(StoredReview{Review: *r})
		return b.Put(k, v)
	})
}

// ReviewOf implements Store.
func (s *BoltStore) ReviewOf(_ context.Context, device string, of outbox.ID) (*StoredReview, error) {
	var out *StoredReview
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bReviews).Get(resultKey(device, of)); v != nil {
			out = &StoredReview{}
			return json.Unmarshal(v, out)
		}
		return nil
	})
	return out, err
}

// Reviews implements Store.
func (s *BoltStore) Reviews(_ context.Context, device string, undelivered bool) ([]StoredReview, error) {
	var out []StoredReview
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bReviews).ForEach(func(_, v []byte) error {
			var r StoredReview
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if (device == "" || r.Device == device) && !(undelivered && r.Delivered) {
				out = append(out, r)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, err
}

// MarkDelivered implements Store.
func (s *BoltStore) MarkDelivered(_ context.Context, device string, of outbox.ID) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, k := tx.Bucket(bReviews), resultKey(device, of)
		v := b.Get(k)
		if v == nil {
			return fmt.Errorf("no review of %s %s", device, of)
		}
		var r StoredReview
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		r.Delivered = true
		nv, _ := json.Marshal(r)
		return b.Put(k, nv)
	})
}

// PutWarning implements Store.
func (s *BoltStore) PutWarning(_ context.Context, w *osync.Warning) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bWarn)
		sw := StoredWarning{Warning: *w, Delivered: map[string]time.Time{}}
		if v := b.Get(w.ID[:]); v != nil {
			var old StoredWarning
			if err := json.Unmarshal(v, &old); err != nil {
				return err
			}
			if old.Delivered != nil {
				sw.Delivered = old.Delivered
			}
		}
		v, _ := json.Marshal(sw)
		return b.Put(w.ID[:], v)
	})
}

// Warnings implements Store.
func (s *BoltStore) Warnings(_ context.Context, at time.Time) ([]StoredWarning, error) {
	var out []StoredWarning
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bWarn).ForEach(func(_, v []byte) error {
			var w StoredWarning
			if err := json.Unmarshal(v, &w); err != nil {
				return err
			}
			if at.IsZero() || w.Until.After(at) {
				out = append(out, w)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Issued.After(out[j].Issued) })
	return out, err
}

// MarkWarningDelivered implements Store.
func (s *BoltStore) MarkWarningDelivered(_ context.Context, id outbox.ID, device string, at time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bWarn)
		v := b.Get(id[:])
		if v == nil {
			return fmt.Errorf("no warning %s", id)
		}
		var w StoredWarning
		if err := json.Unmarshal(v, &w); err != nil {
			return err
		}
		if w.Delivered == nil {
			w.Delivered = map[string]time.Time{}
		}
		if _, ok := w.Delivered[device]; ok {
			return nil
		}
		w.Delivered[device] = at.UTC()
		nv, _ := json.Marshal(w)
		return b.Put(id[:], nv)
	})
}
