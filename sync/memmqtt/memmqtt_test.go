package memmqtt

import (
	"context"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
	osync "github.com/outpost-edge/outpost/sync"
)

type inbox struct {
	mu  gosync.Mutex
	got []osync.Message
}

func (i *inbox) h(m osync.Message) { i.mu.Lock(); i.got = append(i.got, m); i.mu.Unlock() }

func (i *inbox) topics() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	var s []string
	for _, m := range i.got {
		t := m.Topic + "=" + string(m.Payload)
		if m.Retained {
			t += "(r)"
		}
		s = append(s, t)
	}
	return strings.Join(s, ",")
}

// TestBroker: what the engine relies on from a broker — wildcards, retained
// messages, a persistent session's QoS 1 messages kept while it is away,
// the Last Will on a cut (not on a clean close), scripted drops, shared
// subscriptions splitting a topic, and exact packet sizes.
func TestBroker(t *testing.T) {
	ctx := context.Background()
	b := New()
	dev, _ := b.Dialer(false)(ctx, "dev", &osync.Will{Topic: "st/dev", Payload: []byte("offline"), Retained: true})
	if err := dev.Publish(ctx, "st/dev", 1, true, []byte("online")); err != nil {
		t.Fatal(err)
	}
	var hubIn inbox
	hub, _ := b.Dialer(true)(ctx, "hub", nil)
	hub.Subscribe(ctx, "st/+", 1, hubIn.h)
	hub.Subscribe(ctx, "res/#", 1, hubIn.h)
	dev.Publish(ctx, "res/dev/a", 1, false, []byte("1"))
	testutil.Eventually(t, 5*time.Second, "retained status and a result", func() bool { return hubIn.topics() == "st/dev=online(r),res/dev/a=1" })

	// The hub goes away: QoS 1 results wait for its persistent session.
	hub.Close()
	dev.Publish(ctx, "res/dev/b", 1, false, []byte("2"))
	dev.Publish(ctx, "res/dev/c", 0, false, []byte("3")) // QoS 0: not kept
	var again inbox
	hub, _ = b.Dialer(true)(ctx, "hub", nil)
	hub.Subscribe(ctx, "res/#", 1, again.h)
	testutil.Eventually(t, 5*time.Second, "the queued QoS 1 result", func() bool { return again.topics() == "res/dev/b=2" })

	// Scripted loss, then a cut: the Will is published, retained.
	b.Fault = func(c, topic string, _ []byte) Fault {
		switch {
		case strings.HasSuffix(topic, "/lost"):
			return Drop
		case strings.HasSuffix(topic, "/cut"):
			return Cut
		}
		return Deliver
	}
	dev.Publish(ctx, "res/dev/lost", 1, false, []byte("x"))
	if err := dev.Publish(ctx, "res/dev/cut", 1, false, []byte("y")); err == nil {
		t.Fatal("a cut connection's publish must fail")
	}
	<-dev.Done()
	if string(b.Retained("st/dev")) != "offline" {
		t.Fatalf("the Will was not published: %q", b.Retained("st/dev"))
	}
	if strings.Contains(again.topics(), "lost") || strings.Contains(again.topics(), "cut") {
		t.Fatalf("dropped messages arrived: %s", again.topics())
	}

	// Shared subscriptions: each message to one member of the group.
	var a, c inbox
	m1, _ := b.Dialer(false)(ctx, "m1", nil)
	m2, _ := b.Dialer(false)(ctx, "m2", nil)
	m1.Subscribe(ctx, "$share/g/jobs/+", 1, a.h)
	m2.Subscribe(ctx, "$share/g/jobs/+", 1, c.h)
	p, _ := b.Dialer(false)(ctx, "p", nil)
	for i := 0; i < 10; i++ {
		p.Publish(ctx, "jobs/x", 1, false, []byte("j"))
	}
	testutil.Eventually(t, 5*time.Second, "10 jobs delivered once each", func() bool {
		return strings.Count(a.topics()+","+c.topics(), "jobs/x") == 10
	})

	// Sizes: PUBLISH "res/dev/a" QoS 1 with 1 byte = 1 + 1 + (2+9+2+1).
	if n := PublishSize("res/dev/a", 1, 1); n != 16 {
		t.Fatalf("PUBLISH size %d, want 16", n)
	}
	if n := PublishSize("t", 0, 200); n != 1+2+203 {
		t.Fatalf("PUBLISH with a two-byte remaining length: %d", n)
	}
	if !Match("a/+/c", "a/b/c") || Match("a/+", "a/b/c") || !Match("a/#", "a/b/c") || Match("a/b", "a") {
		t.Fatal("topic filters")
	}
}
