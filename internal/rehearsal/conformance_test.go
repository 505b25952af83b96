package rehearsal

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	gosync "sync"
	"testing"
	"time"

	osync "github.com/outpost-edge/outpost/sync"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

// capture is every message on outpost/v1/# while the rehearsal runs, as
// a monitoring login sees it on the real broker.
type capture struct {
	mu   gosync.Mutex
	msgs []osync.Message
	conn osync.Conn
}

func newCapture(t *testing.T, url, password string) *capture {
	t.Helper()
	d, err := mqtt.Dialer(mqtt.Options{Broker: url, Username: "sniffer", Password: password, CleanSession: true,
		ConnectTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{}
	if c.conn, err = d(context.Background(), "sniffer", nil); err != nil {
		t.Fatalf("the monitoring login: %v", err)
	}
	t.Cleanup(func() { c.conn.Close() })
	if err := c.conn.Subscribe(context.Background(), osync.TopicPrefix+"#", 1, func(m osync.Message) {
		c.mu.Lock()
		c.msgs = append(c.msgs, osync.Message{Topic: m.Topic, Payload: append([]byte(nil), m.Payload...)})
		c.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// conformance decodes every captured message by the table in
// docs/PROTOCOL.md — topic, then the payload's two magic bytes — and
// requires every message kind of the doc to have crossed the broker.
// A message no row describes, or one its row's decoder refuses, fails.
func (r *rehearsal) conformance() {
	t := r.t
	r.step("conformance: every message captured on the broker decodes by docs/PROTOCOL.md's tables")
	pub, err := os.ReadFile(r.path("var/lib/outpost-hub/hub.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	hk, err := osync.ParsePublicKey(strings.TrimSpace(string(pub)))
	if err != nil {
		t.Fatal(err)
	}
	keys := []ed25519.PublicKey{hk}
	type row struct {
		suffix, magic string // magic "" = the whole topic's payload kind
		kind          string
		decode        func(device string, b []byte) error
	}
	table := []row{
		{"results", "", "batch", func(dev string, b []byte) error {
			bt, err := osync.DecodeBatch(b)
			if err == nil && bt.Device != dev {
				err = fmt.Errorf("batch for %q on %q's topic", bt.Device, dev)
			}
			return err
		}},
		{"ack", "", "ack", func(_ string, b []byte) error { _, err := osync.DecodeAck(b); return err }},
		{"status", "", "status", func(dev string, b []byte) error {
			var st struct {
				V      int    `json:"v"`
				Device string `json:"device"`
				State  string `json:"state"`
				Boot   string `json:"boot"`
			}
			if err := json.Unmarshal(b, &st); err != nil {
				return err
			}
			if st.V != 1 || st.Device != dev || (st.State != "online" && st.State != "offline") || len(b) > 4096 {
				return fmt.Errorf("status %s", b)
			}
			return nil
		}},
		{"cmd", "OM", "offer", func(dev string, b []byte) error { _, err := osync.DecodeOffer(b, dev, keys); return err }},
		{"cmd", "OK", "chunk", func(_ string, b []byte) error { _, _, _, err := osync.DecodeChunk(b); return err }},
		{"cmd", "OV", "evidence ack", func(dev string, b []byte) error { _, err := osync.DecodeEvidenceAck(b, dev, keys); return err }},
		{"cmd", "OR", "review", func(dev string, b []byte) error { _, err := osync.DecodeReview(b, dev, keys); return err }},
		{"cmd", "ON", "warning", func(dev string, b []byte) error { _, err := osync.DecodeWarning(b, dev, keys); return err }},
		{"fetch", "OF", "fetch", func(_ string, b []byte) error { _, _, err := osync.DecodeFetch(b); return err }},
		{"evidence", "OE", "evidence chunk", func(_ string, b []byte) error { _, err := osync.DecodeEvidenceChunk(b); return err }},
		{"evidence", "OW", "review receipt", func(dev string, b []byte) error { _, _, err := osync.DecodeReviewReceipt(b, dev); return err }},
		{"evidence", "OY", "warning receipt", func(dev string, b []byte) error { _, _, err := osync.DecodeWarningReceipt(b, dev); return err }},
	}
	r.capture.mu.Lock()
	msgs := append([]osync.Message(nil), r.capture.msgs...)
	r.capture.mu.Unlock()
	seen := map[string]int{}
	for _, m := range msgs {
		rest, ok := strings.CutPrefix(m.Topic, osync.TopicPrefix)
		dev, suffix, ok2 := strings.Cut(rest, "/")
		if !ok || !ok2 {
			t.Errorf("a message on %q: not a topic of the doc's table", m.Topic)
			continue
		}
		var match *row
		for i := range table {
			rw := &table[i]
			if rw.suffix == suffix && (rw.magic == "" || (len(m.Payload) >= 2 && string(m.Payload[:2]) == rw.magic)) {
				match = rw
				break
			}
		}
		if match == nil {
			t.Errorf("%s: %d bytes starting %x: no row of the doc describes it", m.Topic, len(m.Payload), m.Payload[:min(4, len(m.Payload))])
			continue
		}
		if err := match.decode(dev, m.Payload); err != nil {
			t.Errorf("%s (%s, %d bytes): %v", m.Topic, match.kind, len(m.Payload), err)
			continue
		}
		seen[match.kind]++
	}
	var kinds []string
	for _, rw := range table {
		if seen[rw.kind] == 0 {
			t.Errorf("no %s crossed the broker during the rehearsal", rw.kind)
		}
		kinds = append(kinds, fmt.Sprintf("%s %d", rw.kind, seen[rw.kind]))
	}
	sort.Strings(kinds)
	t.Logf("captured %d messages, every one decoded by its row: %s", len(msgs), strings.Join(kinds, ", "))
}
