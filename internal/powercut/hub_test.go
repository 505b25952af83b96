package powercut_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/powercut"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// hubChild commits batches to the hub's bbolt store and prints each record
// once Commit returned — the moment the collector would send the ack that
// lets a device delete it.
func hubChild(path string) {
	st, err := hub.OpenBolt(path)
	if err != nil {
		fmt.Println("open-error", err)
		os.Exit(3)
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(w, "ready")
	w.Flush()
	g := outbox.NewIDGen()
	for i := 0; ; i++ {
		b := &osync.Batch{ID: g.New(), Device: "pi-cut", Sent: time.Now()}
		for j := 0; j < 1+i%20; j++ {
			b.Records = append(b.Records, &outbox.Record{ID: g.New(), Device: "pi-cut", Model: "m", Task: "t", Output: []byte(fmt.Sprintf(`{"i":%d,"j":%d}`, i, j))})
		}
		if _, err := st.Commit(context.Background(), []*osync.Batch{b}, time.Now()); err != nil {
			fmt.Fprintln(w, "error", err)
			w.Flush()
			os.Exit(4)
		}
		for _, r := range b.Records {
			fmt.Fprintln(w, "ok", r.ID)
		}
		w.Flush()
	}
}

func hubCheck(path string) {
	st, err := hub.OpenBolt(path)
	if err != nil {
		fmt.Println("open-error", err)
		os.Exit(3)
	}
	w := bufio.NewWriter(os.Stdout)
	err = st.Each(context.Background(), func(s hub.StoredResult) error {
		fmt.Fprintln(w, "rec", s.Record.ID)
		return nil
	})
	st.Close()
	if err != nil {
		fmt.Fprintln(w, "error", err)
	}
	fmt.Fprintln(w, "end")
	w.Flush()
	os.Exit(0)
}

// TestPowerCut_HubStore: the hub's bbolt store under power cuts while it
// commits batches: every record whose commit returned (what the ack
// promises) is there after the cut, and the store opens. 20 cuts in make
// test, 1,000 in make chaos.
func TestPowerCut_HubStore(t *testing.T) {
	fsys := powercut.MountT(t)
	path := filepath.Join(fsys.Dir(), "collector.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	acked := map[string]bool{}
	n, lost := rounds(t, 20), 0
	for round := 0; round < n; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "POWERCUT_HUB_CHILD="+path)
		powercut.RunChild(t, cmd, time.Duration(20+rng.IntN(120))*time.Millisecond, func(l string) {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "ok" {
				acked[f[1]] = true
			} else if len(f) > 0 && f[0] != "ok" {
				t.Errorf("round %d: child: %s", round, l)
			}
		})
		if _, err := fsys.Cut(round%2 == 1, rng); err != nil {
			t.Fatal(err)
		}
		chk := exec.Command(os.Args[0], "-test.run=^$")
		chk.Env = append(os.Environ(), "POWERCUT_HUB_CHECK="+path)
		got, err := chk.Output()
		if err != nil || !strings.HasSuffix(string(got), "end\n") {
			t.Fatalf("round %d: the hub store does not open after the cut: %v\n%s", round, err, got)
		}
		have := map[string]bool{}
		for _, l := range strings.Split(string(got), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "rec" {
				have[f[1]] = true
			}
		}
		for id := range acked {
			if !have[id] {
				lost++
				delete(acked, id)
			}
		}
		if lost > 0 {
			t.Fatalf("round %d: %d committed (acknowledgeable) records lost", round, lost)
		}
	}
	t.Logf("hub store power cuts %d (every other torn): %d records committed, lost %d", n, len(acked), lost)
}
