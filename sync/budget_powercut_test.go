package sync

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/powercut"
)

// TestBudgetPowerCutChild is the child of TestPowerCut_Budget: it spends
// and prints each new total once spend has returned. It does nothing in a
// normal run.
func TestBudgetPowerCutChild(t *testing.T) {
	path := os.Getenv("POWERCUT_BUDGET")
	if path == "" {
		return
	}
	b, err := LoadBudget(1<<40, path)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(w, "ready")
	w.Flush()
	for {
		b.spend(time.Now(), 100)
		fmt.Fprintln(w, "used", b.Spent(time.Now()))
		w.Flush()
	}
}

// TestPowerCut_Budget: the metered-link budget file survives power cuts —
// after each cut the budget read back is at least what the last completed
// spend reported (never reset to zero by a torn or vanished file), so a
// reboot cannot hand a device a fresh day's bytes. (The harness's ability
// to fail is proved on the helper itself: TestPowerCut_AtomicWriteMutation.)
func TestPowerCut_Budget(t *testing.T) {
	rounds := 20
	if s := os.Getenv("OUTPOST_POWERCUT_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	if back := budgetCuts(t, rounds); back > 0 {
		t.Fatalf("the budget went back after %d of %d cuts", back, rounds)
	}
}

// budgetCuts runs cut rounds and returns after how many the budget read
// back was below the last completed spend.
func budgetCuts(t *testing.T, rounds int) (back int) {
	fsys := powercut.MountT(t)
	dir := filepath.Join(fsys.Dir(), "state")
	os.Mkdir(dir, 0o750)
	if d, err := os.Open(fsys.Dir()); err == nil {
		d.Sync()
		d.Close()
	}
	path := filepath.Join(dir, "budget.json")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	var last int64
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBudgetPowerCutChild$")
		cmd.Env = append(os.Environ(), "POWERCUT_BUDGET="+path)
		powercut.RunChild(t, cmd, time.Duration(10+rng.IntN(60))*time.Millisecond, func(l string) {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "used" {
				last, _ = strconv.ParseInt(f[1], 10, 64)
			}
		})
		if _, err := fsys.Cut(round%2 == 1, rng); err != nil {
			t.Fatal(err)
		}
		b, err := LoadBudget(1<<40, path)
		if err != nil {
			t.Fatal(err)
		}
		if got := b.Spent(time.Now()); got < last {
			back++
			t.Errorf("round %d: budget after the cut says %d spent, the last completed spend said %d", round, got, last)
			last = got
		}
	}
	t.Logf("budget power cuts %d (every other torn): last spend %d bytes; went back %d times", rounds, last, back)
	return back
}

// TestBudget_History: each day's bytes per tier are kept for 30 days
// across restarts, and the days to drain a backlog follow the budget, or
// without one the average of the days that sent anything.
func TestBudget_History(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budget.json")
	day := time.Date(2026, 11, 1, 12, 0, 0, 0, time.Local)
	b, _ := LoadBudget(0, path)
	for i := 0; i < 40; i++ {
		now := day.AddDate(0, 0, i)
		b.spendOn(now, TierNameLabels, 1000)
		if i%2 == 0 {
			b.spendOn(now, TierNameEvidence, 3000)
		}
	}
	b, err := LoadBudget(0, path) // a restart
	if err != nil {
		t.Fatal(err)
	}
	now := day.AddDate(0, 0, 39)
	days := b.Days(now)
	if len(days) != HistoryDays+1 || days[len(days)-1].Day != now.Format("2006-01-02") || days[len(days)-1].Tiers[TierNameLabels] != 1000 {
		t.Fatalf("days: %d, last %+v", len(days), days[len(days)-1])
	}
	if d := b.DaysToDrain(now, 30_000); d < 10 || d > 13 { // about 2,500 B/day on average
		t.Fatalf("days to drain 30 kB at ~2.5 kB/day: %.1f", d)
	}
	b.Daily = 10_000
	if d := b.DaysToDrain(now, 30_000); d != 3 {
		t.Fatalf("days to drain at a 10 kB budget: %.1f", d)
	}
}
