package counter

import (
	"encoding/json"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type stats struct {
	Sent    int64     `json:"sent" metric:"sent_total" help:"Messages sent."`
	Dropped int64     `json:"dropped" metric:"dropped_total" help:"Messages dropped."`
	Quiet   int64     `json:"quiet"` // in JSON, not a metric
	Last    time.Time `json:"last,omitzero"`
}

// TestSet: one declaration gives the JSON snapshot and the Prometheus
// counters, read atomically while writers add (run under -race).
func TestSet(t *testing.T) {
	s := new(Set[stats]).Init("t_")
	var wg gosync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				atomic.AddInt64(&s.C.Sent, 1)
				_ = s.Snapshot()
			}
		}()
	}
	atomic.AddInt64(&s.C.Dropped, 3)
	atomic.AddInt64(&s.C.Quiet, 2)
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	wg.Wait()
	snap := s.Snapshot()
	b, _ := json.Marshal(snap)
	if string(b) != `{"sent":8000,"dropped":3,"quiet":2}` {
		t.Fatalf("snapshot %s", b)
	}
	want := "# HELP t_dropped_total Messages dropped.\n# TYPE t_dropped_total counter\nt_dropped_total 3\n# HELP t_sent_total Messages sent.\n# TYPE t_sent_total counter\nt_sent_total 8000\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a metric without help text must be refused")
		}
	}()
	new(Set[struct {
		N int64 `metric:"n_total"`
	}]).Init("")
}
