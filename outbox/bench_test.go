package outbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	gosync "sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// benchRecord is a typical label result: ~150 bytes of JSON output.
func benchRecord() *Record {
	return &Record{Device: "pi-field-07", Model: "crop-disease", Version: "1.0.0", Task: "image-classification",
		Priority: Normal, Output: []byte(`{"labels":[{"label":"leaf_rust","score":0.91},{"label":"healthy","score":0.06}],"uncertain":false}`)}
}

// BenchmarkAppend measures durable Appends (fsync per group commit) with 1,
// 8 and 64 concurrent producers, and in the same run the raw floor: bbolt
// Update transactions putting the same records at the same batch size the
// outbox achieved (1 put per commit for one producer). Reported: appends/s,
// raw puts/s, ratio, p50/p99 Append latency, records per commit, bytes on
// disk per record.
func BenchmarkAppend(b *testing.B) {
	for _, producers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			dir := b.TempDir()
			ob, err := Open(filepath.Join(dir, "outbox.db"), Options{MaxRecords: 1 << 30, MaxBytes: 1 << 40})
			if err != nil {
				b.Fatal(err)
			}
			defer ob.Close()
			lat := make([][]time.Duration, producers)
			var wg gosync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for p := 0; p < producers; p++ {
				n := b.N / producers
				if p < b.N%producers {
					n++
				}
				wg.Add(1)
				go func(p, n int) {
					defer wg.Done()
					l := make([]time.Duration, 0, n)
					for i := 0; i < n; i++ {
						t0 := time.Now()
						if _, err := ob.Append(context.Background(), benchRecord(), nil); err != nil {
							b.Error(err)
							return
						}
						l = append(l, time.Since(t0))
					}
					lat[p] = l
				}(p, n)
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			st, _ := ob.Stats()
			all := slices.Concat(lat...)
			slices.Sort(all)
			rate := float64(b.N) / elapsed.Seconds()
			batch := max(1, int(st.AvgBatch+0.5))
			raw := rawBoltPuts(b, filepath.Join(dir, "raw.db"), b.N, batch)
			b.ReportMetric(rate, "appends/s")
			b.ReportMetric(raw, "raw-puts/s")
			b.ReportMetric(rate/raw, "ratio")
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(st.AvgBatch, "recs/commit")
			b.ReportMetric(float64(st.FileBytes)/float64(max(st.Count, 1)), "disk-B/rec")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// rawBoltPuts is the floor: n records put by one goroutine in Update
// transactions of batch puts each (fsync per transaction), keys in order.
func rawBoltPuts(b *testing.B, path string, n, batch int) float64 {
	db, err := bolt.Open(path, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists([]byte("r")); return err })
	g := NewIDGen()
	val := benchRecord().Encode(nil)
	start := time.Now()
	for done := 0; done < n; {
		k := min(batch, n-done)
		err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket([]byte("r"))
			for i := 0; i < k; i++ {
				id := g.New()
				if err := bk.Put(id[:], val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		done += k
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkFdatasync is the physical floor: one 4 KiB write + fdatasync on
// the same filesystem. A bbolt commit needs two of these (pages, then meta).
func BenchmarkFdatasync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.WriteAt(buf, int64(i%256)*4096); err != nil {
			b.Fatal(err)
		}
		if err := fdatasync(f); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/fdatasync")
}
