package hub

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/internal/counter"
	osync "github.com/outpost-edge/outpost/sync"
)

// CollectorOptions configure a Collector.
type CollectorOptions struct {
	// ClientID is the MQTT client id (a persistent session). Default: the
	// store's (Store.ClientID), made once and kept.
	ClientID string
	// ShareGroup, if set, subscribes to results as an MQTT shared
	// subscription ($share/GROUP/outpost/v1/+/results): several collectors
	// on one store split the devices' batches between them; the store's
	// idempotence makes a redelivery to another collector harmless.
	ShareGroup string
	// Key signs every ack (ed25519): devices that pin its public key
	// delete records only on acks it signed.
	Key ed25519.PrivateKey
	// Registry names devices on the hub page and API (name, region).
	Registry Registry
	// Shelf, if set, holds model packages published to devices: the
	// collector offers them on devices' cmd topics when their status shows
	// an older version, and answers their chunk requests.
	Shelf *Shelf
	// EvidenceDaily caps the evidence bytes one device may upload per
	// day (default 256 MiB): past it, chunks are not stored and the device
	// is told what the hub has, so it waits (one client stored 80 MiB of
	// junk in 16 s before).
	EvidenceDaily int64
	// WarningAdvice is the model's advice (label -> language -> text, the
	// format of a model's advice.json) that regional warnings quote.
	WarningAdvice map[string]map[string]string
	// SilentAfter makes a device not heard from this long an alert
	// (default 3 days); AlertEvery is how often the collector republishes
	// the alerts that changed on their retained topics (default 1 minute).
	SilentAfter time.Duration
	AlertEvery  time.Duration
	// WarnEvery is how often the outbreak warning rule runs; default 10
	// minutes, negative: never (warnings only by hand).
	WarnEvery time.Duration
	// Probe cheaply checks the broker is reachable (sync/mqtt's Prober):
	// while waiting out a reconnect backoff the collector probes every
	// second or so and connects as soon as the broker is back.
	Probe func(ctx context.Context) error
	// Commits is how many commit groups may be in flight at once
	// (default 4): the collector decodes and commits the next groups while
	// one waits on the store's fsync, and acks each as it commits.
	Commits    int
	MinBackoff time.Duration // default 1s
	MaxBackoff time.Duration // default 1m
	Logger     *slog.Logger
	Now        func() time.Time
}

// CollectorStats are the collector's counters since start, declared once:
// the API's /v1/stats (JSON) and /metrics (outpost_hub_*) both come from
// these tags (internal/counter).
type CollectorStats struct {
	Batches     int64 `json:"batches" metric:"batches_total" help:"Result batches received."`
	Stored      int64 `json:"stored" metric:"stored_total" help:"Results stored (new)."`
	Duplicates  int64 `json:"duplicates" metric:"duplicates_total" help:"Results received again and acknowledged again, not stored twice."`
	Malformed   int64 `json:"malformed" metric:"malformed_total" help:"Messages that did not decode; dropped."`
	Acks        int64 `json:"acks" metric:"acks_total" help:"Acks published after a durable commit."`
	Rejected    int64 `json:"rejected" metric:"rejected_total" help:"Undecodable records named in acks (the device drops them)."`
	Conflicts   int64 `json:"conflicts" metric:"conflicts_total" help:"Records whose ID the hub holds with other bytes; not acked."`
	NotDevice   int64 `json:"not_device" metric:"not_device_total" help:"Batches not signed by their device's enrolled key; refused."`
	Refused     int64 `json:"refused" metric:"refused_total" help:"Acks refusing (part of) a batch; the device keeps the records."`
	Deferred    int64 `json:"deferred" metric:"deferred_total" help:"Messages held for a later commit: their device was over its share of one."`
	Offers      int64 `json:"offers" metric:"offers_total" help:"Model update offers sent."`
	Chunks      int64 `json:"chunks" metric:"chunks_total" help:"Model package chunks sent."`
	ChunkBytes  int64 `json:"chunk_bytes" metric:"chunk_bytes_total" help:"Model package bytes sent."`
	BadFetches  int64 `json:"bad_fetches" metric:"bad_fetches_total" help:"Chunk requests refused (unknown package, not for this device, malformed)."`
	Evidence    int64 `json:"evidence" metric:"evidence_total" help:"Pieces of evidence (photos, recordings) stored whole."`
	EvRefused   int64 `json:"evidence_refused" metric:"evidence_refused_total" help:"Pieces of evidence refused (type, size, digest)."`
	EvThrottled int64 `json:"evidence_throttled" metric:"evidence_throttled_total" help:"Evidence chunks not stored: the device was over its daily quota."`
	EvBytes     int64 `json:"evidence_bytes" metric:"evidence_bytes_total" help:"Evidence bytes stored."`
	Reviews     int64 `json:"reviews" metric:"reviews_total" help:"Expert reviews posted."`
	Sent        int64 `json:"reviews_sent" metric:"reviews_sent_total" help:"Review messages sent to devices."`
	BadReviews  int64 `json:"bad_reviews" metric:"bad_reviews_total" help:"Reviews refused: unknown result, duplicate, malformed."`
	Warnings    int64 `json:"warnings" metric:"warnings_issued_total" help:"Regional warnings issued."`
	WarnSent    int64 `json:"warnings_sent" metric:"warnings_sent_total" help:"Warning messages sent to devices."`
	WarnRecpts  int64 `json:"warning_receipts" metric:"warning_receipts_total" help:"Devices' confirmations of warnings."`
}

// Collector stores devices' results on the hub, idempotently by record ID,
// and acknowledges each batch only after its commit is durable.
type Collector struct {
	st  Store
	o   CollectorOptions
	log *slog.Logger
	in  chan msg

	n         counter.Set[CollectorStats]               // every counter, declared once
	probe     osync.ProbeWait                           // Run's goroutine only
	early     map[string]map[int64]*osync.EvidenceChunk // putInOrder; Run's goroutine only
	evQuota   evidenceQuota
	keys      keyCache
	deliver   chan string // devices with a new review
	connected atomic.Bool // subscribed and the session up (healthz)
	closeOnce gosync.Once
	ready     chan struct{}
	readyOnce gosync.Once
}

type msg struct {
	topic    string
	payload  []byte
	retained bool
	held     bool // already counted as deferred
}

// Open opens (or creates) the embedded bbolt store at path and a
// Collector over it.
func Open(path string, o CollectorOptions) (*Collector, error) {
	st, err := OpenBolt(path)
	if err != nil {
		return nil, err
	}
	c, err := New(st, o)
	if err != nil {
		st.Close()
		return nil, err
	}
	return c, nil
}

// New returns a Collector over a store; Close closes the store.
func New(st Store, o CollectorOptions) (*Collector, error) {
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
	if o.ClientID == "" {
		id, err := st.ClientID(context.Background())
		if err != nil {
			return nil, fmt.Errorf("hub: client id: %w", err)
		}
		o.ClientID = id
	}
	c := &Collector{st: st, o: o, log: o.Logger, in: make(chan msg, 256), ready: make(chan struct{}), deliver: make(chan string, 64)}
	c.n.Init("outpost_hub_")
	return c, nil
}

// ClientID is the MQTT client id this collector connects with.
func (c *Collector) ClientID() string { return c.o.ClientID }

// Ready is closed once the collector has subscribed for the first time.
func (c *Collector) Ready() <-chan struct{} { return c.ready }

// Store is the store the collector writes to.
func (c *Collector) Store() Store { return c.st }

// Close closes the store. Safe to call twice.
func (c *Collector) Close() error {
	var err error
	c.closeOnce.Do(func() { err = c.st.Close() })
	return err
}

// Stats returns the counters since start.
func (c *Collector) Stats() CollectorStats { return c.n.Snapshot() }

// count adds n to one of the collector's counters.
func (c *Collector) count(field *int64, n int64) { atomic.AddInt64(field, n) }

// Run connects (retrying with jittered backoff), subscribes to every
// device's results and status, and stores and acks until ctx ends.
func (c *Collector) Run(ctx context.Context, dial osync.Dialer) error {
	bo := osync.Backoff{Min: c.o.MinBackoff, Max: c.o.MaxBackoff}
	c.probe = osync.ProbeWait{Probe: c.o.Probe, Every: time.Second, Log: c.log}
	if c.o.WarnEvery >= 0 {
		go c.warnLoop(ctx, cmp.Or(c.o.WarnEvery, 10*time.Minute))
	}
	for {
		err := c.session(ctx, dial, &bo)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := bo.Next()
		c.log.Warn("collector: disconnected; retrying", "err", err, "in", wait.Round(time.Millisecond))
		if err := c.probe.Wait(ctx, wait); err != nil {
			return ctx.Err()
		}
	}
}

func (c *Collector) session(ctx context.Context, dial osync.Dialer, bo *osync.Backoff) error {
	conn, err := dial(ctx, c.o.ClientID, nil)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	h := func(m osync.Message) {
		// Hand over and return: paho's receive loop must not wait on our
		// fsync or on our own publishes.
		select {
		case c.in <- msg{topic: m.Topic, payload: append([]byte(nil), m.Payload...), retained: m.Retained}:
		case <-conn.Done():
		}
	}
	results := osync.TopicPrefix + "+/results"
	if c.o.ShareGroup != "" {
		results = "$share/" + c.o.ShareGroup + "/" + results
	}
	// Statuses stay a plain subscription: every collector sees each device's
	// retained status (shared subscriptions get no retained messages).
	evidence := osync.TopicPrefix + "+/evidence"
	if c.o.ShareGroup != "" {
		evidence = "$share/" + c.o.ShareGroup + "/" + evidence
	}
	topics := []string{results, osync.TopicPrefix + "+/status", evidence}
	if c.o.Shelf != nil {
		fetch := osync.TopicPrefix + "+/fetch"
		if c.o.ShareGroup != "" {
			fetch = "$share/" + c.o.ShareGroup + "/" + fetch
		}
		topics = append(topics, fetch)
	}
	for _, t := range topics {
		if err := conn.Subscribe(ctx, t, 1, h); err != nil {
			return fmt.Errorf("subscribe %s: %w", t, err)
		}
	}
	bo.Reset()
	c.probe.Connected()
	c.connected.Store(true)
	defer c.connected.Store(false)
	c.readyOnce.Do(func() { close(c.ready) })
	c.log.Info("collector: connected", "client_id", c.o.ClientID)
	// Alerts: republished whole on every connection (a broker restarted
	// without persistence lost the retained ones), then as they change.
	alerts := &alertPublisher{}
	c.publishAlerts(ctx, conn, alerts)
	alertTick := time.NewTicker(cmp.Or(c.o.AlertEvery, time.Minute))
	defer alertTick.Stop()
	var held []msg
	pipe := newPipeline(cmp.Or(c.o.Commits, 4))
	defer pipe.wait() // a commit in flight finishes (its acks fail with the connection)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-conn.Done():
			return fmt.Errorf("connection lost: %w", conn.Err())
		case <-pipe.failed:
			return pipe.err
		case <-alertTick.C:
			c.publishAlerts(ctx, conn, alerts)
		case dev := <-c.deliver:
			c.deliverReviews(ctx, conn, dev)
			c.deliverWarnings(ctx, conn, dev)
		case m := <-c.in:
			held = c.next(ctx, conn, pipe, append(held, m))
			// Held messages need no new arrival to be handled.
			for len(held) > 0 && ctx.Err() == nil {
				select {
				case <-conn.Done():
					return fmt.Errorf("connection lost: %w", conn.Err())
				case <-pipe.failed:
					return pipe.err
				default:
				}
				held = c.next(ctx, conn, pipe, held)
			}
		}
	}
}

// Fairness: one commit takes at most groupMax messages, at most perDevice
// of them from any one device; a device sending faster than that waits its
// turn (counted as deferred) instead of delaying every other device's acks.
const (
	groupMax  = 64
	perDevice = 8
	heldMax   = 1024 // beyond this, stop reading: the broker holds the rest
)

// next takes what is waiting (queue first, then the channel), handles one
// fair group, hands its commit to the pipeline (waiting for a free slot),
// and returns what it held back.
func (c *Collector) next(ctx context.Context, conn osync.Conn, pipe *pipeline, queue []msg) []msg {
	for len(queue) < heldMax {
		select {
		case m := <-c.in:
			queue = append(queue, m)
			continue
		default:
		}
		break
	}
	var group, held []msg
	per := map[string]int{}
	for _, m := range queue {
		d, _, _ := osync.DeviceFromTopic(m.topic)
		if len(group) >= groupMax || per[d] >= perDevice {
			if !m.held {
				m.held = true
				c.count(&c.n.C.Deferred, 1)
			}
			held = append(held, m)
			continue
		}
		per[d]++
		group = append(group, m)
	}
	if j := c.handle(ctx, conn, group); len(j.batches)+len(j.refusals) > 0 {
		pipe.submit(ctx, conn.Done(), func() error { return c.commit(ctx, conn, j) })
	}
	return held
}

// pipeline runs up to n commits at once. The first error stops the
// session (failed closes); a commit in flight always finishes.
type pipeline struct {
	slots  chan struct{}
	wg     gosync.WaitGroup
	once   gosync.Once
	failed chan struct{}
	err    error // set before failed closes
}

func newPipeline(n int) *pipeline {
	return &pipeline{slots: make(chan struct{}, n), failed: make(chan struct{})}
}

// submit runs f once a slot is free; it gives up (f not run) when ctx
// ends, the connection is gone or a commit failed.
func (p *pipeline) submit(ctx context.Context, gone <-chan struct{}, f func() error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return
	case <-gone:
		return
	case <-p.failed:
		return
	}
	p.wg.Add(1)
	go func() {
		defer func() { <-p.slots; p.wg.Done() }()
		if err := f(); err != nil {
			p.once.Do(func() { p.err = err; close(p.failed) })
		}
	}()
}

func (p *pipeline) wait() { p.wg.Wait() }

type decoded struct {
	device string
	batch  *osync.Batch
	ack    *osync.Ack
}

// handle handles a group's statuses, fetches and evidence in turn and
// decodes its result batches into a job for a commit worker. A batch it
// cannot take is refused by name whenever its ID can be read, so the
// device backs off instead of resending it forever.
func (c *Collector) handle(ctx context.Context, conn osync.Conn, group []msg) job {
	now := c.o.Now()
	var batches, refusals []decoded
	for _, m := range group {
		device, kind, ok := osync.DeviceFromTopic(m.topic)
		if !ok {
			c.count(&c.n.C.Malformed, 1)
			c.log.Warn("collector: message on an unexpected topic ignored", "topic", m.topic)
			continue
		}
		switch kind {
		case "status":
			if st := c.recordStatus(ctx, device, m, now); st != nil && !m.retained && st.State == "online" {
				c.offer(ctx, conn, device, st)
				c.deliverReviews(ctx, conn, device)
				c.deliverWarnings(ctx, conn, device)
			}
		case "fetch":
			c.serveChunk(ctx, conn, device, m.payload)
		case "evidence":
			if osync.IsReviewReceipt(m.payload) {
				c.handleReceipt(ctx, device, m.payload)
			} else if osync.IsWarningReceipt(m.payload) {
				c.handleWarningReceipt(ctx, device, m.payload)
			} else {
				c.handleEvidence(ctx, conn, device, m.payload, now)
			}
		case "results":
			b, err := osync.DecodeBatch(m.payload)
			if err != nil {
				c.count(&c.n.C.Malformed, 1)
				c.log.Warn("collector: batch rejected", "device", device, "bytes", len(m.payload), "err", err)
				if id, ok := osync.BatchID(m.payload); ok {
					refusals = append(refusals, decoded{device: device, ack: &osync.Ack{Batch: id,
						Refused: &osync.Refusal{Code: osync.RefusedMalformed, Reason: err.Error()}}})
				}
				continue
			}
			if b.Device != device {
				c.count(&c.n.C.Malformed, 1)
				c.log.Warn("collector: batch device does not match its topic; refused", "topic", m.topic, "device", b.Device)
				// Refused by batch ID on the topic's device, never silent.
				refusals = append(refusals, decoded{device: device, ack: &osync.Ack{Batch: b.ID,
					Refused: &osync.Refusal{Code: osync.RefusedMalformed, Reason: fmt.Sprintf("batch names device %q, its topic %q", b.Device, device)}}})
				continue
			}
			batches = append(batches, decoded{device: device, batch: b})
		}
	}
	return job{batches: batches, refusals: refusals, now: now}
}

// job is one group's decoded batches and the refusals already known: what
// a commit worker checks, stores and acknowledges.
type job struct {
	batches, refusals []decoded
	now               time.Time
}

// commit checks the group's signers, stores what passes in one
// transaction, then publishes every ack of the group at once. It runs on
// a pipeline worker, several groups in flight: the collector reads, decodes
// and commits the next groups while this one waits on the store's fsync.
func (c *Collector) commit(ctx context.Context, conn osync.Conn, j job) error {
	now, refusals := j.now, j.refusals
	ss := make([]signer, len(j.batches))
	for i, d := range j.batches {
		ss[i] = signer{d.device, d.batch.Key}
	}
	enrolled, errs := c.keys.checkAll(ctx, c.st, ss, now)
	var batches []decoded
	for i, d := range j.batches {
		if err := errs[i]; err != nil {
			code := osync.RefusedUnavailable
			if errors.Is(err, ErrNotDevice) {
				code = osync.RefusedNotDevice
				c.count(&c.n.C.NotDevice, 1)
				c.log.Warn("collector: batch refused: not the device's", "device", d.device, "batch", d.batch.ID.String(), "err", err)
			}
			refusals = append(refusals, decoded{device: d.device, ack: &osync.Ack{Batch: d.batch.ID, Refused: &osync.Refusal{Code: code, Reason: err.Error()}}})
			continue
		}
		if enrolled[i] {
			c.log.Info("collector: device enrolled on first contact (compare the fingerprint with the device's `outpost status`)",
				"device", d.device, "fingerprint", osync.Fingerprint(d.batch.Key))
		}
		batches = append(batches, d)
	}
	if len(batches) > 0 {
		if err := c.store(ctx, batches, now); err != nil {
			c.log.Error("collector: storing failed; batches refused (devices keep them and retry later)", "err", err)
			for _, d := range batches {
				refusals = append(refusals, decoded{device: d.device, ack: &osync.Ack{Batch: d.batch.ID,
					Refused: &osync.Refusal{Code: osync.RefusedUnavailable, Reason: "hub store: " + err.Error()}}})
			}
			batches = nil
		}
	}
	// All acks of the group at once: waiting for each PUBACK in turn made
	// the round trip, not the store, the limit (BenchmarkFleet: 7.4k
	// records/s with 10,000 devices before).
	all := append(batches, refusals...)
	errs = make([]error, len(all))
	var wg gosync.WaitGroup
	for i, d := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := osync.EncodeAck(d.ack)
			if c.o.Key != nil {
				payload = osync.SignAck(d.ack, d.device, c.o.Key)
			}
			errs[i] = conn.Publish(ctx, osync.AckTopic(d.device), 1, false, payload)
		}()
	}
	wg.Wait()
	for i, d := range all {
		if errs[i] != nil {
			return fmt.Errorf("publish ack to %s: %w", d.device, errs[i])
		}
		c.count(&c.n.C.Acks, 1)
		if d.ack.Refused != nil {
			c.count(&c.n.C.Refused, 1)
		}
	}
	return nil
}

// store commits the batches, then builds each one's ack.
func (c *Collector) store(ctx context.Context, batches []decoded, now time.Time) error {
	bs := make([]*osync.Batch, len(batches))
	for i, d := range batches {
		bs[i] = d.batch
	}
	counts, err := c.st.Commit(ctx, bs, now)
	if err != nil {
		return err
	}
	var stored, dups int64
	for i := range batches {
		d := &batches[i]
		d.ack = ackFor(d.batch, counts[i])
		for _, bad := range d.batch.Bad {
			c.count(&c.n.C.Rejected, 1)
			c.log.Error("collector: record rejected for good (the device will drop it)", "device", d.device, "id", bad.ID.String(), "err", bad.Err)
		}
		if n := len(counts[i].Conflicts); n > 0 {
			c.count(&c.n.C.Conflicts, int64(n))
			c.log.Error("collector: records arrived whose IDs the hub holds with other bytes (a copy published by someone else first?); not acknowledged, the device keeps them",
				"device", d.device, "batch", d.batch.ID.String(), "records", n)
		}
		stored += counts[i].New
		dups += counts[i].Duplicate
	}
	c.count(&c.n.C.Batches, int64(len(batches)))
	c.count(&c.n.C.Stored, stored)
	c.count(&c.n.C.Duplicates, dups)
	if dups > 0 {
		c.log.Info("collector: duplicate records acknowledged again, not stored twice", "count", dups)
	}
	return nil
}

// ackFor names, by ID and the sum of the bytes received, what a commit
// stored (or had with the same bytes) and what can never be decoded;
// records held with other bytes, or too short to carry an ID, are left
// out under a refusal, so the device keeps them.
func ackFor(b *osync.Batch, counts Counts) *osync.Ack {
	a := &osync.Ack{Batch: b.ID, StoredSums: []osync.Sum{}, RejectedSums: []osync.Sum{}}
	for i, r := range b.Records {
		if counts.Conflicts[r.ID] {
			continue
		}
		a.Stored = append(a.Stored, r.ID)
		a.StoredSums = append(a.StoredSums, b.Sums[i])
	}
	for _, bad := range b.Bad {
		a.Rejected = append(a.Rejected, bad.ID)
		a.RejectedSums = append(a.RejectedSums, bad.Sum)
	}
	switch {
	case len(counts.Conflicts) > 0:
		a.Refused = &osync.Refusal{Code: osync.RefusedConflict,
			Reason: fmt.Sprintf("%d record(s) already stored under their IDs with other bytes", len(counts.Conflicts))}
	case b.Unnamed > 0:
		a.Refused = &osync.Refusal{Code: osync.RefusedMalformed,
			Reason: fmt.Sprintf("%d record(s) too short to carry an ID", b.Unnamed)}
	case b.NewerRecords > 0:
		a.Refused = &osync.Refusal{Code: osync.RefusedMalformed,
			Reason: fmt.Sprintf("%d record(s) of a newer record version than this hub reads: update the hub", b.NewerRecords)}
	}
	return a
}

// MaxStatusBytes bounds a status message; larger ones are refused unread.
const MaxStatusBytes = 4 << 10

func (c *Collector) recordStatus(ctx context.Context, device string, m msg, now time.Time) *osync.Status {
	if len(m.payload) > MaxStatusBytes {
		c.count(&c.n.C.Malformed, 1)
		c.log.Warn("collector: status rejected: too large", "device", device, "bytes", len(m.payload), "max", MaxStatusBytes)
		return nil
	}
	var st osync.Status
	if err := json.Unmarshal(m.payload, &st); err != nil || st.V != osync.ProtocolVersion || (st.Device != "" && st.Device != device) {
		c.count(&c.n.C.Malformed, 1)
		c.log.Warn("collector: status rejected", "device", device, "err", err, "v", st.V)
		return nil
	}
	if len(st.Version) > 64 || len(st.State) > 16 || len(st.Models) > 32 {
		c.count(&c.n.C.Malformed, 1)
		c.log.Warn("collector: status rejected: overlong field", "device", device)
		return nil
	}
	err := c.st.UpdateDevice(ctx, device, func(d *DeviceStatus) error {
		if !st.Time.IsZero() && !d.StatusTime.IsZero() && !st.Time.After(d.StatusTime) {
			// A replay (the broker's retained copy after our restart, or
			// a redelivery): already applied, and not news of the device.
			return ErrSkip
		}
		if m.retained {
			// Retained: the device said this at st.Time, not now. Its
			// clock may be off, so never later than now; no offset from it.
			if !st.Time.IsZero() && st.Time.Before(now) {
				touch(d, st.Time)
			}
		} else {
			touch(d, now)
			if !st.Time.IsZero() {
				d.ClockOffset = now.Sub(st.Time).Milliseconds()
			}
			if st.Boot != "" && st.MonoMS > 0 {
				start := now.Add(-time.Duration(st.MonoMS) * time.Millisecond).UTC().Truncate(time.Millisecond)
				if d.Boots == nil {
					d.Boots = map[string]time.Time{}
				}
				if old, ok := d.Boots[st.Boot]; !ok || start.Before(old) {
					d.Boots[st.Boot] = start
				}
				for len(d.Boots) > maxBoots { // forget the oldest boot
					oldest := ""
					for b, t := range d.Boots {
						if oldest == "" || t.Before(d.Boots[oldest]) {
							oldest = b
						}
					}
					delete(d.Boots, oldest)
				}
			}
		}
		d.State, d.Backlog, d.Version = st.State, st.Queue, st.Version
		if st.Time.After(now.Add(time.Minute)) {
			st.Time = now // a status dated 2099 froze the view of the device
		}
		d.StatusTime, d.LastSync = st.Time, st.LastSync
		d.Evicted, d.Expired, d.Refused = st.Evicted, st.Expired, st.Refused
		d.ClockJumps = st.ClockJumps
		if st.Models != nil {
			d.Models = st.Models
		}
		if st.Update != nil && (d.Update == nil || *d.Update != *st.Update) {
			if st.Update.State != osync.UpdateDownloading && st.Update.State != osync.UpdateInstalling {
				c.log.Info("collector: model update outcome", "device", device, "model", st.Update.Model,
					"version", st.Update.Version, "seq", st.Update.Seq, "state", st.Update.State, "reason", st.Update.Reason)
			}
			d.Update = st.Update
		}
		return nil
	})
	if err != nil {
		c.log.Error("collector: saving device status failed", "device", device, "err", err)
	}
	return &st
}

// offer sends a device the model package the shelf has for it, if any.
func (c *Collector) offer(ctx context.Context, conn osync.Conn, device string, st *osync.Status) {
	if c.o.Shelf == nil {
		return
	}
	o := c.o.Shelf.For(device, c.o.Registry[device].Region, st)
	if o == nil {
		return
	}
	if err := conn.Publish(ctx, osync.CmdTopic(device), 1, false, osync.EncodeOffer(o, device, c.o.Key)); err != nil {
		c.log.Warn("collector: offer not sent", "device", device, "err", err)
		return
	}
	c.count(&c.n.C.Offers, 1)
	c.log.Info("collector: offered a model update", "device", device, "model", o.Model, "version", o.Version, "seq", o.Seq, "bytes", o.Size)
}

// serveChunk answers a device's request for one chunk of a package.
func (c *Collector) serveChunk(ctx context.Context, conn osync.Conn, device string, payload []byte) {
	if c.o.Shelf == nil {
		return
	}
	id, i, err := osync.DecodeFetch(payload)
	var data []byte
	if err == nil {
		data, err = c.o.Shelf.Chunk(id, device, c.o.Registry[device].Region, i)
	}
	if err != nil {
		c.count(&c.n.C.BadFetches, 1)
		c.log.Warn("collector: chunk request refused", "device", device, "err", err)
		return
	}
	if err := conn.Publish(ctx, osync.CmdTopic(device), 1, false, osync.EncodeChunk(id, i, data)); err != nil {
		c.log.Warn("collector: chunk not sent", "device", device, "err", err)
		return
	}
	c.count(&c.n.C.Chunks, 1)
	c.count(&c.n.C.ChunkBytes, int64(len(data)))
}

// Devices lists what the hub knows about each device.
func (c *Collector) Devices() ([]DeviceStatus, error) { return c.st.Devices(context.Background()) }

// Each calls fn for every stored result, by device then ID.
func (c *Collector) Each(fn func(StoredResult) error) error {
	return c.st.Each(context.Background(), fn)
}

// Count is the number of stored results.
func (c *Collector) Count() (int, error) { return c.st.Count(context.Background()) }

// ExportJSONL writes every stored result as one JSON object per line.
func ExportJSONL(ctx context.Context, st Store, w io.Writer) (int, error) {
	devs, err := deviceMap(ctx, st)
	if err != nil {
		return 0, err
	}
	enc := json.NewEncoder(w)
	n := 0
	err = st.Each(ctx, func(s StoredResult) error {
		n++
		s.Corrected, s.Trusted = devs[s.Record.Device].CorrectedTime(s.Record)
		return enc.Encode(s)
	})
	return n, err
}

func deviceMap(ctx context.Context, st Store) (map[string]*DeviceStatus, error) {
	list, err := st.Devices(ctx)
	m := map[string]*DeviceStatus{}
	for i := range list {
		m[list[i].Device] = &list[i]
	}
	return m, err
}

// CSVCells neutralises cells a spreadsheet would run as a formula (a
// device's label "=HYPERLINK(…)"): a cell starting with = + - @ or a tab
// or carriage return gets a leading apostrophe, unless it is a plain
// number. Every CSV the hub writes goes through it.
func CSVCells(cells ...string) []string {
	for i, c := range cells {
		if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
			if _, err := strconv.ParseFloat(c, 64); err != nil {
				cells[i] = "'" + c
			}
		}
	}
	return cells
}

// CSVTime is how the CSV export writes times: UTC, to the second, ISO 8601
// without a zone designator, because that is the form LibreOffice and
// Excel read as a date (with a "Z", an offset or a fraction they keep
// text, and a program officer cannot sort or chart it). The JSONL export
// keeps full RFC 3339.
const CSVTime = "2006-01-02T15:04:05"

// CSVColumns are the CSV export's columns: who (device, its registry name
// and region), when (the device's own time, the hub's correction of it,
// and when the hub received it; UTC), the answer as flat columns (issue
// 29: the diagnosis was buried in JSON) and its expert review; the raw
// output JSON last.
var CSVColumns = []string{"id", "device", "name", "region", "created_utc", "created_corrected_utc", "time_trusted", "received_utc",
	"model", "model_version", "task", "priority", "outcome", "label", "score", "uncertain", "lang",
	"review_label", "review_advice", "review_lang", "reviewer", "reviewed_at_utc", "seq", "output"}

// ExportCSV writes stored results as CSV (CSVColumns), naming devices
// from reg.
func ExportCSV(ctx context.Context, st Store, reg Registry, w io.Writer) (int, error) {
	devs, err := deviceMap(ctx, st)
	if err != nil {
		return 0, err
	}
	// Reviews are few: one read, not one query per result.
	reviews := map[string]StoredReview{}
	if rs, err := st.Reviews(ctx, "", false); err == nil {
		for _, rv := range rs {
			reviews[rv.Device+"/"+rv.Of.String()] = rv
		}
	}
	cw := csv.NewWriter(w)
	cw.Write(CSVColumns)
	at := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(CSVTime)
	}
	n := 0
	err = st.Each(ctx, func(s StoredResult) error {
		r := s.Record
		n++
		corr, ok := devs[r.Device].CorrectedTime(r)
		var o struct {
			Outcome   string   `json:"outcome"`
			Label     string   `json:"label"`
			Score     *float64 `json:"score"`
			Uncertain bool     `json:"uncertain"`
			Lang      string   `json:"lang"`
		}
		json.Unmarshal(r.Output, &o)
		if r.Outcome != "" {
			o.Outcome = r.Outcome // what the device's task table said it means
		}
		score := ""
		if o.Score != nil {
			score = strconv.FormatFloat(*o.Score, 'f', 3, 64)
		}
		rv := reviews[r.Device+"/"+r.ID.String()]
		who := reg[r.Device]
		return cw.Write(CSVCells(r.ID.String(), r.Device, who.Name, who.Region, at(r.Created), at(corr), strconv.FormatBool(ok), at(s.Received),
			r.Model, r.Version, r.Task, r.Priority.String(), o.Outcome, o.Label, score, strconv.FormatBool(o.Uncertain), o.Lang,
			rv.Label, rv.Advice, rv.Lang, rv.Reviewer, at(rv.Time), strconv.FormatUint(r.Seq, 10), string(r.Output)))
	})
	cw.Flush()
	if err == nil {
		err = cw.Error()
	}
	return n, err
}
