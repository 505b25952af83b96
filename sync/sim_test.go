package sync_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	gosync "sync"
	"testing"
	"time"

	osync "github.com/outpost-edge/outpost/sync"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	"github.com/outpost-edge/outpost/sync/memmqtt"
)

// TestSimulation_30DaysOffline: a kiosk with no link for 30 days (fake
// clock): a photo every 2–6 minutes in daylight, spoken commands, a few
// blight alerts, and — policy "always, as taken" — a 250 KB photo kept as
// evidence for one answer in ten, all into a real bbolt outbox capped at
// 64 MB (8 MB of records, 56 MB of evidence). For each queue policy: the
// file stays inside the cap and the policy's choices are counted. Then
// the link returns as a simulated 2G link (5 KB/s, 5 % of messages lost)
// with a 2 MB daily budget, and the device's real uplink (Uplink.Drain,
// one session a day, as `outpost sync --once` from cron) sends to the
// real hub collector through an in-memory broker (memmqtt) that counts
// every MQTT packet exactly and advances the fake clock at the link's
// rate: alerts go first, then answers, then bulk and evidence within the
// budget's bulk share; the budget's estimate of each day is never under
// the MQTT bytes really sent, and no day goes over the budget; the days
// to drain are reported.
func TestSimulation_30DaysOffline(t *testing.T) {
	for _, policy := range []outbox.Policy{outbox.PolicyPause, outbox.PolicyDropLowest} {
		t.Run(string(policy), func(t *testing.T) { simulate(t, policy) })
	}
}

// simClock is the simulation's time; the broker's hooks move it from the
// clients' goroutines.
type simClock struct {
	mu gosync.Mutex
	t  time.Time
}

func (c *simClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *simClock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *simClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func simulate(t *testing.T, policy outbox.Policy) {
	clock := &simClock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "outbox.db")
	ob, err := outbox.Open(path, outbox.Options{MaxBytes: 8 << 20, EvidenceMaxBytes: 56 << 20, Policy: policy, Now: clock.Now,
		LeaseTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	rng := rand.New(rand.NewPCG(7, 11))
	ctx := context.Background()
	// A real photo (the hub takes only what sniffs as one), padded to a
	// phone photo's 250 KB; its last byte varies so each is its own.
	photo := make([]byte, 250<<10)
	leaf, err := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples", "blight.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	copy(photo, leaf)
	appended := map[outbox.Priority]int{}
	refused := map[string]int{}
	labels := []string{"healthy", "leaf_spot", "rust", "mosaic"}
	add := func(r *outbox.Record, ev []byte) {
		_, err := ob.Append(ctx, r, ev)
		kind := map[outbox.Tier]string{outbox.TierLabels: "results", outbox.TierEvidence: "evidence"}[r.Tier]
		switch {
		case err == nil:
			appended[r.Priority]++
		case os.IsNotExist(err):
			t.Fatal(err)
		default:
			refused[kind]++
		}
	}
	for day := 0; day < 30; day++ {
		start := clock.Now()
		// Daylight photos, 07:00–18:00, every 2–6 minutes.
		for m := 7 * 60; m < 18*60; m += 2 + rng.IntN(5) {
			clock.Set(start.Add(time.Duration(m) * time.Minute))
			prio, label := outbox.Normal, labels[rng.IntN(len(labels))]
			if rng.IntN(50) == 0 {
				prio, label = outbox.Alert, "blight"
			}
			out := fmt.Sprintf(`{"outcome":"diagnosis","label":%q,"score":0.%02d,"uncertain":false,"top":[{"label":%q,"score":0.%02d}],"lang":"sw"}`,
				label, 50+rng.IntN(50), label, 50+rng.IntN(50))
			r := &outbox.Record{Device: "kiosk-sim", Model: "crop-disease", Version: "0.2.0-demo", Task: "image-classification", Priority: prio, Output: []byte(out)}
			add(r, nil)
			if rng.IntN(10) == 0 {
				photo[len(photo)-1] = byte(rng.IntN(256))
				sum := sha256.Sum256(photo)
				ref := &outbox.Evidence{ContentType: "image/jpeg", Size: int64(len(photo)), SHA256: hex.EncodeToString(sum[:])}
				add(&outbox.Record{Device: "kiosk-sim", Model: "crop-disease", Task: "evidence", Priority: outbox.Bulk, Tier: outbox.TierEvidence,
					Output: []byte(`{"of":"` + r.ID.String() + `"}`), Evidence: ref}, photo)
			}
		}
		// Spoken commands and retakes through the day: bulk and normal.
		for i := 0; i < 40; i++ {
			clock.Set(start.Add(time.Duration(6*3600+rng.IntN(14*3600)) * time.Second))
			prio := outbox.Normal
			if i%4 == 0 {
				prio = outbox.Bulk // a retake
			}
			add(&outbox.Record{Device: "kiosk-sim", Model: "kws", Version: "0.2.0-demo", Task: "keyword-spotting", Priority: prio,
				Output: []byte(`{"keywords":[{"word":"repeat","score":0.9}],"command":"repeat"}`)}, nil)
		}
		clock.Set(start.Add(24 * time.Hour))
		if _, err := ob.Trim(); err != nil { // as the daemon does every minute
			t.Fatal(err)
		}
	}
	st, _ := ob.Stats()
	fi, _ := os.Stat(path)
	if fi.Size() > 64<<20*5/4 { // the caps, plus what Trim tolerates before it compacts
		t.Fatalf("outbox file %d bytes: over the 64 MB cap by more than Trim allows", fi.Size())
	}
	evicted := map[string]int64{}
	for name, ps := range st.Priorities {
		evicted[name] = ps.Evicted
	}
	t.Logf("%s, 30 days offline: appended %v (alert/normal/bulk), refused %v, evicted %v, left %d records (%d B) + %d B evidence, file %d B",
		policy, []int{appended[outbox.Alert], appended[outbox.Normal], appended[outbox.Bulk]}, refused, evicted, st.Count, st.Bytes, st.EvidenceBytes, fi.Size())
	if policy == outbox.PolicyPause && refused["evidence"] == 0 {
		t.Fatal("30 days of 250 KB photos must reach a 56 MB evidence cap")
	}
	if policy == outbox.PolicyDropLowest && st.Evicted == 0 {
		t.Fatal("drop-lowest evicted nothing under the evidence cap")
	}
	if appended[outbox.Alert] == 0 || refused["results"] != 0 {
		t.Fatalf("every answer must fit its 8 MB: refused %v", refused)
	}

	drainThroughTheRealUplink(t, policy, ob, clock, rng)
}

// drainThroughTheRealUplink: the second half of the simulation.
func drainThroughTheRealUplink(t *testing.T, policy outbox.Policy, ob *outbox.Outbox, clock *simClock, rng *rand.Rand) {
	const device, linkRate, lossPct = "kiosk-sim", 5000.0, 5
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := hub.OpenBolt(filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	col, err := hub.New(st, hub.CollectorOptions{ClientID: "hub", Now: clock.Now, WarnEvery: -1, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	b := memmqtt.New()
	var mu gosync.Mutex // the broker's hooks run on both clients' goroutines
	var mqttBytes, lost int64
	order := []outbox.Priority{}
	seen := map[outbox.ID]bool{}
	devClient := "outpost-" + device
	b.Wire = func(client, topic string, up bool, n int) {
		if client != devClient {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		mqttBytes += int64(n)
		clock.Add(time.Duration(float64(n) / linkRate * float64(time.Second))) // the 2G link's pace
	}
	b.Fault = func(client, topic string, payload []byte) memmqtt.Fault {
		if client != devClient || topic == osync.StatusTopic(device) {
			return memmqtt.Deliver
		}
		mu.Lock()
		defer mu.Unlock()
		if rng.IntN(100) < lossPct {
			lost++
			// A real device waits out its ack timeout before sending again.
			clock.Add(ackTimeout + time.Second)
			return memmqtt.Drop
		}
		if topic == osync.ResultsTopic(device) {
			if bt, err := osync.DecodeBatch(payload); err == nil {
				for _, r := range bt.Records {
					if !seen[r.ID] {
						seen[r.ID] = true
						order = append(order, r.Priority)
					}
				}
			}
		}
		return memmqtt.Deliver
	}
	go col.Run(ctx, b.Dialer(true))
	testutil.Eventually(t, 10*time.Second, "the collector to subscribe", col.Connected)

	budget := &osync.Budget{Daily: 2 << 20, BulkShare: 0.5}
	u, err := osync.NewUplink(ob, b.Dialer(false), osync.UplinkOptions{Device: device, Budget: budget, Now: clock.Now,
		AckTimeout: ackTimeout, AckCheck: 2 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Time also passes while the device waits for an answer (a lost
	// chunk's ack never comes): a real millisecond is a simulated second.
	go func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				clock.Add(time.Second)
			}
		}
	}()

	labelsDoneDay, days := -1, 0
	var worst float64
	for day := 0; day < 120; day++ {
		days = day + 1
		clock.Set(clock.Now().Add(24 * time.Hour).Truncate(24 * time.Hour).Add(6 * time.Hour))
		dayStart := clock.Now()
		mu.Lock()
		before := mqttBytes
		mu.Unlock()
		err := u.Drain(ctx)
		if err != nil && !errors.Is(err, osync.ErrBudget) {
			t.Fatalf("day %d: %v", day+1, err)
		}
		mu.Lock()
		sent := mqttBytes - before
		mu.Unlock()
		spent := budget.Spent(dayStart)
		if spent > budget.Daily+(256<<10) {
			t.Fatalf("day %d spent %d bytes over a %d budget", day+1, spent, budget.Daily)
		}
		if sent > spent {
			t.Fatalf("day %d: the budget counted %d bytes but MQTT carried %d: it undercounts the link", day+1, spent, sent)
		}
		if sent > 0 {
			worst = max(worst, float64(spent)/float64(sent))
		}
		answers := 0
		ob.Each(func(r *outbox.Record) error {
			if r.Tier != outbox.TierEvidence {
				answers++
			}
			return nil
		})
		if labelsDoneDay < 0 && answers == 0 {
			labelsDoneDay = day + 1
		}
		if s, _ := ob.Stats(); s.Count == 0 {
			break
		}
	}
	if s, _ := ob.Stats(); s.Count != 0 {
		t.Fatalf("not drained after %d days: %d records left", days, s.Count)
	}
	n, _ := col.Count()
	if int(n) != len(seen) {
		t.Fatalf("the hub stored %d results, the device sent %d distinct", n, len(seen))
	}
	// Priority order: every alert reached the hub before any bulk record.
	lastAlert, firstBulk := -1, len(order)
	for i, p := range order {
		if p == outbox.Alert {
			lastAlert = i
		}
		if p == outbox.Bulk && i < firstBulk {
			firstBulk = i
		}
	}
	if lastAlert > firstBulk {
		t.Fatalf("an alert arrived after a bulk record (alert #%d, bulk #%d)", lastAlert, firstBulk)
	}
	us := u.Stats()
	t.Logf("%s, link back (5 KB/s, %d%% of messages lost, 2 MB/day) through the real uplink and collector: answers drained on day %d, everything on day %d; "+
		"%d messages lost, %d batches resent; %d results at the hub; MQTT bytes %d, budget's estimate up to %.2fx the MQTT bytes of a day",
		policy, lossPct, labelsDoneDay, days, lost, us.Resent, n, mqttBytes, worst)
}

// ackTimeout: the device's, in the simulation's time.
const ackTimeout = 30 * time.Second

// TestBudget_ChargesTheSession: a day with nothing to send still connects,
// subscribes and says it is online and then offline; the budget counts
// those bytes (its "session" tier) at least as the link carries them
// (the 30-day simulation once found a light day at 415 counted, 752 sent).
func TestBudget_ChargesTheSession(t *testing.T) {
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	b := memmqtt.New()
	var mu gosync.Mutex
	var sent int64
	b.Wire = func(client, topic string, up bool, n int) {
		if client == "outpost-quiet" {
			mu.Lock()
			sent += int64(n)
			mu.Unlock()
		}
	}
	budget := &osync.Budget{Daily: 1 << 20}
	u, err := osync.NewUplink(ob, b.Dialer(false), osync.UplinkOptions{Device: "quiet", Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // three days' connections
		if err := u.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	charged := budget.ByTier(time.Now())[osync.TierNameSession]
	if sent == 0 || charged < sent || charged != budget.Spent(time.Now()) {
		t.Fatalf("the link carried %d bytes, the budget's session tier counts %d (of %d spent)", sent, charged, budget.Spent(time.Now()))
	}
	t.Logf("three empty drains: %d bytes of MQTT, %d charged", sent, charged)
}
