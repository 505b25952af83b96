package sync_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
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
	// Status: the collector knows each device, its backlog (0) and a clock offset.
	time.Sleep(200 * time.Millisecond)
	devs, _ := h.c.Devices()
	if len(devs) != 3 {
		t.Fatalf("devices %+v", devs)
	}
	for _, d := range devs {
		if d.Stored != 1500 || d.State != "online" {
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
	if err := conn.Subscribe(context.Background(), osync.AckTopic("pi-p"), 1, func(_ string, p []byte) { acks <- append([]byte(nil), p...) }); err != nil {
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
