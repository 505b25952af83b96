package sync

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/internal/counter"
	"github.com/outpost-edge/outpost/outbox"
	"github.com/prometheus/client_golang/prometheus"
)

// UplinkOptions configure an Uplink. Zero values take the documented defaults.
type UplinkOptions struct {
	Device       string        // required; [A-Za-z0-9._-]{1,64}
	BatchRecords int           // records per batch; default 500
	BatchBytes   int           // encoded record bytes per batch before compression; default 256 KiB
	Window       int           // batches published but not yet acked by the collector; default 4
	AckTimeout   time.Duration // a batch unacked this long is released and sent again; default 30s
	AckCheck     time.Duration // how often deadlines are looked at (real time); default min(AckTimeout/4, 1s)
	MinBackoff   time.Duration // reconnect backoff floor; default 1s
	MaxBackoff   time.Duration // reconnect backoff cap; default 5m
	Idle         time.Duration // Run: how often to look for new records when not notified; default 10s
	Budget       *Budget       // nil: unlimited
	// Probe cheaply checks that the broker is reachable again (sync/mqtt's
	// Prober: a TCP connect). While waiting out a reconnect backoff, the
	// uplink probes every ProbeEvery (jittered); once a probe that failed
	// succeeds, it connects at once instead of sleeping out a backoff that
	// grew during a long outage (a field link may be up for a minute only).
	Probe      func(ctx context.Context) error
	ProbeEvery time.Duration // default 10s
	Version    string        // outpost version, sent in status
	// HubKeys pins the hub's ack-signing public keys (two during a key
	// rotation). With any set, an ack that is unsigned or not signed by one
	// of them deletes nothing: it is counted as forged and logged.
	HubKeys []ed25519.PublicKey
	// DeviceKey, if set, signs every batch (SignBatch): the hub stores a
	// batch only under the device whose key it enrolled.
	DeviceKey ed25519.PrivateKey
	// Fetcher, if set, downloads model updates offered on the cmd topic,
	// one chunk at a time whenever no results are waiting to go, within
	// the budget's bulk share.
	Fetcher *Fetcher
	// MayShare, if set, is asked before each piece of evidence leaves:
	// the sharing policy as configured now (false: deleted unsent).
	MayShare func(*outbox.Record) bool
	// EvidenceChunk is the evidence upload's chunk size; default 16 KiB.
	EvidenceChunk int
	// EvidenceWindow is how many evidence chunks may be in flight; default 4.
	EvidenceWindow int
	// OnReview stores an expert's review durably (the device's store); a
	// nil error, or ErrDuplicate, sends the hub a receipt.
	OnReview func(*Review) error
	// OnWarning stores a regional warning durably; a nil error or
	// ErrDuplicate sends the hub a receipt, any other error (another
	// region, expired) refuses it without one.
	OnWarning func(*Warning) error
	// ClockJumps reports the wall-clock jumps the device noticed.
	ClockJumps func() int
	// Models reports the installed models for the status message.
	Models func() map[string]int64
	Logger *slog.Logger
	Now    func() time.Time
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
	if o.EvidenceWindow <= 0 {
		o.EvidenceWindow = 4
	}
	if o.EvidenceChunk <= 0 {
		o.EvidenceChunk = DefaultEvidenceChunk
	}
	if o.Idle <= 0 {
		o.Idle = 10 * time.Second
	}
	if o.ProbeEvery <= 0 {
		o.ProbeEvery = 10 * time.Second
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
	Batches      int64     `json:"batches" metric:"outpost_sync_batches_acked_total" help:"Batches the collector acknowledged."`
	Records      int64     `json:"records" metric:"outpost_sync_records_acked_total" help:"Records deleted after the collector's ack."`
	Rejected     int64     `json:"rejected" metric:"outpost_sync_rejected_total" help:"Records the hub rejected for good (dropped)."`
	Refused      int64     `json:"refused" metric:"outpost_sync_refused_batches_total" help:"Batches the hub refused (records kept, resent after a backoff)."`
	StrayAcks    int64     `json:"stray_acks" metric:"outpost_sync_stray_acks_total" help:"Acks naming batches or records this device did not send; ignored."`
	Mismatched   int64     `json:"mismatched_acks" metric:"outpost_sync_mismatched_acks_total" help:"Records an ack named with other bytes than those sent (substituted on the way); kept."`
	ForgedAcks   int64     `json:"forged_acks" metric:"outpost_sync_forged_acks_total" help:"Acks not signed by a pinned hub key; nothing deleted."`
	Resent       int64     `json:"resent" metric:"outpost_sync_resent_total" help:"Batches resent after no ack."`
	Connects     int64     `json:"connects" metric:"outpost_sync_connects_total" help:"Successful broker connections."`
	ConnectFails int64     `json:"connect_fails" metric:"outpost_sync_connect_failures_total" help:"Failed broker connections."`
	WireBytes    int64     `json:"wire_bytes" metric:"outpost_sync_wire_bytes_total" help:"Estimated bytes on the wire for results, both directions."`
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

	n         counter.Set[UplinkStats] // declared once: JSON and Prometheus
	ev        counter.Set[EvidenceStats]
	connected atomic.Bool

	up                                  *upload // evidence being uploaded (session goroutine)
	reviews, reviewsDup, reviewsRefused atomic.Int64
	warnings, warningsRefused           atomic.Int64

	// sent remembers the records of the last maxRecent batches this device
	// published (the session goroutine alone touches it). An ack is applied
	// only to records a batch it names really carried: anyone who may
	// publish on the ack topic could otherwise make the device delete
	// records no hub has. It outlives a session so the ack of a batch sent
	// just before a reconnect still counts.
	// Each record is remembered with the Sum of the bytes sent: an ack
	// deletes it only when the hub names those bytes.
	sent      map[outbox.ID]map[outbox.ID]Sum
	sentOrder []outbox.ID
	// refusals counts, per record, how often a hub refused it; the backoff
	// before its next send doubles each time.
	refusals map[outbox.ID]int
	// undeleted holds records a hub acknowledged that the outbox could not
	// delete yet (a full disk): retried every tick, never resent meanwhile.
	undeleted []outbox.ID
	// probe waits out reconnect backoffs, cut short when the broker comes
	// back (ProbeWait).
	probe ProbeWait
	// sawDown: a probe has failed since the last successful connection, so
	// a probe that succeeds means the broker came back.
}

// maxRecent bounds Uplink.sent: far more batches than a window holds, so a
// late ack (after a timeout and resend) is still recognised.
const maxRecent = 1024

// NewUplink validates options.
func NewUplink(ob *outbox.Outbox, dial Dialer, o UplinkOptions) (*Uplink, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	u := &Uplink{ob: ob, dial: dial, o: o, log: o.Logger, wake: make(chan struct{}, 1),
		probe: ProbeWait{Probe: o.Probe, Every: o.ProbeEvery, Log: o.Logger},
		sent:  map[outbox.ID]map[outbox.ID]Sum{}, refusals: map[outbox.ID]int{}}
	u.n.Init("")
	u.ev.Init("")
	return u, nil
}

// Connected reports whether a session to the broker is up now (the kiosk's
// sync indicator; a configured broker is not a connected one).
func (u *Uplink) Connected() bool { return u.connected.Load() }

// Notify wakes a waiting Run: new records were appended.
func (u *Uplink) Notify() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (u *Uplink) Stats() UplinkStats {
	st := u.n.Snapshot()
	u.mu.Lock()
	st.LastSync = u.stats.LastSync
	u.mu.Unlock()
	return st
}

// Counters are the uplink's results and evidence counters for a
// Prometheus registry (read in place at each scrape).
func (u *Uplink) Counters() []prometheus.Collector { return []prometheus.Collector{&u.n, &u.ev} }

// errDrained ends a session in once-mode.
var errDrained = errors.New("drained")

// ErrBudget: Drain stopped with records waiting because today's byte budget
// is spent (alerts excepted).
var ErrBudget = errors.New("sync: daily byte budget spent")

// ErrRefused: Drain stopped because the hub refused every record still
// waiting; they stay on the device (Ack.Refused).
var ErrRefused = errors.New("sync: the hub refused the remaining records")

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
		if errors.Is(err, ErrBudget) || errors.Is(err, ErrRefused) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := bo.Next()
		u.log.Warn("sync: uplink disconnected; retrying", "err", err, "in", wait.Round(time.Millisecond))
		if err := u.waitOrProbe(ctx, wait); err != nil {
			return err
		}
	}
}

// waitOrProbe sleeps d, but returns early when the broker, unreachable at
// a probe since the last successful connection, answers again (also when
// the reconnect right after that failed: a broker just back may be slow to
// answer). A broker that always answers TCP but refuses MQTT (bad
// credentials) keeps the full backoff: only a change counts.
func (u *Uplink) waitOrProbe(ctx context.Context, d time.Duration) error {
	return u.probe.Wait(ctx, d)
}

type inflight struct {
	ids      []outbox.ID
	deadline time.Time
}

// session runs one connection until it fails, ctx ends, or (once) the
// outbox is drained.
func (u *Uplink) session(ctx context.Context, once bool, bo *Backoff) error {
	// The Will is fixed when we connect: the queue, last sync and counters
	// as of now, and Time = now (docs/PROTOCOL.md).
	will := &Will{Topic: StatusTopic(u.o.Device), Payload: u.status("offline").encode(), Retained: true}
	conn, err := u.dial(ctx, "outpost-"+u.o.Device, will)
	if err != nil {
		atomic.AddInt64(&u.n.C.ConnectFails, 1)
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	u.o.Budget.spendOn(u.o.Now(), TierNameSession,
		sessionCost("outpost-"+u.o.Device, will, []string{AckTopic(u.o.Device), CmdTopic(u.o.Device)}))
	acks := make(chan []byte, 64)
	err = conn.Subscribe(ctx, AckTopic(u.o.Device), 1, func(m Message) {
		select {
		case acks <- append([]byte(nil), m.Payload...):
		default:
			// Full: drop. The batch times out and is resent; the collector
			// dedups and acks again. Never block paho's receive loop.
			u.log.Warn("sync: ack queue full; dropping an ack (the batch will be resent)")
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", AckTopic(u.o.Device), err)
	}
	cmds := make(chan []byte, 16)
	var changed <-chan struct{}
	if f := u.o.Fetcher; f != nil {
		defer f.Disconnected()
		changed = f.Changed()
	}
	defer func() {
		// An upload in progress resumes in the next session, at what the
		// hub says it has.
		if u.up != nil {
			u.ob.Release([]outbox.ID{u.up.rec.ID})
			u.up = nil
		}
	}()
	// Reviews queue apart: a flood of them (1,500 forged ones dropped 819
	// commands, evidence acks and offers among them) cannot crowd out
	// what the sync needs; the hub resends reviews until confirmed.
	reviews := make(chan []byte, 16)
	err = conn.Subscribe(ctx, CmdTopic(u.o.Device), 1, func(m Message) {
		q := cmds
		if k := CmdKind(m.Payload); k == "review" || k == "warning" {
			q = reviews
		}
		select {
		case q <- append([]byte(nil), m.Payload...):
		default:
			// We have one chunk out at a time, so this is a flood:
			// dropped; what we need is asked for again.
			u.log.Warn("sync: command queue full; dropping a message", "kind", CmdKind(m.Payload))
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", CmdTopic(u.o.Device), err)
	}
	atomic.AddInt64(&u.n.C.Connects, 1)
	u.connected.Store(true)
	defer u.connected.Store(false)
	u.probe.Connected()
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
	tick := time.NewTicker(cmp.Or(u.o.AckCheck, min(u.o.AckTimeout/4, time.Second)))
	defer tick.Stop()
	idle := time.NewTimer(u.o.Idle)
	defer idle.Stop()
	for {
		// Fill the window.
		caughtUp, evMoved := false, false
		for len(pending) < u.o.Window {
			sent, err := u.sendOne(ctx, conn, pending)
			if err != nil {
				return err
			}
			if !sent {
				caughtUp = true
				break
			}
		}
		if caughtUp {
			// Results first; then evidence; then model downloads: each
			// moves only when every result the budget lets go is on its way.
			// Fill the evidence window too (a chunk per round trip was slow).
			for i := 0; i < u.o.EvidenceWindow; i++ {
				moved, err := u.sendEvidence(ctx, conn)
				if err != nil {
					return err
				}
				if !moved {
					break
				}
				evMoved = true
			}
			if !evMoved && u.up == nil {
				if err := u.fetchMore(ctx, conn); err != nil {
					return err
				}
			}
		}
		// An upload that neither moved nor waits for the hub is held by the
		// budget's bulk share: a one-shot sync ends there (it waited
		// forever before, found by the 30-day simulation on this code).
		evIdle := u.up == nil || caughtUp && !evMoved && !u.up.asked
		if once && len(pending) == 0 && evIdle {
			if st, err := u.ob.Stats(); err == nil && st.Count == 0 {
				// A one-shot sync disconnects cleanly (no Will): say so.
				u.publishStatus(ctx, conn, "offline")
				return errDrained
			} else if err == nil && !u.o.Budget.allowsAny(u.o.Now()) {
				return fmt.Errorf("%w with %d records waiting", ErrBudget, st.Count)
			} else if err == nil && len(u.refusals) > 0 {
				// Nothing eligible, nothing in flight: what is left is
				// waiting out a refusal. A one-shot sync reports it.
				return fmt.Errorf("%w: %d records kept on the device", ErrRefused, st.Count)
			} else if err == nil && caughtUp && !evMoved {
				// What is left may not go today: bulk records or evidence
				// beyond the budget's bulk share.
				return fmt.Errorf("%w (bulk share) with %d records waiting", ErrBudget, st.Count)
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
			// Acks that came in while the window was being sent count before
			// any deadline does (select picks among ready cases at random).
			for more := true; more; {
				select {
				case msg := <-acks:
					u.handleAck(msg, pending)
				default:
					more = false
				}
			}
			u.retryDeletes()
			now := u.o.Now()
			for id, f := range pending {
				if now.After(f.deadline) {
					u.ob.Release(f.ids)
					delete(pending, id)
					atomic.AddInt64(&u.n.C.Resent, 1)
					u.log.Warn("sync: no ack from the collector; batch will be resent", "batch", id.String(), "records", len(f.ids))
				}
			}
		case m := <-reviews:
			if IsWarning(m) {
				u.handleWarning(ctx, conn, m)
			} else {
				u.handleReview(ctx, conn, m)
			}
		case m := <-cmds:
			switch k := CmdKind(m); {
			case k == "evidence-ack":
				u.handleEvidenceAck(m)
			case k == "offer" && u.o.Fetcher != nil:
				u.o.Fetcher.HandleOffer(m)
			case k == "chunk" && u.o.Fetcher != nil:
				u.o.Fetcher.HandleChunk(m)
			default:
				u.log.Warn("sync: unknown command ignored", "bytes", len(m))
			}
		case <-changed:
			u.publishStatus(ctx, conn, "online")
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
	sums := make(map[outbox.ID]Sum, len(recs))
	var enc []byte
	for i, r := range recs {
		ids[i] = r.ID
		enc = r.Encode(enc[:0])
		sums[r.ID] = RecordSum(enc)
	}
	b := &Batch{ID: outbox.NewIDGen().New(), Device: u.o.Device, Sent: now, Records: recs}
	msg := EncodeBatch(b)
	if u.o.DeviceKey != nil {
		msg = SignBatch(msg, u.o.DeviceKey)
	}
	cost := WireCost(ResultsTopic(u.o.Device), len(msg), len(recs))
	if !u.o.Budget.fits(now, cost, recs) {
		u.ob.Release(ids)
		return false, nil
	}
	if err := conn.Publish(ctx, ResultsTopic(u.o.Device), 1, false, msg); err != nil {
		u.ob.Release(ids)
		return false, fmt.Errorf("publish batch %s: %w", b.ID, err)
	}
	u.o.Budget.spendOn(now, TierNameLabels, cost)
	atomic.AddInt64(&u.n.C.WireBytes, cost)
	// The ack clock starts when the broker has the batch: on a 5 KB/s link
	// a 130 KB batch takes 26 s to send, and timing it from before the
	// publish resent batches whose acks were on their way (found by the
	// 30-day simulation once it ran this code).
	pending[b.ID] = &inflight{ids: ids, deadline: u.o.Now().Add(u.o.AckTimeout)}
	u.remember(b.ID, sums)
	return true, nil
}

// fetchMore asks for the next chunk of a model download, if one is due
// and the budget's bulk share has room for it (paid when asked).
func (u *Uplink) fetchMore(ctx context.Context, conn Conn) error {
	f := u.o.Fetcher
	if f == nil {
		return nil
	}
	now := u.o.Now()
	id, i, size, ok := f.Next(now)
	if !ok {
		return nil
	}
	req := FetchRequest(id, i)
	cost := WireCost(FetchTopic(u.o.Device), len(req), 0) - ackOverhead +
		WireCost(CmdTopic(u.o.Device), size+4+16+binary.MaxVarintLen32, 0) - ackOverhead
	if !u.o.Budget.allowsBulk(now, cost) {
		return nil
	}
	if err := conn.Publish(ctx, FetchTopic(u.o.Device), 1, false, req); err != nil {
		return fmt.Errorf("publish fetch request: %w", err)
	}
	u.o.Budget.spendOn(now, TierNameUpdates, cost)
	f.Requested(now, id, i, cost)
	return nil
}

// ErrDuplicate, from OnReview: the review is stored already.
var ErrDuplicate = errors.New("duplicate")

// handleReview stores a review and confirms it to the hub.
func (u *Uplink) handleReview(ctx context.Context, conn Conn, msg []byte) {
	if len(u.o.HubKeys) == 0 {
		// Without a pinned key anyone on the broker could put advice on
		// the kiosk ("spray diesel"): reviews are shown only when signed
		// by a hub this device pins.
		u.reviewsRefused.Add(1)
		u.log.Warn("sync: review ignored: this device pins no hub key (hub_keys), so it cannot tell the hub's review from anyone's")
		return
	}
	r, err := DecodeReview(msg, u.o.Device, u.o.HubKeys)
	if err != nil {
		u.reviewsRefused.Add(1)
		u.log.Warn("sync: review ignored", "err", err)
		return
	}
	if now := u.o.Now(); r.Time.After(now.Add(time.Minute)) {
		r.Time = now.UTC() // a review dated 9999 stayed first for good
	}
	if u.o.OnReview == nil {
		return
	}
	switch err := u.o.OnReview(r); {
	case errors.Is(err, ErrDuplicate):
		u.reviewsDup.Add(1)
	case err != nil:
		u.log.Error("sync: storing a review failed; the hub will send it again", "of", r.Of.String(), "err", err)
		return
	default:
		u.reviews.Add(1)
	}
	if err := conn.Publish(ctx, EvidenceTopic(u.o.Device), 1, false, EncodeReviewReceipt(r.Of, u.o.Device, u.o.DeviceKey)); err != nil {
		u.log.Warn("sync: review receipt not sent", "err", err)
	}
}

// handleWarning stores a regional warning and confirms it to the hub.
func (u *Uplink) handleWarning(ctx context.Context, conn Conn, msg []byte) {
	if len(u.o.HubKeys) == 0 {
		// As with reviews: unsigned words on the kiosk's front page are
		// anyone's words.
		u.warningsRefused.Add(1)
		u.log.Warn("sync: warning ignored: this device pins no hub key (hub_keys)")
		return
	}
	w, err := DecodeWarning(msg, u.o.Device, u.o.HubKeys)
	if err == nil && u.o.OnWarning != nil {
		err = u.o.OnWarning(w)
	}
	switch {
	case errors.Is(err, ErrDuplicate):
	case err != nil:
		u.warningsRefused.Add(1)
		u.log.Warn("sync: warning refused", "err", err)
		return
	default:
		u.warnings.Add(1)
	}
	if err := conn.Publish(ctx, EvidenceTopic(u.o.Device), 1, false, EncodeWarningReceipt(w.ID, u.o.Device, u.o.DeviceKey)); err != nil {
		u.log.Warn("sync: warning receipt not sent", "err", err)
	}
}

// WarningStats: warnings stored and refused in this process.
func (u *Uplink) WarningStats() (stored, refused int64) {
	return u.warnings.Load(), u.warningsRefused.Load()
}

// ReviewStats: reviews stored, duplicates and refused in this process.
func (u *Uplink) ReviewStats() (stored, duplicates, refused int64) {
	return u.reviews.Load(), u.reviewsDup.Load(), u.reviewsRefused.Load()
}

// retryDeletes deletes records a hub acknowledged earlier that the outbox
// could not delete then.
func (u *Uplink) retryDeletes() {
	if len(u.undeleted) == 0 {
		return
	}
	n, err := u.ob.Ack(u.undeleted)
	if err != nil {
		return
	}
	atomic.AddInt64(&u.n.C.Records, int64(n))
	u.log.Info("sync: deleted records acknowledged earlier", "count", n)
	u.undeleted = nil
}

func (u *Uplink) remember(batch outbox.ID, ids map[outbox.ID]Sum) {
	if len(u.sentOrder) >= maxRecent {
		delete(u.sent, u.sentOrder[0])
		u.sentOrder = u.sentOrder[1:]
	}
	u.sent[batch] = ids
	u.sentOrder = append(u.sentOrder, batch)
}

// refusalBackoff is how long records a hub refused wait before their next
// send: AckTimeout doubled per refusal, capped at an hour, with jitter so
// a fleet refused by one hub does not return at once.
func (u *Uplink) refusalBackoff(n int) time.Duration {
	d := u.o.AckTimeout << min(n-1, 20)
	if d > time.Hour || d <= 0 {
		d = time.Hour
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func (u *Uplink) handleAck(msg []byte, pending map[outbox.ID]*inflight) {
	if err := VerifyAck(msg, u.o.Device, u.o.HubKeys); err != nil {
		// Someone other than the hub: never delete on it.
		atomic.AddInt64(&u.n.C.ForgedAcks, 1)
		u.log.Warn("sync: ignoring an ack the hub did not sign", "err", err, "bytes", len(msg))
		return
	}
	a, err := DecodeAck(msg)
	if err != nil {
		u.log.Warn("sync: ignoring malformed ack", "err", err, "bytes", len(msg))
		return
	}
	atomic.AddInt64(&u.n.C.WireBytes, int64(len(msg))+ackOverhead)
	sentSums, ok := u.sent[a.Batch]
	if !ok {
		atomic.AddInt64(&u.n.C.StrayAcks, 1)
		u.log.Warn("sync: ignoring an ack for a batch this device did not send (or sent too long ago)",
			"batch", a.Batch.String(), "stored", len(a.Stored), "rejected", len(a.Rejected))
		return
	}
	// Apply the ack only to records this batch carried, and only where
	// the hub names the very bytes sent (an ack without sums names none).
	inBatch := make(map[outbox.ID]bool, len(sentSums))
	for id := range sentSums {
		inBatch[id] = false
	}
	mismatched := 0
	keep := func(ids []outbox.ID, sums []Sum) []outbox.ID {
		var out []outbox.ID
		for i, id := range ids {
			named, ok := inBatch[id]
			if !ok || named {
				continue
			}
			if i >= len(sums) || sums[i] != sentSums[id] {
				mismatched++
				continue
			}
			inBatch[id] = true
			out = append(out, id)
		}
		return out
	}
	stored, rejected := keep(a.Stored, a.StoredSums), keep(a.Rejected, a.RejectedSums)
	if mismatched > 0 {
		atomic.AddInt64(&u.n.C.Mismatched, int64(mismatched))
		u.log.Warn("sync: ack names records by bytes this device did not send (substituted or cut short on the way, or a hub without sums); they are kept",
			"batch", a.Batch.String(), "records", mismatched)
	}
	if extra := len(a.Stored) + len(a.Rejected) - len(stored) - len(rejected) - mismatched; extra > 0 {
		atomic.AddInt64(&u.n.C.StrayAcks, 1)
		u.log.Warn("sync: ack names records its batch did not carry; those are ignored", "batch", a.Batch.String(), "ignored", extra)
	}
	n, err := u.ob.Ack(stored)
	if err != nil {
		// The hub has them: do not send them again; delete them as soon
		// as the outbox can (retried every tick).
		u.undeleted = append(u.undeleted, stored...)
		u.ob.Defer(stored, u.o.Now().Add(24*time.Hour))
		u.log.Error("sync: deleting acked records failed; retrying shortly (they are not resent)", "count", len(stored), "err", err)
		n, stored = 0, nil
	}
	if len(rejected) > 0 {
		if _, err := u.ob.Ack(rejected); err != nil {
			u.log.Error("sync: dropping rejected records failed; they will be resent", "err", err)
			return
		}
		atomic.AddInt64(&u.n.C.Rejected, int64(len(rejected)))
		u.log.Error("sync: collector rejected records; dropped", "count", len(rejected), "batch", a.Batch.String())
	}
	for _, id := range stored {
		delete(u.refusals, id)
	}
	var missing []outbox.ID
	for id, named := range inBatch {
		if !named {
			missing = append(missing, id)
		}
	}
	_, live := pending[a.Batch]
	if live {
		delete(pending, a.Batch)
		atomic.AddInt64(&u.n.C.Batches, 1)
	}
	if a.Refused != nil {
		atomic.AddInt64(&u.n.C.Refused, 1)
		// Keep what the ack did not name; send it again only after a
		// backoff that grows with each refusal of the same records.
		worst := 0
		for _, id := range missing {
			u.refusals[id]++
			worst = max(worst, u.refusals[id])
		}
		wait := u.refusalBackoff(max(worst, 1))
		u.ob.Defer(missing, u.o.Now().Add(wait))
		u.log.Error("sync: the hub refused a batch; its records stay on the device and are resent later",
			"batch", a.Batch.String(), "code", a.Refused.Code.String(), "reason", a.Refused.Reason,
			"kept", len(missing), "stored", len(stored), "retry_in", wait.Round(time.Second))
	} else if live {
		// Anything in the batch the ack did not name goes back to the queue.
		u.ob.Release(missing)
	}
	atomic.AddInt64(&u.n.C.Records, int64(n))
	if len(stored) > 0 || len(rejected) > 0 {
		u.mu.Lock()
		u.stats.LastSync = u.o.Now()
		u.mu.Unlock()
	}
}

// status describes the device now. LastSync comes from the outbox, where
// it survives restarts, so even a first status after boot carries it.
func (u *Uplink) status(state string) Status {
	st, _ := u.ob.Stats()
	s := Status{Device: u.o.Device, State: state, Queue: st.Count, LastSync: st.LastAck, Version: u.o.Version,
		Time: u.o.Now().UTC(), Evicted: st.Evicted, Expired: st.Expired, Refused: st.Refused, Update: u.o.Fetcher.Status()}
	if u.o.Models != nil {
		s.Models = u.o.Models()
	}
	boot, mono := outbox.BootClock()
	s.Boot, s.MonoMS = boot.String(), mono.Milliseconds()
	if u.o.ClockJumps != nil {
		s.ClockJumps = u.o.ClockJumps()
	}
	return s
}

func (u *Uplink) publishStatus(ctx context.Context, conn Conn, state string) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	payload := u.status(state).encode()
	u.o.Budget.spendOn(u.o.Now(), TierNameSession, statusCost(StatusTopic(u.o.Device), len(payload)))
	if err := conn.Publish(pctx, StatusTopic(u.o.Device), 1, true, payload); err != nil {
		u.log.Debug("sync: status publish failed", "err", err)
	}
}
