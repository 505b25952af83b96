package sync

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Conn is what the Uplink and the Collector need from an MQTT connection.
// sync/mqtt implements it with paho.
type Conn interface {
	// Publish sends and, for QoS 1, returns once the broker's PUBACK arrives.
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
	// Subscribe registers h for topic (wildcards allowed). h must not block
	// on the connection; it is called from the client's receive loop.
	Subscribe(ctx context.Context, topic string, qos byte, h func(Message)) error
	// Done is closed when the connection is lost or closed; Err says why.
	Done() <-chan struct{}
	Err() error
	Close()
}

// Message is one received MQTT message.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool // replayed by the broker from its retained store, not sent just now
}

// Will is the Last Will the broker publishes if the connection drops.
type Will struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Dialer opens one connection. Retrying is the caller's job (Backoff).
type Dialer func(ctx context.Context, clientID string, will *Will) (Conn, error)

// Backoff is capped exponential backoff with full jitter: the wait is
// uniform in [0, min(Max, Min·2^attempt)], so a hundred devices that lost
// the same broker do not all return in the same second.
type Backoff struct {
	Min, Max time.Duration
	attempt  int
}

// Next returns the next wait and advances.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = time.Second
	}
	if hi < lo {
		hi = 5 * time.Minute
	}
	ceil := lo << min(b.attempt, 30)
	if ceil > hi || ceil <= 0 {
		ceil = hi
	}
	b.attempt++
	return time.Duration(rand.Int64N(int64(ceil)) + 1)
}

// Reset after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// sleep waits d or until ctx is done.
// ProbeWait waits out a reconnect backoff, probing the broker (a cheap
// TCP connect) every Every, jittered, and returning early once a probe
// that failed succeeds: after a long outage the backoff has grown, and a
// field link may be up for a minute only. Devices and collectors share it
// (the collector waited out up to 60 s of backoff after a 7-minute outage
// while its devices were back in 2 s).
type ProbeWait struct {
	Probe   func(ctx context.Context) error // nil: plain sleep
	Every   time.Duration                   // default 10s
	Log     *slog.Logger
	sawDown bool
	wasUp   bool
}

// Connected records a successful connection: the next outage starts anew.
func (p *ProbeWait) Connected() { p.sawDown, p.wasUp = false, true }

// Wait sleeps d, or less when the broker comes back.
func (p *ProbeWait) Wait(ctx context.Context, d time.Duration) error {
	if p.Probe == nil {
		return sleep(ctx, d)
	}
	every := p.Every
	if every <= 0 {
		every = 10 * time.Second
	}
	if p.wasUp {
		// The connection we had is gone: that is the outage. A probe that
		// first runs after the broker is back must still cut the wait
		// short (the collector noticed a kill late, probed once the broker
		// had returned, and waited out its 30 s backoff).
		p.sawDown, p.wasUp = true, false
	}
	end := time.Now().Add(d)
	for {
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		// Jittered period, so a fleet that lost the same link does not
		// probe (and then connect) in lockstep.
		step := every/2 + time.Duration(rand.Int64N(int64(every)+1))
		if step >= left {
			return sleep(ctx, left)
		}
		if err := sleep(ctx, step); err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, min(5*time.Second, every))
		err := p.Probe(pctx)
		cancel()
		if err != nil {
			p.sawDown = true
			continue
		}
		if p.sawDown {
			if p.Log != nil {
				p.Log.Info("broker reachable again; reconnecting now", "skipped", time.Until(end).Round(time.Second))
			}
			return nil
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status is a device's retained status message (JSON), also its Last Will.
type Status struct {
	V        int       `json:"v"`
	Device   string    `json:"device"`
	State    string    `json:"state"` // online | offline
	Queue    int64     `json:"queue"` // records waiting in the outbox
	LastSync time.Time `json:"last_sync,omitzero"`
	Version  string    `json:"version,omitempty"`
	Time     time.Time `json:"time,omitzero"` // device clock when sent (for the Will: when it connected)
	// Totals the device lost by policy (outbox evictions and TTL expiry) or
	// could not store at all (queue full), so the hub sees them.
	Evicted int64 `json:"evicted_total"`
	Expired int64 `json:"expired_total"`
	Refused int64 `json:"refused_total"`
	// Models installed (name → package sequence number; 0 = not from a
	// package) and the latest model update: what the hub offers from.
	Models map[string]int64 `json:"models,omitempty"`
	Update *UpdateStatus    `json:"update,omitempty"`
	// The boot clock when sent (the hub anchors each boot to its own time
	// with it and corrects record times) and the wall-clock jumps the
	// device has noticed.
	Boot       string `json:"boot,omitempty"`
	MonoMS     int64  `json:"mono_ms,omitempty"`
	ClockJumps int    `json:"clock_jumps,omitempty"`
}

func (s Status) encode() []byte {
	s.V = ProtocolVersion
	b, _ := json.Marshal(s)
	return b
}
