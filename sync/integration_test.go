package sync_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

func logger(t *testing.T) *slog.Logger {
	if os.Getenv("OUTPOST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func dialer(t *testing.T, url string, clean bool) osync.Dialer {
	d, err := mqtt.Dialer(mqtt.Options{Broker: url, CleanSession: clean, ConnectTimeout: 2 * time.Second, WriteTimeout: 3 * time.Second, KeepAlive: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// device is an outbox full of n records plus an uplink to url.
func device(t *testing.T, name, url string, n int, o osync.UplinkOptions) (*outbox.Outbox, *osync.Uplink) {
	t.Helper()
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close() })
	for i := 0; i < n; i++ {
		r := &outbox.Record{Device: name, Model: "silero-vad", Version: "5.0.0", Task: "vad",
			Priority: outbox.Priority(i % 3), Output: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		if _, err := ob.Append(context.Background(), r, nil); err != nil {
			t.Fatal(err)
		}
	}
	o.Device, o.Logger = name, logger(t)
	if o.AckTimeout == 0 {
		o.AckTimeout = 2 * time.Second
	}
	o.MinBackoff, o.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	u, err := osync.NewUplink(ob, dialer(t, url, true), o)
	if err != nil {
		t.Fatal(err)
	}
	return ob, u
}

type hub struct {
	c      *osync.Collector
	path   string
	cancel context.CancelFunc
	done   chan error
}

func startCollector(t *testing.T, path, url string) *hub {
	t.Helper()
	c, err := osync.OpenCollector(path, osync.CollectorOptions{Logger: logger(t), MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &hub{c: c, path: path, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- c.Run(ctx, dialer(t, url, false)) }()
	t.Cleanup(h.stop)
	select {
	case <-c.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("collector did not subscribe")
	}
	return h
}

func (h *hub) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.c.Close()
	h.cancel = nil
}

// checkExactlyOnce: every record the device appended is in the collector's
// store exactly once (the store is keyed by ID; payloads are compared too)
// and the device's outbox is empty.
func checkExactlyOnce(t *testing.T, h *hub, obs map[string]*outbox.Outbox, perDevice int) {
	t.Helper()
	seen := map[string]int{}
	err := h.c.Each(func(s osync.StoredResult) error {
		seen[s.Record.Device+"/"+string(s.Record.Output)]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	missing, dup := 0, 0
	for name, ob := range obs {
		for i := 0; i < perDevice; i++ {
			switch seen[fmt.Sprintf(`%s/{"n":%d}`, name, i)] {
			case 0:
				missing++
			case 1:
			default:
				dup++
			}
		}
		if st, _ := ob.Stats(); st.Count != 0 {
			t.Errorf("device %s outbox still holds %d records", name, st.Count)
		}
	}
	if missing != 0 || dup != 0 || len(seen) != perDevice*len(obs) {
		t.Fatalf("collector store: %d missing, %d stored twice, %d distinct (want %d)", missing, dup, len(seen), perDevice*len(obs))
	}
}

func TestSync_DrainExactlyOnce(t *testing.T) {
	before := goruntime.NumGoroutine()
	broker := testutil.StartMosquitto(t, false)
	h := startCollector(t, filepath.Join(t.TempDir(), "hub.db"), broker.URL())
	obs := map[string]*outbox.Outbox{}
	ups := map[string]*osync.Uplink{}
	for _, name := range []string{"kiosk-1", "pi-field-2", "pi-field-3"} {
		obs[name], ups[name] = device(t, name, broker.URL(), 1500, osync.UplinkOptions{BatchRecords: 200})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make(chan error, len(ups))
	for _, u := range ups {
		go func(u *osync.Uplink) { errs <- u.Drain(ctx) }(u)
	}
	for range ups {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	checkExactlyOnce(t, h, obs, 1500)
	st := ups["kiosk-1"].Stats()
	t.Logf("kiosk-1: %d batches, %d records, %d wire bytes (%.1f B/record)", st.Batches, st.Records, st.WireBytes, float64(st.WireBytes)/float64(st.Records))
	// Status: the collector knows each device, its backlog (0), that a
	// one-shot drain ended (offline, not "online" forever) and its last sync.
	time.Sleep(200 * time.Millisecond)
	devs, _ := h.c.Devices()
	if len(devs) != 3 {
		t.Fatalf("devices %+v", devs)
	}
	for _, d := range devs {
		if d.Stored != 1500 || d.State != "offline" || d.LastSync.IsZero() || d.Backlog != 0 {
			t.Errorf("device status %+v", d)
		}
	}
	h.stop()
	for _, ob := range obs {
		ob.Close()
	}
	broker.Kill()
	waitGoroutines(t, before)
}

// waitGoroutines fails if goroutines started by the test outlive it.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if goruntime.NumGoroutine() <= before+2 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	n := goruntime.Stack(buf, true)
	t.Fatalf("goroutine leak: %d before, %d after\n%s", before, goruntime.NumGoroutine(), buf[:n])
}

// TestCollector_Malformed: garbage on the results and status topics is
// counted and logged; the collector keeps running and stores good batches.
func TestCollector_Malformed(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	h := startCollector(t, filepath.Join(t.TempDir(), "hub.db"), broker.URL())
	time.Sleep(200 * time.Millisecond) // let it subscribe
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
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && h.c.Stats().Stored < 1 {
		time.Sleep(20 * time.Millisecond)
	}
	st := h.c.Stats()
	if st.Stored != 1 || st.Malformed != 5 {
		t.Fatalf("collector stats %+v, want 1 stored and 5 malformed", st)
	}
}

// TestCollector_PoisonRecord: a batch with one undecodable record stores the
// good ones and names the bad one as rejected, so the device can drop it
// instead of resending the batch forever.
func TestCollector_PoisonRecord(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	h := startCollector(t, filepath.Join(t.TempDir(), "hub.db"), broker.URL())
	time.Sleep(200 * time.Millisecond)
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
	if st := h.c.Stats(); st.Stored != 1 || st.Rejected != 1 {
		t.Fatalf("collector stats %+v", st)
	}
}

// TestUplink_StrayAck: an ack for a batch the device never sent — anyone
// allowed to publish on the ack topic can forge one from IDs seen on the
// results topic — must not delete anything, nor count as synced.
func TestUplink_StrayAck(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	ob, up := device(t, "pi-stray", broker.URL(), 3, osync.UplinkOptions{BatchRecords: 2})
	recs, err := ob.Lease(10, 0)
	if err != nil || len(recs) != 3 {
		t.Fatalf("lease: %d, %v", len(recs), err)
	}
	var ids []outbox.ID
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	ob.Release(ids)
	vandal, err := dialer(t, broker.URL(), true)(context.Background(), "vandal", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer vandal.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	go func() {
		g := outbox.NewIDGen()
		for ctx.Err() == nil {
			forged := osync.EncodeAck(&osync.Ack{Batch: g.New(), Stored: ids})
			_ = vandal.Publish(ctx, osync.AckTopic("pi-stray"), 1, false, forged)
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if err := up.Drain(ctx); err == nil {
		t.Fatal("Drain returned nil with no collector")
	}
	st := up.Stats()
	if n, _ := ob.Stats(); n.Count != 3 {
		t.Fatalf("outbox holds %d records after forged acks, want 3", n.Count)
	}
	if st.Records != 0 || st.Batches != 0 || st.StrayAcks == 0 {
		t.Fatalf("stats %+v: want 0 records, 0 batches synced and stray acks counted", st)
	}
}

// TestUplink_RefusedBatchBacksOff: a hub that refuses a batch makes the
// device keep its records and resend them after a growing backoff, not on
// every ack timeout.
func TestUplink_RefusedBatchBacksOff(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	ob, up := device(t, "pi-refused", broker.URL(), 2, osync.UplinkOptions{AckTimeout: 500 * time.Millisecond})
	hubConn, err := dialer(t, broker.URL(), true)(context.Background(), "refusing-hub", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hubConn.Close()
	var (
		mu    gosync.Mutex
		sends []time.Time
	)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	err = hubConn.Subscribe(ctx, osync.ResultsTopic("pi-refused"), 1, func(m osync.Message) {
		id, ok := osync.BatchID(m.Payload)
		if !ok {
			return
		}
		mu.Lock()
		sends = append(sends, time.Now())
		mu.Unlock()
		go hubConn.Publish(ctx, osync.AckTopic("pi-refused"), 1, false,
			osync.EncodeAck(&osync.Ack{Batch: id, Refused: &osync.Refusal{Code: osync.RefusedUnavailable, Reason: "disk full"}}))
	})
	if err != nil {
		t.Fatal(err)
	}
	go up.Run(ctx)
	<-ctx.Done()
	mu.Lock()
	defer mu.Unlock()
	// Without backoff: a resend every ack timeout, about 8 in 4 s. With it:
	// 0.25–0.5 s, then 0.5–1 s, then 1–2 s between sends.
	if len(sends) < 2 || len(sends) > 5 {
		t.Fatalf("%d sends in 4 s, want 2–5 (a backoff that grows per refusal)", len(sends))
	}
	if n, _ := ob.Stats(); n.Count != 2 {
		t.Fatalf("outbox holds %d records after refusals, want 2 (kept)", n.Count)
	}
	if st := up.Stats(); st.Refused == 0 || st.Records != 0 || st.Rejected != 0 {
		t.Fatalf("stats %+v", st)
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
	deadline := time.Now().Add(2 * time.Second)
	for h.c.Stats().Refused < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := h.c.Stats(); st.Stored != 1 || st.Refused != 2 {
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
	device := func(h *hub) osync.DeviceStatus {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			devs, _ := h.c.Devices()
			if len(devs) == 1 {
				return devs[0]
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("collector never recorded pi-r")
		return osync.DeviceStatus{}
	}
	h := startCollector(t, path, broker.URL())
	d := device(h)
	if !d.LastSeen.Equal(sent) || d.ClockOffset != 0 || d.Backlog != 5 || d.State != "offline" || d.Refused != 3 || d.Evicted != 2 || d.Expired != 1 {
		t.Fatalf("after a retained status: %+v (want last seen %s, no offset)", d, sent)
	}
	h.stop()
	h = startCollector(t, path, broker.URL())
	time.Sleep(300 * time.Millisecond)
	if d2 := device(h); !d2.LastSeen.Equal(sent) {
		t.Fatalf("restart moved last seen from %s to %s", sent, d2.LastSeen)
	}
	big := fmt.Sprintf(`{"v":1,"device":"pi-r","state":"online","queue":1,"version":%q}`, strings.Repeat("x", 20<<10))
	if err := conn.Publish(context.Background(), osync.StatusTopic("pi-r"), 1, false, []byte(big)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for h.c.Stats().Malformed == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if d3 := device(h); h.c.Stats().Malformed != 1 || d3.State != "offline" {
		t.Fatalf("oversized status: malformed %d, device %+v", h.c.Stats().Malformed, d3)
	}
}

// TestUplink_WillCarriesQueue: the Last Will is what the hub shows when a
// device vanishes, so it must carry the queue, last sync and a time.
func TestUplink_WillCarriesQueue(t *testing.T) {
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	for i := 0; i < 7; i++ {
		if _, err := ob.Append(context.Background(), &outbox.Record{Device: "pi-w", Output: []byte(`{}`)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	wills := make(chan *osync.Will, 1)
	dial := func(ctx context.Context, id string, w *osync.Will) (osync.Conn, error) {
		select {
		case wills <- w:
		default:
		}
		return nil, fmt.Errorf("no network")
	}
	up, err := osync.NewUplink(ob, dial, osync.UplinkOptions{Device: "pi-w", MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	up.Run(ctx)
	w := <-wills
	var s osync.Status
	if err := json.Unmarshal(w.Payload, &s); err != nil || s.State != "offline" || s.Queue != 7 || s.Time.IsZero() || !w.Retained {
		t.Fatalf("will %s: %+v, %v", w.Payload, s, err)
	}
}

// TestCollector_ClientID: each hub database gets its own unguessable MQTT
// client id, kept across restarts (the persistent session), and a second
// process gets ErrLocked with a hint instead of a bare lock timeout.
func TestCollector_ClientID(t *testing.T) {
	dir := t.TempDir()
	a, err := osync.OpenCollector(filepath.Join(dir, "a.db"), osync.CollectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := osync.OpenCollector(filepath.Join(dir, "b.db"), osync.CollectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	idA, idB := a.ClientID(), b.ClientID()
	b.Close()
	if idA == idB || idA == "outpost-collector" || !strings.HasPrefix(idA, "outpost-collector-") || len(idA) != len("outpost-collector-")+12 {
		t.Fatalf("client ids %q and %q", idA, idB)
	}
	if _, err := osync.OpenCollector(filepath.Join(dir, "a.db"), osync.CollectorOptions{}); !errors.Is(err, osync.ErrLocked) || !strings.Contains(err.Error(), "running 'outpost collect'") {
		t.Fatalf("second open while held: %v", err)
	}
	a.Close()
	a2, err := osync.OpenCollector(filepath.Join(dir, "a.db"), osync.CollectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	if a2.ClientID() != idA {
		t.Fatalf("client id changed across restart: %q → %q", idA, a2.ClientID())
	}
}
