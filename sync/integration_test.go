package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	goruntime "runtime"
	gosync "sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

func logger(t *testing.T) *slog.Logger { return testutil.Logger(t) }

func dialer(t testing.TB, url string, clean bool) osync.Dialer { return testutil.Dialer(t, url, clean) }

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

func startCollector(t *testing.T, path, url string) *testutil.Hub {
	return testutil.StartCollector(t, path, url)
}

// checkExactlyOnce: every record the device appended is in the collector's
// store exactly once (the store is keyed by ID; payloads are compared too)
// and the device's outbox is empty.
func checkExactlyOnce(t *testing.T, h *testutil.Hub, obs map[string]*outbox.Outbox, perDevice int) {
	t.Helper()
	seen := map[string]int{}
	err := h.C.Each(func(s hub.StoredResult) error {
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
	devs, _ := h.C.Devices()
	if len(devs) != 3 {
		t.Fatalf("devices %+v", devs)
	}
	for _, d := range devs {
		if d.Stored != 1500 || d.State != "offline" || d.LastSync.IsZero() || d.Backlog != 0 {
			t.Errorf("device status %+v", d)
		}
	}
	h.Stop()
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
		time.Sleep(50 * time.Millisecond) // polled by hand: on timeout the goroutines left are dumped below
	}
	buf := make([]byte, 1<<16)
	n := goruntime.Stack(buf, true)
	t.Fatalf("goroutine leak: %d before, %d after\n%s", before, goruntime.NumGoroutine(), buf[:n])
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
			time.Sleep(100 * time.Millisecond) // the attack's pace: ten forged acks a second
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
