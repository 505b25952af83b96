package hub_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

func dialer(t *testing.T, url string, clean bool) osync.Dialer { return testutil.Dialer(t, url, clean) }

func startCollector(t *testing.T, path, url string) *testutil.Hub {
	return testutil.StartCollector(t, path, url)
}

// TestCollector_Malformed: garbage on the results and status topics is
// counted and logged; the collector keeps running and stores good batches.
func TestCollector_Malformed(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	h := startCollector(t, filepath.Join(t.TempDir(), "hub.db"), broker.URL()) // returns once subscribed
	conn, err := dialer(t, broker.URL(), true)(context.Background(), "vandal", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	good := osync.EncodeBatch(&osync.Batch{ID: outbox.NewIDGen().New(), Device: "pi-x", Sent: time.Now(),
		Records: []*outbox.Record{{ID: outbox.NewIDGen().New(), Device: "pi-x", Output: []byte(`{}`)}}})
	for _, m := range []struct {
		topic   string
		payload []byte
	}{
		{osync.ResultsTopic("pi-x"), []byte("random bytes, not a batch")},
		{osync.ResultsTopic("pi-x"), append([]byte{'O', 'B', 9, 0}, good[4:]...)}, // future version
		{osync.ResultsTopic("pi-x"), good[:len(good)-3]},                          // truncated
		{osync.ResultsTopic("pi-y"), good},                                        // device/topic mismatch
		{osync.StatusTopic("pi-x"), []byte("{not json")},
		{osync.ResultsTopic("pi-x"), good}, // and a good one after all that
	} {
		if err := conn.Publish(ctx, m.topic, 1, false, m.payload); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "the good batch was not stored", func() bool { return h.C.Stats().Stored >= 1 })
	st := h.C.Stats()
	if st.Stored != 1 || st.Malformed != 5 {
		t.Fatalf("collector stats %+v, want 1 stored and 5 malformed", st)
	}
}

// TestCollector_PoisonRecord: a batch with one undecodable record stores the
// good ones and names the bad one as rejected, so the device can drop it
// instead of resending the batch forever.
func TestCollector_PoisonRecord(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	h := startCollector(t, filepath.Join(t.TempDir(), "hub.db"), broker.URL()) // returns once subscribed
	conn, err := dialer(t, broker.URL(), true)(context.Background(), "pi-p", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	acks := make(chan []byte, 1)
	if err := conn.Subscribe(context.Background(), osync.AckTopic("pi-p"), 1, func(m osync.Message) { acks <- append([]byte(nil), m.Payload...) }); err != nil {
		t.Fatal(err)
	}
	g := outbox.NewIDGen()
	good := &outbox.Record{ID: g.New(), Device: "pi-p", Output: []byte(`{"ok":1}`)}
	poison := &outbox.Record{ID: g.New(), Device: "pi-p", Priority: 9} // no decoder accepts priority 9
	msg := osync.EncodeBatch(&osync.Batch{ID: g.New(), Device: "pi-p", Sent: time.Now(), Records: []*outbox.Record{good, poison}})
	if err := conn.Publish(context.Background(), osync.ResultsTopic("pi-p"), 1, false, msg); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-acks:
		a, err := osync.DecodeAck(m)
		if err != nil || len(a.Stored) != 1 || a.Stored[0] != good.ID || len(a.Rejected) != 1 || a.Rejected[0] != poison.ID {
			t.Fatalf("ack %+v, %v", a, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no ack")
	}
	if st := h.C.Stats(); st.Stored != 1 || st.Rejected != 1 {
		t.Fatalf("collector stats %+v", st)
	}
}

// TestCollector_RefusesByName: a record too short to carry an ID no longer
// drops its whole batch (the good records are stored), and a batch the
// collector cannot decode at all is refused by batch ID, not ignored.
func TestCollector_RefusesByName(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	h := startCollector(t, filepath.Join(t.TempDir(), "hub.db"), broker.URL())
	conn, err := dialer(t, broker.URL(), true)(context.Background(), "pi-q", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	acks := make(chan []byte, 4)
	if err := conn.Subscribe(context.Background(), osync.AckTopic("pi-q"), 1, func(m osync.Message) { acks <- append([]byte(nil), m.Payload...) }); err != nil {
		t.Fatal(err)
	}
	g := outbox.NewIDGen()
	good := &outbox.Record{ID: g.New(), Device: "pi-q", Output: []byte(`{"ok":1}`)}
	shortOne := rawBatch(g.New(), "pi-q", good.Encode(nil), []byte{1, 2, 3})
	truncated := rawBatch(g.New(), "pi-q", good.Encode(nil))
	truncated = truncated[:len(truncated)-5]
	next := func() *osync.Ack {
		t.Helper()
		select {
		case m := <-acks:
			a, err := osync.DecodeAck(m)
			if err != nil {
				t.Fatal(err)
			}
			return a
		case <-time.After(5 * time.Second):
			t.Fatal("no ack")
		}
		return nil
	}
	if err := conn.Publish(context.Background(), osync.ResultsTopic("pi-q"), 1, false, shortOne); err != nil {
		t.Fatal(err)
	}
	a := next()
	if len(a.Stored) != 1 || a.Stored[0] != good.ID || a.Refused == nil || a.Refused.Code != osync.RefusedMalformed {
		t.Fatalf("ack for a batch with an ID-less record: %+v (refused %+v)", a, a.Refused)
	}
	if err := conn.Publish(context.Background(), osync.ResultsTopic("pi-q"), 1, false, truncated); err != nil {
		t.Fatal(err)
	}
	a = next()
	if id, _ := osync.BatchID(truncated); a.Batch != id || len(a.Stored) != 0 || a.Refused == nil {
		t.Fatalf("ack for a truncated batch: %+v", a)
	}
	testutil.Eventually(t, 2*time.Second, "two refusals counted", func() bool { return h.C.Stats().Refused >= 2 })
	if st := h.C.Stats(); st.Stored != 1 || st.Refused != 2 {
		t.Fatalf("collector stats %+v", st)
	}
}

// TestCollector_StatusReplay: a retained status replayed by the broker is
// not news of the device — last-seen is the time the device sent it, no
// clock offset is derived from it, and a collector restart changes nothing.
// Oversized statuses are refused.
func TestCollector_StatusReplay(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	conn, err := dialer(t, broker.URL(), true)(context.Background(), "pi-r", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sent := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	st := fmt.Sprintf(`{"v":1,"device":"pi-r","state":"offline","queue":5,"time":%q,"refused_total":3,"evicted_total":2,"expired_total":1}`, sent.Format(time.RFC3339Nano))
	if err := conn.Publish(context.Background(), osync.StatusTopic("pi-r"), 1, true, []byte(st)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hub.db")
	device := func(h *testutil.Hub) hub.DeviceStatus {
		t.Helper()
		var devs []hub.DeviceStatus
		testutil.Eventually(t, 5*time.Second, "the collector to record pi-r", func() bool { devs, _ = h.C.Devices(); return len(devs) == 1 })
		return devs[0]
	}
	h := startCollector(t, path, broker.URL())
	d := device(h)
	if !d.LastSeen.Equal(sent) || d.ClockOffset != 0 || d.Backlog != 5 || d.State != "offline" || d.Refused != 3 || d.Evicted != 2 || d.Expired != 1 {
		t.Fatalf("after a retained status: %+v (want last seen %s, no offset)", d, sent)
	}
	h.Stop()
	h = startCollector(t, path, broker.URL())
	time.Sleep(300 * time.Millisecond) // the broker replays the retained status to the new collector meanwhile: nothing may change
	if d2 := device(h); !d2.LastSeen.Equal(sent) {
		t.Fatalf("restart moved last seen from %s to %s", sent, d2.LastSeen)
	}
	big := fmt.Sprintf(`{"v":1,"device":"pi-r","state":"online","queue":1,"version":%q}`, strings.Repeat("x", 20<<10))
	if err := conn.Publish(context.Background(), osync.StatusTopic("pi-r"), 1, false, []byte(big)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 3*time.Second, "the oversized status refused", func() bool { return h.C.Stats().Malformed > 0 })
	if d3 := device(h); h.C.Stats().Malformed != 1 || d3.State != "offline" {
		t.Fatalf("oversized status: malformed %d, device %+v", h.C.Stats().Malformed, d3)
	}
}

// TestCollector_ClientID: each hub database gets its own unguessable MQTT
// client id, kept across restarts (the persistent session), and a second
// process gets ErrLocked with a hint instead of a bare lock timeout.
func TestCollector_ClientID(t *testing.T) {
	dir := t.TempDir()
	a, err := hub.Open(filepath.Join(dir, "a.db"), hub.CollectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := hub.Open(filepath.Join(dir, "b.db"), hub.CollectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	idA, idB := a.ClientID(), b.ClientID()
	b.Close()
	if idA == idB || idA == "outpost-collector" || !strings.HasPrefix(idA, "outpost-collector-") || len(idA) != len("outpost-collector-")+12 {
		t.Fatalf("client ids %q and %q", idA, idB)
	}
	if _, err := hub.Open(filepath.Join(dir, "a.db"), hub.CollectorOptions{}); !errors.Is(err, hub.ErrLocked) || !strings.Contains(err.Error(), "running 'outpost collect'") {
		t.Fatalf("second open while held: %v", err)
	}
	a.Close()
	a2, err := hub.Open(filepath.Join(dir, "a.db"), hub.CollectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	if a2.ClientID() != idA {
		t.Fatalf("client id changed across restart: %q → %q", idA, a2.ClientID())
	}
}

// rawBatch frames records by hand (uncompressed), so a test can put in
// what EncodeBatch never would.
func rawBatch(id outbox.ID, device string, recs ...[]byte) []byte {
	out := []byte{'O', 'B', osync.ProtocolVersion, 0}
	out = append(out, id[:]...)
	out = binary.AppendUvarint(out, uint64(len(device)))
	out = append(out, device...)
	out = binary.AppendVarint(out, time.Now().UnixMilli())
	out = binary.AppendUvarint(out, uint64(len(recs)))
	for _, r := range recs {
		out = binary.AppendUvarint(out, uint64(len(r)))
		out = append(out, r...)
	}
	return out
}

// TestCollector_FloodDoesNotStarveOthers: one device's 400 batches and
// then another device's one reach the collector together. It takes at
// most 8 messages per device per commit, so the quiet device's ack comes
// back while most of the flood still waits — not after all of it (without
// the per-device share it came last: 0 flood acks after it).
func TestCollector_FloodDoesNotStarveOthers(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	// The collector behind a proxy: stalled while the flood and then the
	// quiet batch are published, so all of them wait for it at once.
	proxy := testutil.StartProxy(t, broker.Addr())
	h := testutil.StartCollector(t, filepath.Join(t.TempDir(), "hub.db"), proxy.URL())
	ctx := context.Background()
	obs, err := testutil.Dialer(t, broker.URL(), true)(ctx, "observer", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	var mu gosync.Mutex
	var order []string
	for _, dev := range []string{"flood", "quiet"} {
		dev := dev
		if err := obs.Subscribe(ctx, osync.AckTopic(dev), 1, func(osync.Message) {
			mu.Lock()
			order = append(order, dev)
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	g := outbox.NewIDGen()
	batch := func(dev string) []byte {
		return osync.EncodeBatch(&osync.Batch{ID: g.New(), Device: dev, Sent: time.Now(),
			Records: []*outbox.Record{{ID: g.New(), Device: dev, Model: "m", Version: "1", Task: "t", Output: []byte(`{}`)}}})
	}
	flood, err := testutil.Dialer(t, broker.URL(), true)(ctx, "flood", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	quiet, err := testutil.Dialer(t, broker.URL(), true)(ctx, "quiet", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	const n = 400
	proxy.Stall(true)
	for i := 0; i < n; i++ {
		if err := flood.Publish(ctx, osync.ResultsTopic("flood"), 1, false, batch("flood")); err != nil {
			t.Fatal(err)
		}
	}
	if err := quiet.Publish(ctx, osync.ResultsTopic("quiet"), 1, false, batch("quiet")); err != nil {
		t.Fatal(err)
	}
	proxy.Stall(false)
	testutil.Eventually(t, 60*time.Second, "every ack", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == n+1 })
	mu.Lock()
	defer mu.Unlock()
	pos := -1
	for i, d := range order {
		if d == "quiet" {
			pos = i
		}
	}
	if len(order) != n+1 || pos < 0 {
		t.Fatalf("%d acks (want %d), quiet device's at %d", len(order), n+1, pos)
	}
	after := n - pos
	t.Logf("quiet device's ack was number %d of %d (%d flood acks after it); collector %+v", pos+1, n+1, after, h.C.Stats())
	if after < 50 {
		t.Errorf("the quiet device waited behind the flood: only %d of its %d batches were acked after it", after, n)
	}
}

// TestCollector_BadEvidence: evidence larger than the hub takes, bytes
// that are not a photo or a recording, and a whole whose SHA-256 differs
// from the record's are each refused by name (the device drops them), counted,
// and leave nothing stored; a good upload next to them is stored.
func TestCollector_BadEvidence(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	blight, _ := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples", "blight.jpg"))
	// A daily quota of two photos and a little (issue 25: one client stored 80 MiB of junk in 16 s).
	h := testutil.StartCollectorWith(t, filepath.Join(t.TempDir(), "hub.db"), broker.URL(), hub.CollectorOptions{EvidenceDaily: int64(2*len(blight) + 1000)})
	conn, err := dialer(t, broker.URL(), true)(context.Background(), "pi-e", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	acks := make(chan []byte, 8)
	if err := conn.Subscribe(context.Background(), osync.CmdTopic("pi-e"), 1, func(m osync.Message) { acks <- append([]byte(nil), m.Payload...) }); err != nil {
		t.Fatal(err)
	}
	photo, _ := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples", "blight.jpg"))
	g := outbox.NewIDGen()
	send := func(c *osync.EvidenceChunk, raw []byte) *osync.EvidenceAck {
		t.Helper()
		msg := raw
		if c != nil {
			msg = osync.EncodeEvidenceChunk(c)
		}
		if err := conn.Publish(context.Background(), osync.EvidenceTopic("pi-e"), 1, false, msg); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-acks:
			a, err := osync.DecodeEvidenceAck(m, "pi-e", nil)
			if err != nil {
				t.Fatal(err)
			}
			return a
		case <-time.After(5 * time.Second):
			t.Fatal("no evidence ack")
		}
		return nil
	}
	sum := sha256.Sum256(photo)
	whole := func(id outbox.ID, data []byte, digest [32]byte) *osync.EvidenceChunk {
		return &osync.EvidenceChunk{ID: id, Of: g.New(), Size: int64(len(data)), SHA256: digest, ContentType: "image/jpeg", Data: data}
	}
	// Oversize: the encoder would not write it, so build it by hand.
	big := osync.EncodeEvidenceChunk(whole(g.New(), photo[:100], sum))
	huge := append(append([]byte(nil), big[:68]...), binary.AppendUvarint(nil, 64<<20)...)
	huge = append(append(huge, 0), big[68+2:]...)
	bigID, _ := osync.EvidenceID(huge)
	if a := send(nil, huge); a.State != osync.EvidenceRefused || a.ID != bigID {
		t.Fatalf("oversize evidence: %+v", a)
	}
	if a := send(whole(g.New(), []byte("MZ\x90\x00 this is a windows program, not a photo"), sum), nil); a.State != osync.EvidenceRefused {
		t.Fatalf("non-image evidence: %+v", a)
	}
	var wrong [32]byte
	// A whole that does not match its digest is not stored and starts over
	// (not refused: a stranger's chunk must not make the device drop its photo).
	if a := send(whole(g.New(), photo, wrong), nil); a.State != osync.EvidencePartial || a.Have != 0 {
		t.Fatalf("digest mismatch: %+v", a)
	}
	good := g.New()
	if a := send(whole(good, photo, sum), nil); a.State != osync.EvidenceStored || a.Have != int64(len(photo)) {
		t.Fatalf("good evidence: %+v", a)
	}
	if l, _ := h.C.Store().EvidenceList(context.Background()); len(l) != 1 || l[0].ID != good {
		t.Fatalf("stored evidence: %+v", l)
	}
	if st := h.C.Stats(); st.EvRefused != 2 || st.Evidence != 1 {
		t.Fatalf("collector stats: %+v", st)
	}
	// Over the device's daily quota: nothing stored, told what the hub has, not refused.
	if a := send(whole(g.New(), photo, sum), nil); a.State != osync.EvidencePartial || a.Have != 0 || h.C.Stats().EvThrottled != 1 {
		t.Fatalf("a photo past the daily quota: %+v, stats %+v", a, h.C.Stats())
	}
}

// slowStore holds each Commit until another one is in flight too (or a
// deadline passes), and records how many ran at once.
type slowStore struct {
	hub.Store
	mu        gosync.Mutex
	in, most  int
	overlap   chan struct{}
	closeOnce gosync.Once
}

func (s *slowStore) Commit(ctx context.Context, bs []*osync.Batch, now time.Time) ([]hub.Counts, error) {
	s.mu.Lock()
	s.in++
	s.most = max(s.most, s.in)
	if s.in >= 2 {
		s.closeOnce.Do(func() { close(s.overlap) })
	}
	s.mu.Unlock()
	select {
	case <-s.overlap:
	case <-time.After(3 * time.Second):
	}
	defer func() { s.mu.Lock(); s.in--; s.mu.Unlock() }()
	return s.Store.Commit(ctx, bs, now)
}

// TestCollector_CommitsInFlight: while one group waits on the store, the
// collector reads and commits the next (issue 31: one group at a time made
// the round trip, not the store, the hub's pace); every batch is still
// acked only after its own commit, and nothing is stored twice.
func TestCollector_CommitsInFlight(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	bolt, err := hub.OpenBolt(filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	st := &slowStore{Store: bolt, overlap: make(chan struct{})}
	c, err := hub.New(st, hub.CollectorOptions{Logger: testutil.Logger(t), Commits: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx, dialer(t, broker.URL(), false))
	<-c.Ready()
	g := outbox.NewIDGen()
	acked := make(chan outbox.ID, 400)
	const devices, perDevice = 40, 3
	for d := range devices {
		name := fmt.Sprintf("pi-%02d", d)
		conn, err := dialer(t, broker.URL(), true)(ctx, name, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.Subscribe(ctx, osync.AckTopic(name), 1, func(m osync.Message) {
			if a, err := osync.DecodeAck(m.Payload); err == nil && a.Refused == nil {
				acked <- a.Batch
			}
		}); err != nil {
			t.Fatal(err)
		}
		for range perDevice {
			b := &osync.Batch{ID: g.New(), Device: name, Sent: time.Now(),
				Records: []*outbox.Record{{ID: g.New(), Device: name, Model: "m", Output: []byte(`{}`)}}}
			if err := conn.Publish(ctx, osync.ResultsTopic(name), 1, false, osync.EncodeBatch(b)); err != nil {
				t.Fatal(err)
			}
		}
	}
	seen := map[outbox.ID]bool{}
	testutil.Eventually(t, 20*time.Second, "every batch acked", func() bool {
		for {
			select {
			case id := <-acked:
				seen[id] = true
			default:
				return len(seen) == devices*perDevice
			}
		}
	})
	st.mu.Lock()
	most := st.most
	st.mu.Unlock()
	if n, _ := bolt.Count(ctx); most < 2 || n != devices*perDevice {
		t.Fatalf("at most %d commits in flight, %d records stored; want ≥ 2 at once and %d stored", most, n, devices*perDevice)
	}
}
