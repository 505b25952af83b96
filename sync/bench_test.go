package sync_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// resetPeakRSS clears VmHWM so the next phase's peak is its own.
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkDrain drains a backlog (100,000 records; OUTPOST_BENCH_RECORDS
// overrides) through a local mosquitto end to end: publish → collector
// commit → ack → device delete. Baseline in the same run: paho publishing
// the same records one per message at QoS 1 with 20 in flight (no
// collector, no ack, no delete). Bytes are counted by a TCP proxy in front
// of the broker (both directions), not estimated. Run with -benchtime 1x.
func BenchmarkDrain(b *testing.B) {
	n := 100_000
	if s := os.Getenv("OUTPOST_BENCH_RECORDS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	for i := 0; i < b.N; i++ {
		broker := testutil.StartMosquitto(b, false)
		ob, err := outbox.Open(filepath.Join(b.TempDir(), "outbox.db"), outbox.Options{MaxRecords: int64(n) + 1})
		if err != nil {
			b.Fatal(err)
		}
		var wg gosync.WaitGroup
		for p := 0; p < 64; p++ {
			wg.Add(1)
			go func(p int) {
				defer wg.Done()
				for j := p; j < n; j += 64 {
					ob.Append(context.Background(), &outbox.Record{Device: "bench-1", Model: "crop-disease", Version: "1.0.0",
						Task: "image-classification", Output: []byte(fmt.Sprintf(`{"labels":[{"label":"leaf_rust","score":0.%04d},{"label":"healthy","score":0.0312}]}`, j%10000))}, nil)
				}
			}(p)
		}
		wg.Wait()
		recs, _ := ob.Lease(n, 0)
		ids := make([]outbox.ID, len(recs))
		for k, r := range recs {
			ids[k] = r.ID
		}
		ob.Release(ids)

		// outpost: end to end.
		proxy := testutil.StartProxy(b, broker.Addr())
		c, err := hub.Open(filepath.Join(b.TempDir(), "hub.db"), hub.CollectorOptions{})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cdone := make(chan error, 1)
		go func() { cdone <- c.Run(ctx, dialer(b, broker.URL(), false)) }()
		<-c.Ready()
		up, _ := osync.NewUplink(ob, dialer(b, proxy.URL(), true), osync.UplinkOptions{Device: "bench-1", BatchRecords: 500, Window: 8})
		resetPeakRSS()
		b.ResetTimer()
		t0 := time.Now()
		if err := up.Drain(context.Background()); err != nil {
			b.Fatal(err)
		}
		el := time.Since(t0)
		b.StopTimer()
		rss := peakRSS()
		stored, _ := c.Count()
		cancel()
		<-cdone
		c.Close()
		if stored != n {
			b.Fatalf("collector stored %d of %d", stored, n)
		}
		wire := proxy.Up.Load() + proxy.Down.Load()

		// Baseline: one record per message, QoS 1, 20 in flight.
		proxy2 := testutil.StartProxy(b, broker.Addr())
		cl := paho.NewClient(paho.NewClientOptions().AddBroker(proxy2.URL()).SetClientID("naive").SetCleanSession(true))
		if tok := cl.Connect(); tok.Wait() && tok.Error() != nil {
			b.Fatal(tok.Error())
		}
		resetPeakRSS()
		t1 := time.Now()
		window := make(chan paho.Token, 20)
		var pwg gosync.WaitGroup
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for tok := range window {
				tok.Wait()
			}
		}()
		for _, r := range recs {
			window <- cl.Publish(osync.ResultsTopic("naive-1"), 1, false, r.Encode(nil))
		}
		close(window)
		pwg.Wait()
		el2 := time.Since(t1)
		rss2 := peakRSS()
		cl.Disconnect(100)
		wire2 := proxy2.Up.Load() + proxy2.Down.Load()

		rate, rate2 := float64(n)/el.Seconds(), float64(n)/el2.Seconds()
		b.ReportMetric(rate, "records/s")
		b.ReportMetric(rate2, "naive-records/s")
		b.ReportMetric(rate/rate2, "speed-ratio")
		b.ReportMetric(float64(wire)/float64(n), "wire-B/rec")
		b.ReportMetric(float64(wire2)/float64(n), "naive-wire-B/rec")
		b.ReportMetric(float64(wire2)/float64(wire), "wire-saving-x")
		b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(float64(rss2)/(1<<20), "naive-peak-RSS-MiB")
		b.ReportMetric(0, "ns/op")
		ob.Close()
		proxy.Close()
		proxy2.Close()
		broker.Kill()
	}
}
