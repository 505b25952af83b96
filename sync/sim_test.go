package sync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/outbox"
)

// TestSimulation_30DaysOffline: a kiosk with no link for 30 days (fake
// clock): a photo every 2–6 minutes in daylight, spoken commands, a few
// blight alerts, and — policy "always, as taken" — a 250 KB photo kept as
// evidence for one answer in ten, all into a real bbolt outbox capped at
// 64 MB (8 MB of records, 56 MB of evidence). For each queue policy: the
// file stays inside the cap and the policy's choices are counted. Then
// the link returns as a simulated 2G link (5 KB/s, 5 % of messages lost)
// with a 2 MB daily budget: alerts go first, then answers, then bulk and
// evidence within the budget's bulk share; no day goes over the budget
// (alerts excepted, and there are none left after day 1); the days to
// drain are reported.
func TestSimulation_30DaysOffline(t *testing.T) {
	for _, policy := range []outbox.Policy{outbox.PolicyPause, outbox.PolicyDropLowest} {
		t.Run(string(policy), func(t *testing.T) { simulate(t, policy) })
	}
}

type simClock struct{ t time.Time }

func (c *simClock) Now() time.Time { return c.t }

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
	photo := make([]byte, 250<<10)
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
		start := clock.t
		// Daylight photos, 07:00–18:00, every 2–6 minutes.
		for m := 7 * 60; m < 18*60; m += 2 + rng.IntN(5) {
			clock.t = start.Add(time.Duration(m) * time.Minute)
			prio, label := outbox.Normal, labels[rng.IntN(len(labels))]
			if rng.IntN(50) == 0 {
				prio, label = outbox.Alert, "blight"
			}
			out := fmt.Sprintf(`{"outcome":"diagnosis","label":%q,"score":0.%02d,"uncertain":false,"top":[{"label":%q,"score":0.%02d}],"lang":"sw"}`,
				label, 50+rng.IntN(50), label, 50+rng.IntN(50))
			r := &outbox.Record{Device: "kiosk-sim", Model: "crop-disease", Version: "0.2.0-demo", Task: "image-classification", Priority: prio, Output: []byte(out)}
			add(r, nil)
			if rng.IntN(10) == 0 {
				photo[0] = byte(rng.IntN(256))
				sum := sha256.Sum256(photo)
				ref := &outbox.Evidence{ContentType: "image/jpeg", Size: int64(len(photo)), SHA256: hex.EncodeToString(sum[:])}
				add(&outbox.Record{Device: "kiosk-sim", Model: "crop-disease", Task: "evidence", Priority: outbox.Bulk, Tier: outbox.TierEvidence,
					Output: []byte(`{"of":"` + r.ID.String() + `"}`), Evidence: ref}, photo)
			}
		}
		// Spoken commands and retakes through the day: bulk and normal.
		for i := 0; i < 40; i++ {
			clock.t = start.Add(time.Duration(6*3600+rng.IntN(14*3600)) * time.Second)
			prio := outbox.Normal
			if i%4 == 0 {
				prio = outbox.Bulk // a retake
			}
			add(&outbox.Record{Device: "kiosk-sim", Model: "kws", Version: "0.2.0-demo", Task: "keyword-spotting", Priority: prio,
				Output: []byte(`{"keywords":[{"word":"repeat","score":0.9}],"command":"repeat"}`)}, nil)
		}
		clock.t = start.Add(24 * time.Hour)
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

	// The link returns: a 2G link with a 2 MB daily budget.
	budget := &Budget{Daily: 2 << 20, BulkShare: 0.5}
	const linkRate, lossPct = 5000, 5
	hub := map[outbox.ID]bool{}
	order := []outbox.Priority{}
	labelsDoneDay, days := -1, 0
	var lost int
	for day := 0; day < 120; day++ {
		days = day + 1
		clock.t = clock.t.Add(24 * time.Hour).Truncate(24 * time.Hour).Add(6 * time.Hour)
		dayStart := clock.t
		linkSeconds := 0.0
		for linkSeconds < 12*3600 {
			lo, _ := budget.leaseOptions(clock.t, 500, 256<<10)
			recs, err := ob.LeaseWith(lo)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) > 0 {
				msg := EncodeBatch(&Batch{ID: outbox.NewIDGen().New(), Device: "kiosk-sim", Sent: clock.t, Records: recs})
				cost := WireCost(ResultsTopic("kiosk-sim"), len(msg), len(recs))
				ids := make([]outbox.ID, len(recs))
				for i, r := range recs {
					ids[i] = r.ID
				}
				if !budget.fits(clock.t, cost, recs) {
					ob.Release(ids)
					recs = nil
				} else {
					budget.spendOn(clock.t, TierNameLabels, cost)
					linkSeconds += float64(cost) / linkRate
					if rng.IntN(100) < lossPct {
						lost++
						ob.Release(ids) // no ack: sent again
						continue
					}
					for _, r := range recs {
						if !hub[r.ID] {
							order = append(order, r.Priority)
						}
						hub[r.ID] = true
					}
					ob.Ack(ids)
					continue
				}
			}
			// No answer eligible: evidence, one 16 KiB chunk at a time.
			evs, _ := ob.LeaseWith(outbox.LeaseOptions{Max: 1, MinTier: outbox.TierEvidence, MaxTier: outbox.TierEvidence, MaxPriority: outbox.Bulk})
			if len(evs) == 0 {
				break
			}
			if labelsDoneDay < 0 {
				labelsDoneDay = day + 1
			}
			e := evs[0]
			sent, ok := int64(0), true
			for sent < e.Evidence.Size {
				n := min(int64(DefaultEvidenceChunk), e.Evidence.Size-sent)
				cost := WireCost(EvidenceTopic("kiosk-sim"), int(n)+100, 0) - ackOverhead + 80
				if !budget.allowsBulk(clock.t, cost) {
					ok = false
					break
				}
				budget.spendOn(clock.t, TierNameEvidence, cost)
				linkSeconds += float64(cost) / linkRate
				if rng.IntN(100) < lossPct {
					lost++
					continue // the chunk again
				}
				sent += n
			}
			if !ok {
				// The bulk share is spent: the rest of this piece tomorrow
				// (a real device resumes at the hub's offset; the
				// simulation resends the piece, erring on the slow side).
				ob.Release([]outbox.ID{e.ID})
				break
			}
			hub[e.ID] = true
			ob.Ack([]outbox.ID{e.ID})
		}
		used := budget.Spent(dayStart)
		if used > budget.Daily+(256<<10) {
			t.Fatalf("day %d spent %d bytes over a %d budget", day+1, used, budget.Daily)
		}
		if s, _ := ob.Stats(); s.Count == 0 {
			break
		}
	}
	if s, _ := ob.Stats(); s.Count != 0 {
		t.Fatalf("not drained after %d days: %d records left", days, s.Count)
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
	t.Logf("%s, link back (5 KB/s, %d%% loss, 2 MB/day): answers drained on day %d, everything on day %d; %d messages lost and resent; %d records and pieces at the hub",
		policy, lossPct, labelsDoneDay, days, lost, len(hub))
}
