package outbox

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	gosync "sync"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes this test binary as a child that appends under
// load and reports every Append that returned success on stdout; the parent
// SIGKILLs it at a random moment, reopens the file and checks the claims.
func TestMain(m *testing.M) {
	if path := os.Getenv("OUTBOX_CRASH_CHILD"); path != "" {
		crashChild(path)
		return
	}
	os.Exit(m.Run())
}

const crashProducers = 8

func crashChild(path string) {
	round := os.Getenv("OUTBOX_CRASH_ROUND")
	ob, err := Open(path, Options{})
	if err != nil {
		fmt.Println("open-error", err)
		os.Exit(3)
	}
	var mu gosync.Mutex
	out := bufio.NewWriter(os.Stdout)
	say := func(line string) {
		mu.Lock()
		out.WriteString(line)
		out.Flush() // one write(2) per ack: what the parent reads was really acknowledged
		mu.Unlock()
	}
	say("ready\n")
	var wg gosync.WaitGroup
	for p := 0; p < crashProducers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; ; i++ {
				r := &Record{Device: "crash", Model: "m", Task: "t", Priority: Priority(i % NumPriorities),
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
	wg.Wait()
	os.Exit(4)
}

// selfCommand runs this test binary again. OUTBOX_CRASH_EXEC prefixes a
// wrapper: under `go test -exec qemu-aarch64-static` the arm64 binary cannot
// exec itself without binfmt_misc, so the wrapper is qemu again.
func selfCommand(args ...string) *exec.Cmd {
	argv := append(strings.Fields(os.Getenv("OUTBOX_CRASH_EXEC")), os.Args[0])
	argv = append(argv, args...)
	return exec.Command(argv[0], argv[1:]...)
}

func crashRounds(t *testing.T) int {
	if s := os.Getenv("OUTPOST_CRASH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("OUTPOST_CRASH_ROUNDS=%q: %v", s, err)
		}
		return n
	}
	return 200
}

// TestCrash_KillDuringAppend: ≥200 rounds of SIGKILL mid-append (1000 in
// `make chaos`). After each: the DB opens, every acknowledged Append is
// present exactly once with its payload, and each producer's records are in
// the order it appended them.
func TestCrash_KillDuringAppend(t *testing.T) {
	rounds := crashRounds(t)
	path := filepath.Join(t.TempDir(), "outbox.db")
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	var totalAcked, totalPresent, lost int
	for round := 0; round < rounds; round++ {
		cmd := selfCommand("-test.run=^$")
		cmd.Env = append(os.Environ(), "OUTBOX_CRASH_CHILD="+path, fmt.Sprintf("OUTBOX_CRASH_ROUND=%d", round))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[string]string{} // id -> payload
		ready := make(chan struct{})
		readDone := make(chan error, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			first := true
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				switch {
				case first && len(f) == 1 && f[0] == "ready":
					close(ready)
					first = false
				case len(f) == 3 && f[0] == "ok":
					acked[f[1]] = f[2]
				case len(f) > 0 && (f[0] == "error" || f[0] == "open-error"):
					readDone <- fmt.Errorf("child: %s", sc.Text())
					return
				}
			}
			readDone <- nil
		}()
		select {
		case <-ready:
		case err := <-readDone:
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child died before ready: %v", round, err)
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("round %d: child not ready", round)
		}
		time.Sleep(time.Duration(1+rng.Intn(40)) * time.Millisecond) // the scenario: kill -9 at a random moment of the writes
		cmd.Process.Signal(syscall.SIGKILL)
		if err := <-readDone; err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		cmd.Wait()

		ob, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		present := map[string]string{}
		lastI := map[string]int{} // producer -> last index seen, per priority order checked below
		var prevSeq [NumPriorities]uint64
		var ids []ID
		err = ob.Each(func(r *Record) error {
			if _, dup := present[r.ID.String()]; dup {
				return fmt.Errorf("id %s stored twice", r.ID)
			}
			present[r.ID.String()] = string(r.Output)
			ids = append(ids, r.ID)
			// Within one priority, key order is ID order is append order:
			// Seq must rise, and each producer's index must rise.
			if r.Seq <= prevSeq[r.Priority] {
				return fmt.Errorf("seq %d after %d in priority %s", r.Seq, prevSeq[r.Priority], r.Priority)
			}
			prevSeq[r.Priority] = r.Seq
			parts := strings.Split(string(r.Output), "/")
			key := parts[1] + "/" + r.Priority.String()
			i, _ := strconv.Atoi(parts[2])
			if last, ok := lastI[key]; ok && i <= last {
				return fmt.Errorf("producer %s: record %d after %d", key, i, last)
			}
			lastI[key] = i
			return nil
		})
		if err != nil {
			ob.Close()
			t.Fatalf("round %d: %v", round, err)
		}
		for id, payload := range acked {
			if got, ok := present[id]; !ok {
				lost++
				t.Errorf("round %d: acknowledged %s (%s) is missing", round, id, payload)
			} else if got != payload {
				t.Errorf("round %d: %s holds %q, acknowledged %q", round, id, got, payload)
			}
		}
		totalAcked += len(acked)
		totalPresent += len(present)
		// Deliver everything (as the uplink would) so the file stays small
		// and the next child also exercises reopening after deletes.
		if n, err := ob.Ack(ids); err != nil || n != len(ids) {
			t.Fatalf("round %d: ack %d/%d: %v", round, n, len(ids), err)
		}
		ob.Close()
		if t.Failed() {
			break
		}
	}
	t.Logf("crash rounds %d: acknowledged appends %d, present after kill %d (the difference were in flight, never acknowledged), lost %d",
		rounds, totalAcked, totalPresent, lost)
	if totalAcked == 0 {
		t.Fatal("no append was acknowledged in any round: the test proved nothing")
	}
}
