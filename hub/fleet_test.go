package hub_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// BenchmarkFleet (make bench, not make test): OUTPOST_FLEET_DEVICES
// (default 10,000) simulated devices, each its own MQTT connection and a
// backlog of 50 records sent as two batches of 25 (window 1, as the
// uplink does). They reconnect within a 10 s ramp with jitter after an
// outage, then all send at once (the uplink coming back): the hub, not the
// ramp, sets the pace. Mosquitto, collectors as separate processes. For the bbolt store with
// one collector and PostgreSQL with one and three (shared subscription):
// time until every batch is acked, records/s stored, p50/p99 ack latency,
// broker and collector CPU seconds and peak RSS. One run per sub-benchmark.
func BenchmarkFleet(b *testing.B) {
	devices := 10000
	if s := os.Getenv("OUTPOST_FLEET_DEVICES"); s != "" {
		devices, _ = strconv.Atoi(s)
	}
	// 10,000 sockets here and in the broker (it inherits the limit).
	lim := syscall.Rlimit{Cur: 200000, Max: 200000}
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	// "serial": one commit group at a time per collector, as before the
	// pipeline (CollectorOptions.Commits 1), measured in the same run.
	one := map[int]float64{} // one collector's records/s, by commits
	for _, cfg := range []struct {
		name       string
		collectors int
		pg         bool
		commits    int
	}{{"bolt-1", 1, false, 0}, {"postgres-1-serial", 1, true, 1}, {"postgres-3-serial", 3, true, 1}, {"postgres-1", 1, true, 0}, {"postgres-3", 3, true, 0}} {
		b.Run(cfg.name, func(b *testing.B) {
			broker := testutil.StartMosquitto(b, false)
			var cs []*child
			var store string
			var env []string
			if cfg.pg {
				store = testutil.StartPostgres(b).NewDatabase(b)
			} else {
				env = []string{"HUB_CHILD_BOLT=" + filepath.Join(b.TempDir(), "hub.db")}
			}
			env = append(env, fmt.Sprintf("HUB_CHILD_COMMITS=%d", cfg.commits))
			for i := 0; i < cfg.collectors; i++ {
				cs = append(cs, startChild(b, fmt.Sprintf("hub-%d", i), store, broker.URL(), env...))
			}
			cpu0 := map[int]float64{broker.Pid(): procCPU(broker.Pid())}
			for _, c := range cs {
				cpu0[c.cmd.Process.Pid] = procCPU(c.cmd.Process.Pid)
			}
			res := runFleet(b, broker.URL(), devices, 50, 25, 10*time.Second)
			var colCPU, colRSS float64
			for _, c := range cs {
				p := c.cmd.Process.Pid
				colCPU += procCPU(p) - cpu0[p]
				colRSS += procRSS(p)
			}
			bp := broker.Pid()
			b.ReportMetric(res.drain.Seconds(), "drain-s")
			b.ReportMetric(float64(res.records)/res.drain.Seconds(), "records/s")
			b.ReportMetric(res.p50.Seconds()*1000, "ack-p50-ms")
			b.ReportMetric(res.p99.Seconds()*1000, "ack-p99-ms")
			b.ReportMetric(procCPU(bp)-cpu0[bp], "broker-cpu-s")
			b.ReportMetric(procRSS(bp), "broker-rss-MB")
			b.ReportMetric(colCPU, "collectors-cpu-s")
			b.ReportMetric(colRSS, "collectors-rss-MB")
			b.ReportMetric(float64(res.failed), "devices-failed")
			// Everything shares 2 cores: the load generator's 10,000
			// clients, the broker, the collectors and PostgreSQL.
			b.ReportMetric(res.busy, "machine-busy-%")
			b.ReportMetric(res.loadgen, "devices-cpu-s")
			if cfg.pg && res.records > 0 {
				// The store's own pace, same run: the same number of rows
				// inserted by pgx straight into the same schema, in commits
				// of the collector's largest group (64 batches of 25), with
				// the same statement. Collector ÷ this is the ingest ratio
				// when the fleet arrives faster than the hub stores it (a
				// drain much longer than the ramp); with a small fleet the
				// ramp, not the hub, sets records/s.
				rate := float64(res.records) / res.drain.Seconds()
				base := pgxBaseline(b, testutil.StartPostgres(b).NewDatabase(b), res.records, 64*25, 1)
				b.ReportMetric(base, "pgx-records/s")
				b.ReportMetric(rate/base, "collector/pgx")
				if cfg.collectors == 1 {
					one[cfg.commits] = rate
				} else if one[cfg.commits] > 0 {
					// What N collectors could reach at most here: the store
					// inserting alone over N connections, the machine
					// otherwise idle. Divided by one collector's rate, it is
					// the ceiling on "N ÷ one" on this machine.
					baseN := pgxBaseline(b, testutil.StartPostgres(b).NewDatabase(b), res.records, 64*25, cfg.collectors)
					b.ReportMetric(baseN, "pgx-n-conns-records/s")
					b.ReportMetric(rate/one[cfg.commits], "n/one")
					b.ReportMetric(baseN/one[cfg.commits], "ceiling-n/one")
				}
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// pgxBaseline inserts n result rows into a fresh hub schema at url with
// the PostgreSQL store's INSERT … SELECT FROM unnest … ON CONFLICT
// statement, per commits of group rows, over conns connections at once
// (each a share of the rows), and returns rows per second.
func pgxBaseline(b *testing.B, url string, n, group, conns int) float64 {
	ctx := context.Background()
	st, err := hub.OpenPostgres(ctx, url, hub.PGOptions{Name: "baseline"}) // applies the migrations
	if err != nil {
		b.Fatal(err)
	}
	st.Close()
	cs := make([]*pgx.Conn, conns)
	for i := range cs {
		if cs[i], err = pgx.Connect(ctx, url); err != nil {
			b.Fatal(err)
		}
		defer cs[i].Close(ctx)
	}
	g := outbox.NewIDGen()
	now := time.Now().UTC()
	var wg gosync.WaitGroup
	t0 := time.Now()
	for i, conn := range cs {
		share := n / conns
		if i < n%conns {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pgxInsert(ctx, conn, g, now, fmt.Sprintf("fleet-c%d-", i), share, group); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	rate := float64(n) / time.Since(t0).Seconds()
	b.Logf("pgx baseline: %d rows in commits of %d over %d connections: %.0f rows/s", n, group, conns, rate)
	return rate
}

// pgxInsert is one connection's share of pgxBaseline: n rows of devices
// named prefix+number, in commits of group.
func pgxInsert(ctx context.Context, conn *pgx.Conn, g *outbox.IDGen, now time.Time, prefix string, n, group int) error {
	label := "healthy"
	for done := 0; done < n; done += group {
		k := min(group, n-done)
		devs, ids, seqs := make([]string, k), make([]string, k), make([]int64, k)
		created, mods, vers, tasks := make([]time.Time, k), make([]string, k), make([]string, k), make([]string, k)
		labels, recs := make([]*string, k), make([][]byte, k)
		for i := range k {
			r := &outbox.Record{ID: g.New(), Seq: uint64(done + i + 1), Created: now, Device: fmt.Sprintf("%s%05d", prefix, (done+i)/50),
				Model: "crop-disease", Version: "0.3.0", Task: "image_classification", Output: []byte(`{"outcome":"diagnosis","label":"healthy","score":0.9}`)}
			devs[i], ids[i], seqs[i], created[i] = r.Device, r.ID.String(), int64(r.Seq), r.Created
			mods[i], vers[i], tasks[i], labels[i], recs[i] = r.Model, r.Version, r.Task, &label, r.Encode(nil)
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO results (device, id, seq, created, received, day, model, version, task, label, record)
				SELECT d, i::uuid, s, c, $5, $6::date, m, v, t, l, r
				FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bytea[])
				  AS x(d, i, s, c, m, v, t, l, r)
				ON CONFLICT (device, id) DO NOTHING`,
				devs, ids, seqs, created, now, now.Format("2006-01-02"), mods, vers, tasks, labels, recs)
			return err
		})
		if err != nil {
			return fmt.Errorf("pgx baseline insert: %w", err)
		}
	}
	return nil
}

type fleetResult struct {
	drain    time.Duration // first publish to last ack
	records  int
	p50, p99 time.Duration
	failed   int
	busy     float64 // % of the machine's CPU busy from the word to the last ack
	loadgen  float64 // CPU seconds the simulated devices (this process) used meanwhile
}

// runFleet simulates the devices and returns when every one has its
// backlog acknowledged (or gave up after 5 minutes).
func runFleet(b *testing.B, url string, devices, backlog, batch int, ramp time.Duration) fleetResult {
	var lat []time.Duration
	var mu gosync.Mutex
	var first atomic.Int64
	var last atomic.Int64
	var failed atomic.Int64
	var wg, connected gosync.WaitGroup
	go_ := make(chan struct{})
	start := time.Now()
	for d := 0; d < devices; d++ {
		wg.Add(1)
		connected.Add(1)
		go func(d int) {
			defer wg.Done()
			var once gosync.Once
			ready := func() { once.Do(connected.Done) }
			defer ready()
			time.Sleep(time.Duration(rand.Int64N(int64(ramp)))) // reconnect jitter
			name := fmt.Sprintf("fleet-%05d", d)
			if err := fleetDevice(url, name, backlog, batch, func() { ready(); <-go_ }, &first, &last, func(l time.Duration) {
				mu.Lock()
				lat = append(lat, l)
				mu.Unlock()
			}); err != nil {
				if failed.Add(1) <= 3 {
					b.Logf("%s: %v", name, err)
				}
			}
		}(d)
	}
	connected.Wait()
	b.Logf("%d devices connected in %s; all send now", devices, time.Since(start).Round(time.Millisecond))
	busy0, total0 := machineCPU()
	self0 := procCPU(os.Getpid())
	close(go_)
	wg.Wait()
	busy1, total1 := machineCPU()
	self1 := procCPU(os.Getpid())
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r := fleetResult{drain: time.Duration(last.Load() - first.Load()), records: len(lat) * batch, failed: int(failed.Load()),
		busy: 100 * (busy1 - busy0) / (total1 - total0), loadgen: self1 - self0}
	if len(lat) > 0 {
		r.p50, r.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	b.Logf("%d devices × %d records, ramp %s: %d batches acked, %d devices failed, %s from first publish to last ack (wall %s)",
		devices, backlog, ramp, len(lat), r.failed, r.drain.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return r
}

// fleetDevice: connect, subscribe to its acks, wait for the word, send
// the backlog in batches with one in flight, each resent after 10 s
// without an ack.
func fleetDevice(url, name string, backlog, batch int, wait func(), first, last *atomic.Int64, observe func(time.Duration)) error {
	acks := make(chan outbox.ID, 4)
	o := paho.NewClientOptions().AddBroker(url).SetClientID(name).SetCleanSession(true).
		SetConnectTimeout(30 * time.Second).SetAutoReconnect(false).SetKeepAlive(60 * time.Second)
	c := paho.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(60*time.Second) || t.Error() != nil {
		return fmt.Errorf("connect: %v", t.Error())
	}
	defer c.Disconnect(0)
	if t := c.Subscribe(osync.AckTopic(name), 1, func(_ paho.Client, m paho.Message) {
		if a, err := osync.DecodeAck(m.Payload()); err == nil {
			select {
			case acks <- a.Batch:
			default:
			}
		}
	}); !t.WaitTimeout(60*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe: %v", t.Error())
	}
	// Batches are encoded (and compressed) before the word: each device
	// in the field does that on its own CPU, not on the hub's. Encoding
	// here during the drain gave the hub's cores to the load generator.
	g := outbox.NewIDGen()
	type encoded struct {
		id      outbox.ID
		payload []byte
	}
	var batches []encoded
	for sent := 0; sent < backlog; sent += batch {
		bt := &osync.Batch{ID: g.New(), Device: name, Sent: time.Now()}
		for i := 0; i < batch; i++ {
			bt.Records = append(bt.Records, &outbox.Record{ID: g.New(), Device: name, Seq: uint64(sent + i + 1), Created: time.Now(),
				Model: "crop-disease", Version: "0.2.0", Task: "image-classification", Output: []byte(`{"outcome":"diagnosis","label":"rust","score":0.93}`),
				Outcome: "diagnosis", Label: "rust"}) // as a device of today sends it (v3)
		}
		batches = append(batches, encoded{bt.ID, osync.EncodeBatch(bt)})
	}
	wait()
	for n, bt := range batches {
		payload := bt.payload
		deadline := time.Now().Add(5 * time.Minute)
		for {
			t0 := time.Now()
			first.CompareAndSwap(0, t0.UnixNano())
			if t := c.Publish(osync.ResultsTopic(name), 1, false, payload); !t.WaitTimeout(60*time.Second) || t.Error() != nil {
				return fmt.Errorf("publish: %v", t.Error())
			}
			select {
			case id := <-acks:
				if id != bt.id {
					continue
				}
				now := time.Now()
				observe(now.Sub(t0))
				for {
					l := last.Load()
					if now.UnixNano() <= l || last.CompareAndSwap(l, now.UnixNano()) {
						break
					}
				}
			case <-time.After(10 * time.Second):
				if time.Now().After(deadline) {
					return fmt.Errorf("batch %d not acked in 5 min", n)
				}
				continue
			}
			break
		}
	}
	return nil
}

// machineCPU reads the busy and total jiffies of all CPUs (/proc/stat).
func machineCPU() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 1
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:]
	for i, v := range f {
		x, _ := strconv.ParseFloat(v, 64)
		total += x
		if i != 3 && i != 4 { // idle, iowait
			busy += x
		}
	}
	return busy, total
}

// procCPU is a process's user+system CPU seconds (Linux /proc).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100 // USER_HZ
}

// procRSS is a process's peak resident set in MB (VmHWM).
func procRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}
