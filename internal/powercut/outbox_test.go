package powercut_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/powercut"
	"github.com/outpost-edge/outpost/outbox"
)

// The child appends (8 producers), deletes some of what it appended (as
// acks do) and, in some rounds, compacts — printing each operation only
// after it returned success. The parent kills it, cuts the power, and
// checks every claim.
func TestMain(m *testing.M) {
	if path := os.Getenv("POWERCUT_OUTBOX_CHILD"); path != "" {
		outboxChild(path)
		return
	}
	if path := os.Getenv("POWERCUT_CHECK"); path != "" {
		checkChild(path)
		return
	}
	if path := os.Getenv("POWERCUT_HUB_CHILD"); path != "" {
		hubChild(path)
		return
	}
	if path := os.Getenv("POWERCUT_HUB_CHECK"); path != "" {
		hubCheck(path)
		return
	}
	os.Exit(m.Run())
}

func outboxChild(path string) {
	ob, err := outbox.Open(path, outbox.Options{NoSync: os.Getenv("POWERCUT_NOSYNC") == "1"})
	if err != nil {
		fmt.Println("open-error", err)
		os.Exit(3)
	}
	var mu gosync.Mutex
	out := bufio.NewWriter(os.Stdout)
	say := func(line string) {
		mu.Lock()
		out.WriteString(line)
		out.Flush()
		mu.Unlock()
	}
	say("ready\n")
	round := os.Getenv("POWERCUT_ROUND")
	for p := 0; p < 8; p++ {
		go func(p int) {
			for i := 0; ; i++ {
				r := &outbox.Record{Device: "cut", Model: "m", Task: "t", Priority: outbox.Priority(i % outbox.NumPriorities),
					Output: []byte(fmt.Sprintf("%s/%d/%d", round, p, i))}
				id, err := ob.Append(context.Background(), r, nil)
				if err != nil {
					say(fmt.Sprintf("error %v\n", err))
					return
				}
				say(fmt.Sprintf("ok %s %s\n", id, r.Output))
			}
		}(p)
	}
	compact := os.Getenv("POWERCUT_COMPACT") == "1"
	for {
		time.Sleep(5 * time.Millisecond) // the child's pace: it acks a little at a time while the parent cuts power
		recs, err := ob.Lease(20, 0)
		if err != nil || len(recs) == 0 {
			continue
		}
		ids := make([]outbox.ID, len(recs))
		for i, r := range recs {
			ids[i] = r.ID
		}
		// Said before the delete, so the parent knows these may be gone
		// even if the kill comes before "del".
		say("deleting " + strings.Join(idStrings(ids), " ") + "\n")
		if _, err := ob.Ack(ids); err == nil {
			for _, id := range ids {
				say("del " + id.String() + "\n")
			}
		}
		if compact {
			ob.Compact()
		}
	}
}

// checkChild opens the outbox as the next boot would and prints every
// record. It runs in its own process: bbolt mmaps the file, and a page
// fault on a FUSE file served by the faulting process itself can deadlock
// the Go runtime.
func checkChild(path string) {
	logs := &strings.Builder{}
	ob, err := outbox.Open(path, outbox.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		fmt.Println("open-error", err)
		os.Exit(3)
	}
	w := bufio.NewWriter(os.Stdout)
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=ERROR") {
			fmt.Fprintln(w, "log", l)
		}
	}
	for {
		recs, err := ob.Lease(10_000, 0)
		if err != nil {
			fmt.Fprintln(w, "error", err)
			break
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			fmt.Fprintf(w, "rec %s %s\n", r.ID, r.Output)
		}
	}
	ob.Close()
	fmt.Fprintln(w, "end")
	w.Flush()
	os.Exit(0)
}

func idStrings(ids []outbox.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

func rounds(t *testing.T, def int) int {
	if s := os.Getenv("OUTPOST_POWERCUT_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	return def
}

type cutResult struct {
	rounds, torn, acked, deleted, lost, resurrected int
	pagesDropped, pagesKept                         int
}

// runOutboxCuts runs rounds of: child appends/deletes/compacts through the
// power-cut mount → SIGKILL at a random moment → cut (every other one torn)
// → reopen and check every claim the child made, across all rounds.
func runOutboxCuts(t *testing.T, n int, noSync bool) cutResult {
	fsys := powercut.MountT(t)
	path := filepath.Join(fsys.Dir(), "data", "outbox.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	present := map[string]string{} // id -> payload: acknowledged and not deleted
	deleted := map[string]bool{}
	maybe := map[string]bool{}  // a delete was started: gone or not, both are right
	ackedIn := map[string]int{} // id -> round its append was acknowledged (diagnostics)
	var lostIDs []string
	var res cutResult
	for round := 0; round < n; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "POWERCUT_OUTBOX_CHILD="+path, fmt.Sprintf("POWERCUT_ROUND=%d", round),
			"POWERCUT_COMPACT="+map[bool]string{true: "1", false: "0"}[round%3 == 2],
			"POWERCUT_NOSYNC="+map[bool]string{true: "1", false: "0"}[noSync])
		cmd.Stderr = os.Stderr
		powercut.RunChild(t, cmd, time.Duration(20+rng.IntN(150))*time.Millisecond, func(l string) {
			f := strings.Fields(l)
			switch {
			case len(f) == 3 && f[0] == "ok":
				// The deleter may have taken it (and said so) before its
				// producer got to print it.
				if !deleted[f[1]] {
					present[f[1]] = f[2]
				}
				ackedIn[f[1]] = round
				res.acked++
			case len(f) > 1 && f[0] == "deleting":
				for _, id := range f[1:] {
					maybe[id] = true
				}
			case len(f) == 2 && f[0] == "del":
				delete(present, f[1])
				deleted[f[1]] = true
				res.deleted++
			case len(f) > 0 && (f[0] == "open-error" || f[0] == "error"):
				t.Errorf("round %d: child: %s", round, l)
			}
		})
		torn := round%2 == 1
		st, err := fsys.Cut(torn, rng)
		if err != nil {
			t.Fatal(err)
		}
		res.rounds++
		if torn {
			res.torn++
			res.pagesKept += st.KeptPages
			res.pagesDropped += st.DirtyPages - st.KeptPages
		} else {
			res.pagesDropped += st.DirtyPages
		}
		// Reopen through the mount, as the next boot would (in a child:
		// see checkChild).
		chk := exec.Command(os.Args[0], "-test.run=^$")
		chk.Env = append(os.Environ(), "POWERCUT_CHECK="+path)
		chk.Stderr = os.Stderr
		out, err := chk.Output()
		if err != nil || !strings.HasSuffix(string(out), "end\n") {
			t.Fatalf("round %d: the outbox does not open after the cut: %v\n%s", round, err, out)
		}
		got := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "log ") && !noSync {
				t.Errorf("round %d: reopening logged: %s", round, line)
			}
			f := strings.Fields(line)
			if len(f) == 3 && f[0] == "rec" {
				if _, dup := got[f[1]]; dup {
					t.Fatalf("round %d: %s present twice", round, f[1])
				}
				got[f[1]] = f[2]
			}
		}
		for id, payload := range present {
			if maybe[id] {
				if _, ok := got[id]; !ok {
					delete(present, id) // the delete went through
				}
				continue
			}
			if got[id] != payload {
				if len(lostIDs) < 5 {
					lostIDs = append(lostIDs, fmt.Sprintf("%s (acknowledged in round %d, compaction rounds are 2 mod 3, present %v)", id, ackedIn[id], got[id] != ""))
				}
				res.lost++
				delete(present, id) // count each loss once
			}
		}
		for id := range got {
			if deleted[id] {
				res.resurrected++
				delete(deleted, id)
			}
		}
		if !noSync && (res.lost > 0 || res.resurrected > 0) {
			t.Fatalf("round %d (torn %v): %d acknowledged records lost, %d deleted records back; cut %+v; %d records present; lost e.g. %v",
				round, torn, res.lost, res.resurrected, st, len(got), lostIDs)
		}
	}
	return res
}

// TestPowerCut_Outbox: concurrent appends, acks (deletes) and compaction,
// cut at random moments, every other cut torn. Every acknowledged append
// is there exactly once with its payload; no acknowledged delete comes back;
// the file always opens. 30 rounds in make test, 1,000 in make chaos
// (OUTPOST_POWERCUT_ROUNDS).
func TestPowerCut_Outbox(t *testing.T) {
	r := runOutboxCuts(t, rounds(t, 30), false)
	t.Logf("power cuts %d (%d torn): %d appends acknowledged, %d deletes acknowledged, lost %d, deleted-but-back %d; unsynced pages dropped %d, torn pages kept %d",
		r.rounds, r.torn, r.acked, r.deleted, r.lost, r.resurrected, r.pagesDropped, r.pagesKept)
}

// TestPowerCut_MutationNoFsync: the same harness with the outbox's fsync
// off (bbolt NoSync) must lose acknowledged records — proof that the
// harness can fail, so it can never silently become a no-op.
func TestPowerCut_MutationNoFsync(t *testing.T) {
	r := runOutboxCuts(t, 6, true)
	t.Logf("without fsync: %d power cuts, %d appends acknowledged, %d lost", r.rounds, r.acked, r.lost)
	if r.lost == 0 {
		t.Fatalf("the outbox without fsync lost nothing across %d cuts: the harness does not test durability", r.rounds)
	}
}
