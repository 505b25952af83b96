package sync

import (
	"context"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	gosync "sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-edge/outpost/outbox"
)

// CollectorOptions configure a Collector.
type CollectorOptions struct {
	ClientID   string        // MQTT client id; default "outpost-collector" (a persistent session)
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
}

// CollectorStats count messages since start.
type CollectorStats struct {
	Batches    int64 `json:"batches"`
	Stored     int64 `json:"stored"`
	Duplicates int64 `json:"duplicates"`
	Malformed  int64 `json:"malformed"`
	Acks       int64 `json:"acks"`
	Rejected   int64 `json:"rejected"` // undecodable records named in acks
}

// Collector stores devices' results on the hub, idempotently by record ID,
// and acknowledges each batch only after its commit is on disk.
type Collector struct {
	db  *bolt.DB
	o   CollectorOptions
	log *slog.Logger
	in  chan msg

	batches, stored, dups, malformed, acks, rejected atomic.Int64
	closeOnce                                        gosync.Once
	ready                                            chan struct{}
	readyOnce                                        gosync.Once
}

// Ready is closed once the collector has subscribed for the first time.
func (c *Collector) Ready() <-chan struct{} { return c.ready }

type msg struct {
	topic   string
	payload []byte
}

var (
	cResults = []byte("results") // device len(1) | device | id[16] -> received ms (8) | record
	cDevices = []byte("devices") // device -> DeviceStatus JSON
)

// OpenCollector opens (or creates) the collector's database.
func OpenCollector(path string, o CollectorOptions) (*Collector, error) {
	if o.ClientID == "" {
		o.ClientID = "outpost-collector"
	}
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
	if err != nil {
		return nil, fmt.Errorf("collector: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{cResults, cDevices} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
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
		Malformed: c.malformed.Load(), Acks: c.acks.Load(), Rejected: c.rejected.Load()}
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
	h := func(topic string, p []byte) {
		// Hand over and return: paho's receive loop must not wait on our
		// fsync or on our own publishes.
		select {
		case c.in <- msg{topic, append([]byte(nil), p...)}:
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

// handle stores a group of messages in one transaction, then publishes the acks.
func (c *Collector) handle(ctx context.Context, conn Conn, group []msg) error {
	now := c.o.Now()
	var batches []decoded
	for _, m := range group {
		device, kind, ok := DeviceFromTopic(m.topic)
		if !ok {
			c.malformed.Add(1)
			c.log.Warn("collector: message on an unexpected topic ignored", "topic", m.topic)
			continue
		}
		switch kind {
		case "status":
			c.recordStatus(device, m.payload, now)
		case "results":
			b, err := DecodeBatch(m.payload)
			if err != nil {
				c.malformed.Add(1)
				c.log.Warn("collector: batch rejected", "device", device, "bytes", len(m.payload), "err", err)
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
	if len(batches) == 0 {
		return nil
	}
	if err := c.store(batches, now); err != nil {
		// Not acked: the devices resend after their ack timeout.
		c.log.Error("collector: storing failed; batches not acknowledged", "err", err)
		return nil
	}
	for _, d := range batches {
		if err := conn.Publish(ctx, AckTopic(d.device), 1, false, EncodeAck(d.ack)); err != nil {
			return fmt.Errorf("publish ack to %s: %w", d.device, err)
		}
		c.acks.Add(1)
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
	s.LastSeen = now.UTC()
	f(&s)
	v, _ := json.Marshal(s)
	return b.Put([]byte(device), v)
}

func (c *Collector) recordStatus(device string, payload []byte, now time.Time) {
	var st Status
	if err := json.Unmarshal(payload, &st); err != nil || st.V != ProtocolVersion {
		c.malformed.Add(1)
		c.log.Warn("collector: status rejected", "device", device, "err", err, "v", st.V)
		return
	}
	err := c.db.Update(func(tx *bolt.Tx) error {
		return c.touchDevice(tx, device, now, func(s *DeviceStatus) {
			s.State, s.Backlog, s.Version = st.State, st.Queue, st.Version
			if !st.Time.IsZero() {
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
