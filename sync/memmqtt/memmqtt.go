// Package memmqtt is an in-memory MQTT broker behind sync's Conn and
// Dialer: QoS 1 messages kept for persistent sessions while their client is
// away, retained messages, Last Wills, wildcard and shared subscriptions,
// exact MQTT 3.1.1 packet sizes, and faults a test scripts (drop a message,
// cut a connection). It lets the device's uplink, the model fetcher and
// the evidence path — and a 30-day simulation on a fake clock — run
// against the real engine without a mosquitto process. Features that are
// called done are still tested against mosquitto; this is for the engine's
// own logic and for runs mosquitto cannot pace.
package memmqtt

import (
	"context"
	"errors"
	"strings"
	gosync "sync"

	osync "github.com/outpost-edge/outpost/sync"
)

// Fault is what the broker does with one published message.
type Fault int

const (
	Deliver Fault = iota // as a broker would
	Drop                 // lost on the link: the publisher is not told, nobody receives it
	Cut                  // the publisher's connection drops before the message is taken
)

// Broker is the in-memory broker. Set the hooks before the first Dial.
type Broker struct {
	// Fault decides each message's fate (nil: Deliver all).
	Fault func(client, topic string, payload []byte) Fault
	// Wire is told the bytes of every packet a client sends (up) or
	// receives (down), as MQTT 3.1.1 frames them (PUBLISH and its PUBACK),
	// with the message's topic.
	Wire func(client, topic string, up bool, bytes int)

	mu       gosync.Mutex
	sessions map[string]*session
	retained map[string][]byte
}

type sub struct {
	filter string
	group  string // $share group, "" for none
	h      func(osync.Message)
}

type session struct {
	id         string
	persistent bool
	conn       *Conn // nil while away
	subs       []sub
	queued     []osync.Message // QoS 1 messages that arrived while away
}

// New returns an empty broker.
func New() *Broker {
	return &Broker{sessions: map[string]*session{}, retained: map[string][]byte{}}
}

// ErrClosed is returned by a closed or cut connection.
var ErrClosed = errors.New("memmqtt: connection closed")

// Dialer connects clients; persistent keeps each client's subscriptions
// and queued QoS 1 messages across connections (clean session off), as the
// collector uses; devices use clean sessions.
func (b *Broker) Dialer(persistent bool) osync.Dialer {
	return func(ctx context.Context, clientID string, will *osync.Will) (osync.Conn, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		s := b.sessions[clientID]
		if s != nil && s.conn != nil {
			s.conn.dropLocked(errors.New("memmqtt: taken over by a new connection with the same client id"), true)
		}
		if s == nil || !persistent || !s.persistent {
			s = &session{id: clientID, persistent: persistent}
			b.sessions[clientID] = s
		}
		c := &Conn{b: b, s: s, will: will, done: make(chan struct{})}
		c.cond = gosync.NewCond(&c.qmu)
		s.conn = c
		go c.deliverLoop()
		return c, nil
	}
}

// Kill cuts a client's connection as a network failure would: its Will is
// published. It reports whether the client was connected.
func (b *Broker) Kill(clientID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[clientID]
	if s == nil || s.conn == nil {
		return false
	}
	s.conn.dropLocked(errors.New("memmqtt: connection cut"), true)
	return true
}

// Retained returns the retained message on topic (nil when none).
func (b *Broker) Retained(topic string) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.retained[topic]
}

// PublishSize is the bytes of an MQTT 3.1.1 PUBLISH packet.
func PublishSize(topic string, qos byte, payload int) int {
	rem := 2 + len(topic) + payload
	if qos > 0 {
		rem += 2 // packet identifier
	}
	return 1 + varintLen(rem) + rem
}

// PubackSize is the bytes of a PUBACK.
const PubackSize = 4

func varintLen(n int) int {
	l := 1
	for n >= 128 {
		n /= 128
		l++
	}
	return l
}

// Conn is one client connection.
type Conn struct {
	b    *Broker
	s    *session
	will *osync.Will

	done    chan struct{}
	errOnce gosync.Once
	err     error

	qmu    gosync.Mutex
	cond   *gosync.Cond
	queue  []delivery
	closed bool
}

type delivery struct {
	h func(osync.Message)
	m osync.Message
}

func (c *Conn) wire(topic string, up bool, n int) {
	if c.b.Wire != nil {
		c.b.Wire(c.s.id, topic, up, n)
	}
}

// Publish hands the message to the broker; for QoS 1 it returns once the
// broker has taken it (the PUBACK).
func (c *Conn) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-c.done:
		return c.Err()
	default:
	}
	if strings.ContainsAny(topic, "+#") {
		return errors.New("memmqtt: wildcards in a publish topic")
	}
	fate := Deliver
	if c.b.Fault != nil {
		fate = c.b.Fault(c.s.id, topic, payload)
	}
	switch fate {
	case Cut:
		c.b.mu.Lock()
		c.dropLocked(errors.New("memmqtt: connection cut (scripted)"), true)
		c.b.mu.Unlock()
		return c.Err()
	case Drop:
		c.wire(topic, true, PublishSize(topic, qos, len(payload)))
		return nil
	}
	c.wire(topic, true, PublishSize(topic, qos, len(payload)))
	if qos > 0 {
		c.wire(topic, false, PubackSize)
	}
	c.b.mu.Lock()
	c.b.routeLocked(topic, payload, qos, retained)
	c.b.mu.Unlock()
	return nil
}

// routeLocked delivers a message to every matching subscription (one
// member per shared group), queues it for persistent sessions away, and
// keeps it when retained.
func (b *Broker) routeLocked(topic string, payload []byte, qos byte, retained bool) {
	if retained {
		if len(payload) == 0 {
			delete(b.retained, topic)
		} else {
			b.retained[topic] = append([]byte(nil), payload...)
		}
	}
	msg := osync.Message{Topic: topic, Payload: append([]byte(nil), payload...)}
	groups := map[string]bool{}
	for _, s := range b.sessions {
		for _, su := range s.subs {
			if !Match(su.filter, topic) {
				continue
			}
			if su.group != "" {
				if groups[su.group+"\x00"+su.filter] {
					continue
				}
				groups[su.group+"\x00"+su.filter] = true
			}
			switch {
			case s.conn != nil:
				s.conn.enqueue(su.h, msg)
			case s.persistent && qos > 0:
				s.queued = append(s.queued, msg)
			}
			break // one delivery per session, however many filters match
		}
	}
}

// Subscribe registers h for filter ($share/GROUP/filter for a shared
// subscription); retained messages that match, and messages queued for a
// persistent session while it was away, follow at once.
func (c *Conn) Subscribe(ctx context.Context, filter string, qos byte, h func(osync.Message)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	group := ""
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		g, f, ok := strings.Cut(rest, "/")
		if !ok || g == "" || f == "" {
			return errors.New("memmqtt: bad shared subscription " + filter)
		}
		group, filter = g, f
	}
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	select {
	case <-c.done:
		return c.Err()
	default:
	}
	replaced := false
	for i := range c.s.subs {
		if c.s.subs[i].filter == filter {
			c.s.subs[i] = sub{filter, group, h}
			replaced = true
		}
	}
	if !replaced {
		c.s.subs = append(c.s.subs, sub{filter, group, h})
	}
	for t, p := range c.b.retained {
		if Match(filter, t) {
			c.enqueue(h, osync.Message{Topic: t, Payload: append([]byte(nil), p...), Retained: true})
		}
	}
	kept := c.s.queued[:0]
	for _, m := range c.s.queued {
		if Match(filter, m.Topic) {
			c.enqueue(h, m)
		} else {
			kept = append(kept, m)
		}
	}
	c.s.queued = kept
	return nil
}

func (c *Conn) enqueue(h func(osync.Message), m osync.Message) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closed {
		return
	}
	c.queue = append(c.queue, delivery{h, m})
	c.cond.Signal()
}

// deliverLoop calls handlers one message at a time, in order, off the
// publisher's goroutine (as a client's receive loop does).
func (c *Conn) deliverLoop() {
	for {
		c.qmu.Lock()
		for len(c.queue) == 0 && !c.closed {
			c.cond.Wait()
		}
		if c.closed {
			c.qmu.Unlock()
			return
		}
		d := c.queue[0]
		c.queue = c.queue[1:]
		c.qmu.Unlock()
		c.wire(d.m.Topic, false, PublishSize(d.m.Topic, 1, len(d.m.Payload)))
		c.wire(d.m.Topic, true, PubackSize)
		d.h(d.m)
	}
}

// dropLocked ends the connection; with will, its Last Will is published.
// A clean session forgets its subscriptions.
func (c *Conn) dropLocked(err error, will bool) {
	select {
	case <-c.done:
		return
	default:
	}
	c.errOnce.Do(func() { c.err = err })
	close(c.done)
	c.qmu.Lock()
	c.closed = true
	c.queue = nil
	c.cond.Broadcast()
	c.qmu.Unlock()
	if c.s.conn == c {
		c.s.conn = nil
		if !c.s.persistent {
			c.s.subs = nil
			delete(c.b.sessions, c.s.id)
		}
	}
	if will && c.will != nil {
		c.b.routeLocked(c.will.Topic, c.will.Payload, 1, c.will.Retained)
	}
}

// Done is closed when the connection ends.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the connection ended.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		if c.err != nil {
			return c.err
		}
		return ErrClosed
	default:
		return nil
	}
}

// Close disconnects cleanly (no Will).
func (c *Conn) Close() {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.dropLocked(ErrClosed, false)
}

// Match reports whether an MQTT topic filter (+ and # wildcards) matches
// a topic.
func Match(filter, topic string) bool {
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, p := range f {
		if p == "#" {
			return true
		}
		if i >= len(t) || p != "+" && p != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}
