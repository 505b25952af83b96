package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/outbox"
)

// UplinkOptions configure an Uplink. Zero values take the documented defaults.
type UplinkOptions struct {
	Device       string        // required; [A-Za-z0-9._-]{1,64}
	BatchRecords int           // records per batch; default 500
	BatchBytes   int           // encoded record bytes per batch before compression; default 256 KiB
	Window       int           // batches published but not yet acked by the collector; default 4
	AckTimeout   time.Duration // a batch unacked this long is released and sent again; default 30s
	MinBackoff   time.Duration // reconnect backoff floor; default 1s
	MaxBackoff   time.Duration // reconnect backoff cap; default 5m
	Idle         time.Duration // Run: how often to look for new records when not notified; default 10s
	Budget       *Budget       // nil: unlimited
	Version      string        // outpost version, sent in status
	Logger       *slog.Logger
	Now          func() time.Time
}

func (o *UplinkOptions) defaults() error {
	if !ValidDeviceID(o.Device) {
		return fmt.Errorf("sync: device id %q: want 1-64 of A-Z a-z 0-9 . _ -", o.Device)
	}
	if o.BatchRecords <= 0 {
		o.BatchRecords = 500
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 256 << 10
	}
	if o.Window <= 0 {
		o.Window = 4
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	if o.Idle <= 0 {
		o.Idle = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// UplinkStats count what the uplink did in this process.
type UplinkStats struct {
	Batches      int64     `json:"batches"`       // published and acked by the collector
	Records      int64     `json:"records"`       // deleted from the outbox on ack
	Rejected     int64     `json:"rejected"`      // refused by the collector for good
	Resent       int64     `json:"resent"`        // batches released after AckTimeout
	Connects     int64     `json:"connects"`      // successful connections
	ConnectFails int64     `json:"connect_fails"` // failed attempts
	WireBytes    int64     `json:"wire_bytes"`    // estimated bytes on the wire, both directions
	LastSync     time.Time `json:"last_sync,omitzero"`
}

// Uplink drains an outbox to the hub: lease → encode → publish QoS 1 →
// wait for the collector's ack (not just the broker's PUBACK) → delete.
type Uplink struct {
	ob   *outbox.Outbox
	dial Dialer
	o    UplinkOptions
	log  *slog.Logger
	wake chan struct{}

	mu    gosync.Mutex
	stats UplinkStats

	batches, records, rejected, resent, connects, fails, wire atomic.Int64
}

// NewUplink validates options.
func NewUplink(ob *outbox.Outbox, dial Dialer, o UplinkOptions) (*Uplink, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	return &Uplink{ob: ob, dial: dial, o: o, log: o.Logger, wake: make(chan struct{}, 1)}, nil
}

// Notify wakes a waiting Run: new records were appended.
func (u *Uplink) Notify() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (u *Uplink) Stats() UplinkStats {
	u.mu.Lock()
	last := u.stats.LastSync
	u.mu.Unlock()
	return UplinkStats{Batches: u.batches.Load(), Records: u.records.Load(), Rejected: u.rejected.Load(),
		Resent: u.resent.Load(), Connects: u.connects.Load(), ConnectFails: u.fails.Load(), WireBytes: u.wire.Load(), LastSync: last}
}

// errDrained ends a session in once-mode.
var errDrained = errors.New("drained")

// ErrBudget: Drain stopped with records waiting because today's byte budget
// is spent (alerts excepted).
var ErrBudget = errors.New("sync: daily byte budget spent")

// Run keeps the outbox draining until ctx ends: connect (with jittered
// backoff), send what is waiting, wait for more. It returns ctx's error.
func (u *Uplink) Run(ctx context.Context) error {
	return u.loop(ctx, false)
}

// Drain connects, sends until the outbox is empty and every batch is acked,
// and returns. It retries connections until ctx ends.
func (u *Uplink) Drain(ctx context.Context) error {
	return u.loop(ctx, true)
}

func (u *Uplink) loop(ctx context.Context, once bool) error {
	bo := Backoff{Min: u.o.MinBackoff, Max: u.o.MaxBackoff}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := u.session(ctx, once, &bo)
		if errors.Is(err, errDrained) {
			return nil
		}
		if errors.Is(err, ErrBudget) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := bo.Next()
		u.log.Warn("sync: uplink disconnected; retrying", "err", err, "in", wait.Round(time.Millisecond))
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

type inflight struct {
	ids      []outbox.ID
	deadline time.Time
}

// session runs one connection until it fails, ctx ends, or (once) the
// outbox is drained.
func (u *Uplink) session(ctx context.Context, once bool, bo *Backoff) error {
	will := &Will{Topic: StatusTopic(u.o.Device), Payload: Status{Device: u.o.Device, State: "offline", Version: u.o.Version}.encode(), Retained: true}
	conn, err := u.dial(ctx, "outpost-"+u.o.Device, will)
	if err != nil {
		u.fails.Add(1)
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	acks := make(chan []byte, 64)
	err = conn.Subscribe(ctx, AckTopic(u.o.Device), 1, func(_ string, p []byte) {
		select {
		case acks <- append([]byte(nil), p...):
		default:
			// Full: drop. The batch times out and is resent; the collector
			// dedups and acks again. Never block paho's receive loop.
			u.log.Warn("sync: ack queue full; dropping an ack (the batch will be resent)")
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", AckTopic(u.o.Device), err)
	}
	u.connects.Add(1)
	bo.Reset()
	u.publishStatus(ctx, conn, "online")
	u.log.Info("sync: connected", "device", u.o.Device)

	pending := map[outbox.ID]*inflight{}
	defer func() {
		// Whatever was in flight goes back to the queue for the next session.
		for _, f := range pending {
			u.ob.Release(f.ids)
		}
	}()
	tick := time.NewTicker(min(u.o.AckTimeout/4, time.Second))
	defer tick.Stop()
	idle := time.NewTimer(u.o.Idle)
	defer idle.Stop()
	for {
		// Fill the window.
		for len(pending) < u.o.Window {
			sent, err := u.sendOne(ctx, conn, pending)
			if err != nil {
				return err
			}
			if !sent {
				break
			}
		}
		if once && len(pending) == 0 {
			if st, err := u.ob.Stats(); err == nil && st.Count == 0 {
				u.publishStatus(ctx, conn, "online")
				return errDrained
			} else if err == nil && !u.o.Budget.allowsAny(u.o.Now()) {
				return fmt.Errorf("%w with %d records waiting", ErrBudget, st.Count)
			}
		}
		select {
		case <-ctx.Done():
			u.publishStatus(context.Background(), conn, "offline")
			return ctx.Err()
		case <-conn.Done():
			return fmt.Errorf("connection lost: %w", conn.Err())
		case msg := <-acks:
			u.handleAck(msg, pending)
		case <-tick.C:
			now := u.o.Now()
			for id, f := range pending {
				if now.After(f.deadline) {
					u.ob.Release(f.ids)
					delete(pending, id)
					u.resent.Add(1)
					u.log.Warn("sync: no ack from the collector; batch will be resent", "batch", id.String(), "records", len(f.ids))
				}
			}
		case <-u.wake:
		case <-idle.C:
			idle.Reset(u.o.Idle)
			u.publishStatus(ctx, conn, "online")
		}
	}
}

// sendOne leases, encodes and publishes one batch. It reports false when
// nothing is eligible (empty, all leased, or the budget forbids).
func (u *Uplink) sendOne(ctx context.Context, conn Conn, pending map[outbox.ID]*inflight) (bool, error) {
	now := u.o.Now()
	lo, ok := u.o.Budget.leaseOptions(now, u.o.BatchRecords, u.o.BatchBytes)
	if !ok {
		return false, nil
	}
	recs, err := u.ob.LeaseWith(lo)
	if err != nil {
		return false, err
	}
	if len(recs) == 0 {
		return false, nil
	}
	ids := make([]outbox.ID, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	b := &Batch{ID: outbox.NewIDGen().New(), Device: u.o.Device, Sent: now, Records: recs}
	msg := EncodeBatch(b)
	cost := WireCost(ResultsTopic(u.o.Device), len(msg), len(recs))
	if !u.o.Budget.fits(now, cost, recs) {
		u.ob.Release(ids)
		return false, nil
	}
	if err := conn.Publish(ctx, ResultsTopic(u.o.Device), 1, false, msg); err != nil {
		u.ob.Release(ids)
		return false, fmt.Errorf("publish batch %s: %w", b.ID, err)
	}
	u.o.Budget.spend(now, cost)
	u.wire.Add(cost)
	pending[b.ID] = &inflight{ids: ids, deadline: now.Add(u.o.AckTimeout)}
	return true, nil
}

func (u *Uplink) handleAck(msg []byte, pending map[outbox.ID]*inflight) {
	a, err := DecodeAck(msg)
	if err != nil {
		u.log.Warn("sync: ignoring malformed ack", "err", err, "bytes", len(msg))
		return
	}
	// Acks name records, so even an ack for a batch this session no longer
	// tracks (resent, or from before a reconnect) is applied: the
	// collector has those records.
	ids := append(append([]outbox.ID{}, a.Stored...), a.Rejected...)
	n, err := u.ob.Ack(ids)
	if err != nil {
		u.log.Error("sync: deleting acked records failed; they will be resent", "err", err)
		return
	}
	if len(a.Rejected) > 0 {
		u.rejected.Add(int64(len(a.Rejected)))
		u.log.Error("sync: collector rejected records; dropped", "count", len(a.Rejected), "batch", a.Batch.String())
	}
	if f, ok := pending[a.Batch]; ok {
		delete(pending, a.Batch)
		// Anything in the batch the ack did not name goes back to the queue.
		named := make(map[outbox.ID]bool, len(ids))
		for _, id := range ids {
			named[id] = true
		}
		var missing []outbox.ID
		for _, id := range f.ids {
			if !named[id] {
				missing = append(missing, id)
			}
		}
		u.ob.Release(missing)
		u.batches.Add(1)
	}
	u.records.Add(int64(n))
	u.wire.Add(int64(len(msg)) + ackOverhead)
	u.mu.Lock()
	u.stats.LastSync = u.o.Now()
	u.mu.Unlock()
}

func (u *Uplink) publishStatus(ctx context.Context, conn Conn, state string) {
	st, _ := u.ob.Stats()
	u.mu.Lock()
	last := u.stats.LastSync
	u.mu.Unlock()
	s := Status{Device: u.o.Device, State: state, Queue: st.Count, LastSync: last, Version: u.o.Version, Time: u.o.Now()}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := conn.Publish(pctx, StatusTopic(u.o.Device), 1, true, s.encode()); err != nil {
		u.log.Debug("sync: status publish failed", "err", err)
	}
}
