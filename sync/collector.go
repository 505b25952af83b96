package sync

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	gosync "sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/outpost-edge/outpost/outbox"
)

// CollectorOptions configure a Collector.
type CollectorOptions struct {
	// ClientID is the MQTT client id (a persistent session). Default:
	// "outpost-collector-" + 12 random hex digits, made once and kept in
	// the database, so the session survives restarts but no other client
	// can guess it and take the collector's place on the broker.
	ClientID   string
	MinBackoff time.Duration // default 1s
	MaxBackoff time.Duration // default 1m
	Logger     *slog.Logger
	Now        func() time.Time
}

// DeviceStatus is what the hub knows about one device.
type DeviceStatus struct {
	Device      string    `json:"device"`
	LastSeen    time.Time `json:"last_seen"`
	State       string    `json:"state,omitempty"` // from the device's retained status: online/offline
	Backlog     int64     `json:"backlog"`         // device's queue depth at its last status
	ClockOffset int64     `json:"clock_offset_ms"` // hub receive time − device send time (includes transit)
	Stored      int64     `json:"stored"`
	Duplicates  int64     `json:"duplicates"`
	Version     string    `json:"version,omitempty"`
	StatusTime  time.Time `json:"status_time,omitzero"` // device clock of the newest status applied
	LastSync    time.Time `json:"last_sync,omitzero"`   // device's last acknowledged sync, by its clock
	// What the device lost by policy, as its last status said (totals).
	Evicted int64 `json:"evicted_total"`
	Expired int64 `json:"expired_total"`
	Refused int64 `json:"refused_total"` // results the device could not store (queue full)
}

// CollectorStats count messages since start.
type CollectorStats struct {
	Batches    int64 `json:"batches"`
	Stored     int64 `json:"stored"`
	Duplicates int64 `json:"duplicates"`
	Malformed  int64 `json:"malformed"`
	Acks       int64 `json:"acks"`
	Rejected   int64 `json:"rejected"` // undecodable records named in acks
	Refused    int64 `json:"refused"`  // acks refusing (part of) a batch
}

// Collector stores devices' results on the hub, idempotently by record ID,
// and acknowledges each batch only after its commit is on disk.
type Collector struct {
	db  *bolt.DB
	o   CollectorOptions
	log *slog.Logger
	in  chan msg

	batches, stored, dups, malformed, acks, rejected, refused atomic.Int64
	closeOnce                                                 gosync.Once
	ready                                                     chan struct{}
	readyOnce                                                 gosync.Once
}

// ClientID is the MQTT client id this collector connects with.
func (c *Collector) ClientID() string { return c.o.ClientID }

// Ready is closed once the collector has subscribed for the first time.
func (c *Collector) Ready() <-chan struct{} { return c.ready }

type msg struct {
	topic    string
	payload  []byte
	retained bool
}

var (
	cResults = []byte("results") // device len(1) | device | id[16] -> received ms (8) | record
	cDevices = []byte("devices") // device -> DeviceStatus JSON
	cMeta    = []byte("meta")    // client_id -> the collector's MQTT client id
)

// ErrLocked: the database is open in another process (a running
// collector); bbolt allows one at a time.
var ErrLocked = errors.New("collector: database in use by another process")

// OpenCollector opens (or creates) the collector's database.
func OpenCollector(path string, o CollectorOptions) (*Collector, error) {
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s is held by a running 'outpost collect' (stop it first to export or list devices; a PostgreSQL store lifts this)", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("collector: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{cResults, cDevices, cMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if o.ClientID != "" {
			return nil
		}
		m := tx.Bucket(cMeta)
		if v := m.Get([]byte("client_id")); v != nil {
			o.ClientID = string(v)
			return nil
		}
		var rnd [6]byte
		if _, err := crand.Read(rnd[:]); err != nil {
			return err
		}
		o.ClientID = "outpost-collector-" + hex.EncodeToString(rnd[:])
		return m.Put([]byte("client_id"), []byte(o.ClientID))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("collector: init %s: %w", path, err)
	}
	return &Collector{db: db, o: o, log: o.Logger, in: make(chan msg, 256), ready: make(chan struct{})}, nil
}

// Close closes the database. Safe to call twice.
func (c *Collector) Close() error {
	var err error
	c.closeOnce.Do(func() { err = c.db.Close() })
	return err
}

// Stats returns the counters since start.
func (c *Collector) Stats() CollectorStats {
	return CollectorStats{Batches: c.batches.Load(), Stored: c.stored.Load(), Duplicates: c.dups.Load(),
		Malformed: c.malformed.Load(), Acks: c.acks.Load(), Rejected: c.rejected.Load(), Refused: c.refused.Load()}
}

// Run connects (retrying with jittered backoff), subscribes to every
// device's results and status, and stores and acks until ctx ends.
func (c *Collector) Run(ctx context.Context, dial Dialer) error {
	bo := Backoff{Min: c.o.MinBackoff, Max: c.o.MaxBackoff}
	for {
		err := c.session(ctx, dial, &bo)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := bo.Next()
		c.log.Warn("collector: disconnected; retrying", "err", err, "in", wait.Round(time.Millisecond))
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

func (c *Collector) session(ctx context.Context, dial Dialer, bo *Backoff) error {
	conn, err := dial(ctx, c.o.ClientID, nil)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	h := func(m Message) {
		// Hand over and return: paho's receive loop must not wait on our
		// fsync or on our own publishes.
		select {
		case c.in <- msg{m.Topic, append([]byte(nil), m.Payload...), m.Retained}:
		case <-conn.Done():
		}
	}
	for _, t := range []string{TopicPrefix + "+/results", TopicPrefix + "+/status"} {
		if err := conn.Subscribe(ctx, t, 1, h); err != nil {
			return fmt.Errorf("subscribe %s: %w", t, err)
		}
	}
	bo.Reset()
	c.readyOnce.Do(func() { close(c.ready) })
	c.log.Info("collector: connected")
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-conn.Done():
			return fmt.Errorf("connection lost: %w", conn.Err())
		case m := <-c.in:
			// Take everything already waiting: one commit for all of it.
			group := []msg{m}
		more:
			for len(group) < 64 {
				select {
				case m := <-c.in:
					group = append(group, m)
				default:
					break more
				}
			}
			if err := c.handle(ctx, conn, group); err != nil {
				return err
			}
		}
	}
}

type decoded struct {
	device string
	batch  *Batch
	ack    *Ack
}

// handle stores a group of messages in one transaction, then publishes the
// acks. A batch it cannot take is refused by name whenever its ID can be
// read, so the device backs off instead of resending it forever.
func (c *Collector) handle(ctx context.Context, conn Conn, group []msg) error {
	now := c.o.Now()
	var batches []decoded
	var refusals []decoded
	for _, m := range group {
		device, kind, ok := DeviceFromTopic(m.topic)
		if !ok {
			c.malformed.Add(1)
			c.log.Warn("collector: message on an unexpected topic ignored", "topic", m.topic)
			continue
		}
		switch kind {
		case "status":
			c.recordStatus(device, m, now)
		case "results":
			b, err := DecodeBatch(m.payload)
			if err != nil {
				c.malformed.Add(1)
				c.log.Warn("collector: batch rejected", "device", device, "bytes", len(m.payload), "err", err)
				if id, ok := BatchID(m.payload); ok {
					refusals = append(refusals, decoded{device: device, ack: &Ack{Batch: id,
						Refused: &Refusal{Code: RefusedMalformed, Reason: err.Error()}}})
				}
				continue
			}
			if b.Device != device {
				c.malformed.Add(1)
				c.log.Warn("collector: batch device does not match its topic; rejected", "topic", m.topic, "device", b.Device)
				continue
			}
			batches = append(batches, decoded{device: device, batch: b})
		}
	}
	if len(batches) > 0 {
		if err := c.store(batches, now); err != nil {
			c.log.Error("collector: storing failed; batches refused (devices keep them and retry later)", "err", err)
			for _, d := range batches {
				refusals = append(refusals, decoded{device: d.device, ack: &Ack{Batch: d.batch.ID,
					Refused: &Refusal{Code: RefusedUnavailable, Reason: "hub store: " + err.Error()}}})
			}
			batches = nil
		}
	}
	for _, d := range append(batches, refusals...) {
		if err := conn.Publish(ctx, AckTopic(d.device), 1, false, EncodeAck(d.ack)); err != nil {
			return fmt.Errorf("publish ack to %s: %w", d.device, err)
		}
		c.acks.Add(1)
		if d.ack.Refused != nil {
			c.refused.Add(1)
		}
	}
	return nil
}

func resultKey(device string, id outbox.ID) []byte {
	k := make([]byte, 0, 1+len(device)+16)
	k = append(k, byte(len(device)))
	k = append(k, device...)
	return append(k, id[:]...)
}

// store commits every record not already present, and builds each batch's ack.
func (c *Collector) store(batches []decoded, now time.Time) error {
	var stored, dups int64
	err := c.db.Update(func(tx *bolt.Tx) error {
		stored, dups = 0, 0
		res := tx.Bucket(cResults)
		for i := range batches {
			d := &batches[i]
			d.ack = &Ack{Batch: d.batch.ID}
			var newHere, dupHere int64
			for _, r := range d.batch.Records {
				k := resultKey(d.device, r.ID)
				if res.Get(k) != nil {
					dupHere++
				} else {
					v := binary.BigEndian.AppendUint64(nil, uint64(now.UnixMilli()))
					if err := res.Put(k, r.Encode(v)); err != nil {
						return err
					}
					newHere++
				}
				d.ack.Stored = append(d.ack.Stored, r.ID)
			}
			for _, bad := range d.batch.Bad {
				d.ack.Rejected = append(d.ack.Rejected, bad.ID)
			}
			if d.batch.Unnamed > 0 {
				d.ack.Refused = &Refusal{Code: RefusedMalformed,
					Reason: fmt.Sprintf("%d record(s) too short to carry an ID", d.batch.Unnamed)}
			}
			if err := c.touchDevice(tx, d.device, now, func(s *DeviceStatus) {
				s.Stored += newHere
				s.Duplicates += dupHere
				s.ClockOffset = now.Sub(d.batch.Sent).Milliseconds()
			}); err != nil {
				return err
			}
			stored += newHere
			dups += dupHere
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.batches.Add(int64(len(batches)))
	c.stored.Add(stored)
	c.dups.Add(dups)
	for _, d := range batches {
		for _, bad := range d.batch.Bad {
			c.rejected.Add(1)
			c.log.Error("collector: record rejected for good (the device will drop it)", "device", d.device, "id", bad.ID.String(), "err", bad.Err)
		}
	}
	if dups > 0 {
		c.log.Info("collector: duplicate records acknowledged again, not stored twice", "count", dups)
	}
	return nil
}

func (c *Collector) touchDevice(tx *bolt.Tx, device string, now time.Time, f func(*DeviceStatus)) error {
	b := tx.Bucket(cDevices)
	s := DeviceStatus{Device: device}
	if v := b.Get([]byte(device)); v != nil {
		_ = json.Unmarshal(v, &s)
	}
	if now.After(s.LastSeen) {
		s.LastSeen = now.UTC()
	}
	f(&s)
	v, _ := json.Marshal(s)
	return b.Put([]byte(device), v)
}

// MaxStatusBytes bounds a status message; larger ones are refused unread.
const MaxStatusBytes = 4 << 10

func (c *Collector) recordStatus(device string, m msg, now time.Time) {
	if len(m.payload) > MaxStatusBytes {
		c.malformed.Add(1)
		c.log.Warn("collector: status rejected: too large", "device", device, "bytes", len(m.payload), "max", MaxStatusBytes)
		return
	}
	var st Status
	if err := json.Unmarshal(m.payload, &st); err != nil || st.V != ProtocolVersion || (st.Device != "" && st.Device != device) {
		c.malformed.Add(1)
		c.log.Warn("collector: status rejected", "device", device, "err", err, "v", st.V)
		return
	}
	if len(st.Version) > 64 || len(st.State) > 16 {
		c.malformed.Add(1)
		c.log.Warn("collector: status rejected: overlong field", "device", device)
		return
	}
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(cDevices)
		prev := DeviceStatus{}
		if v := b.Get([]byte(device)); v != nil {
			_ = json.Unmarshal(v, &prev)
		}
		if !st.Time.IsZero() && !prev.StatusTime.IsZero() && !st.Time.After(prev.StatusTime) {
			// A replay (the broker's retained copy after our restart, or
			// a redelivery): already applied, and not news of the device.
			return nil
		}
		seen := now
		if m.retained {
			// Retained: the device said this at st.Time, not now. Its
			// clock may be off, so never later than now; no offset from it.
			seen = prev.LastSeen
			if !st.Time.IsZero() && st.Time.Before(now) && st.Time.After(seen) {
				seen = st.Time
			}
		}
		return c.touchDevice(tx, device, seen, func(s *DeviceStatus) {
			s.State, s.Backlog, s.Version = st.State, st.Queue, st.Version
			s.StatusTime, s.LastSync = st.Time, st.LastSync
			s.Evicted, s.Expired, s.Refused = st.Evicted, st.Expired, st.Refused
			if !st.Time.IsZero() && !m.retained {
				s.ClockOffset = now.Sub(st.Time).Milliseconds()
			}
		})
	})
	if err != nil {
		c.log.Error("collector: saving device status failed", "device", device, "err", err)
	}
}

// Devices lists what the hub knows about each device.
func (c *Collector) Devices() ([]DeviceStatus, error) {
	var out []DeviceStatus
	err := c.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(cDevices).ForEach(func(_, v []byte) error {
			var s DeviceStatus
			if err := json.Unmarshal(v, &s); err != nil {
				return err
			}
			out = append(out, s)
			return nil
		})
	})
	return out, err
}

// StoredResult is one record as the hub keeps it.
type StoredResult struct {
	Received time.Time
	Record   *outbox.Record
}

// MarshalJSON flattens the record and adds "received".
func (s StoredResult) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(s.Record)
	if err != nil {
		return nil, err
	}
	rcv, _ := json.Marshal(s.Received)
	return append(append(append([]byte(`{"received":`), rcv...), ','), b[1:]...), nil
}

// ExportJSONL writes every stored result as one JSON object per line.
func (c *Collector) ExportJSONL(w io.Writer) (int, error) {
	enc := json.NewEncoder(w)
	n := 0
	err := c.Each(func(s StoredResult) error { n++; return enc.Encode(s) })
	return n, err
}

// ExportCSV writes one row per result: the fixed columns, then the task
// output as a JSON cell (spreadsheets show it as text).
func (c *Collector) ExportCSV(w io.Writer) (int, error) {
	cw := csv.NewWriter(w)
	cw.Write([]string{"id", "device", "created", "received", "seq", "model", "model_version", "task", "priority", "output"})
	n := 0
	err := c.Each(func(s StoredResult) error {
		r := s.Record
		n++
		return cw.Write([]string{r.ID.String(), r.Device, r.Created.Format(time.RFC3339Nano), s.Received.Format(time.RFC3339Nano),
			strconv.FormatUint(r.Seq, 10), r.Model, r.Version, r.Task, r.Priority.String(), string(r.Output)})
	})
	cw.Flush()
	if err == nil {
		err = cw.Error()
	}
	return n, err
}

// Each calls fn for every stored result, by device then ID.
func (c *Collector) Each(fn func(StoredResult) error) error {
	return c.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(cResults).ForEach(func(k, v []byte) error {
			if len(v) < 8 {
				return fmt.Errorf("collector: short value at %x", k)
			}
			r, err := outbox.DecodeRecord(v[8:])
			if err != nil {
				return err
			}
			return fn(StoredResult{Received: time.UnixMilli(int64(binary.BigEndian.Uint64(v))).UTC(), Record: r})
		})
	})
}

// Count is the number of stored results.
func (c *Collector) Count() (int, error) {
	n := 0
	err := c.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(cResults).Stats().KeyN; return nil })
	return n, err
}
