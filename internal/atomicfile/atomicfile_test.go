package atomicfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
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

func TestWrite_ReplacesAndCleansUp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cfg.json")
	if err := WriteBytes(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteBytes(path, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	st, _ := os.Stat(path)
	if string(b) != "two" || st.Mode().Perm() != 0o640 {
		t.Fatalf("got %q mode %v, want \"two\" 0640", b, st.Mode().Perm())
	}
	// A failing writer leaves the old file and no temporary behind.
	_, err := Write(path, 0o600, func(w io.Writer) (int, error) {
		w.Write([]byte("half"))
		return 4, errors.New("disk on fire")
	})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v should name the file and the cause", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "two" {
		t.Fatalf("a failed write changed the file to %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
	if err := WriteBytes(filepath.Join(dir, "no", "such", "dir"), nil, 0o600); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
}

// TestAtomicPowerCutChild is the child of the power-cut tests: it rewrites
// the file with an increasing number (padded over several pages, so a torn
// write would show) and prints each number once Write has returned.
func TestAtomicPowerCutChild(t *testing.T) {
	path := os.Getenv("POWERCUT_ATOMIC")
	if path == "" {
		return
	}
	noDirSync = os.Getenv("POWERCUT_NODIRSYNC") == "1"
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(w, "ready")
	w.Flush()
	// Numbering goes on from what the file holds: a child that started
	// again at 1 and wrote it whole before the parent read its "wrote"
	// line looked like the file going back (CI flagged a durable write).
	start := 1
	if b, err := os.ReadFile(path); err == nil {
		if n, err := parse(b); err == nil {
			start = n + 1
		}
	}
	for i := start; ; i++ {
		if err := WriteBytes(path, content(i), 0o600); err != nil {
			fmt.Fprintln(w, "error", err)
			w.Flush()
			os.Exit(3)
		}
		fmt.Fprintln(w, "wrote", i)
		w.Flush()
	}
}

// content is n, then 3 pages of filler that names n (a mix of two
// versions does not parse).
func content(n int) []byte {
	head := fmt.Sprintf("%d\n", n)
	return append([]byte(head), bytes.Repeat([]byte(head), 3*powercut.PageSize/len(head))...)
}

func parse(b []byte) (int, error) {
	head, _, ok := bytes.Cut(b, []byte("\n"))
	n, err := strconv.Atoi(string(head))
	if !ok || err != nil || !bytes.Equal(b, content(n)) {
		return 0, fmt.Errorf("not one whole version (%d bytes, starts %q)", len(b), b[:min(len(b), 16)])
	}
	return n, nil
}

// TestPowerCut_AtomicWrite: after every cut (every other one torn) the
// file is one whole version, at least the last one Write acknowledged —
// never a mix, never missing, never older. 20 rounds in make test, 1,000
// in make chaos (OUTPOST_POWERCUT_ROUNDS).
func TestPowerCut_AtomicWrite(t *testing.T) {
	rounds := 20
	if s := os.Getenv("OUTPOST_POWERCUT_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	if back := atomicCuts(t, rounds, false); back > 0 {
		t.Fatalf("the file went back after %d of %d cuts", back, rounds)
	}
}

// TestPowerCut_AtomicWriteMutation: the same harness with the directory
// fsync off must see the file go back — the harness can fail.
func TestPowerCut_AtomicWriteMutation(t *testing.T) {
	if back := atomicCuts(t, 10, true); back == 0 {
		t.Fatal("without the directory fsync the file never went back: the harness does not test it")
	} else {
		t.Logf("without the directory fsync: the file went back (or vanished) after %d of 10 cuts", back)
	}
}

func atomicCuts(t *testing.T, rounds int, noSync bool) (back int) {
	fsys := powercut.MountT(t)
	dir := filepath.Join(fsys.Dir(), "etc")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(fsys.Dir()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state.json")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	last, torn := 0, 0
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestAtomicPowerCutChild$")
		cmd.Env = append(os.Environ(), "POWERCUT_ATOMIC="+path, "POWERCUT_NODIRSYNC="+map[bool]string{true: "1", false: "0"}[noSync])
		powercut.RunChild(t, cmd, time.Duration(10+rng.IntN(60))*time.Millisecond, func(l string) {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "wrote" {
				last, _ = strconv.Atoi(f[1])
			} else if len(f) > 0 && f[0] == "error" {
				t.Errorf("round %d: child: %s", round, l)
			}
		})
		isTorn := round%2 == 1
		if isTorn {
			torn++
		}
		if _, err := fsys.Cut(isTorn, rng); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		got := 0
		if err == nil {
			got, err = parse(b)
		}
		switch {
		case err != nil && last > 0:
			back++
			if !noSync {
				t.Errorf("round %d: after the cut: %v (the last acknowledged write was %d)", round, err, last)
			}
			last = 0
		case got < last:
			back++
			if !noSync {
				t.Errorf("round %d: after the cut the file holds %d, the last acknowledged write was %d", round, got, last)
			}
			last = got
		}
		// Leftover temporaries are the only debris a cut may leave.
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.Name() != "state.json" && !strings.HasPrefix(e.Name(), ".state.json.tmp-") {
				t.Errorf("round %d: unexpected file %s", round, e.Name())
			}
		}
	}
	t.Logf("atomic-write power cuts %d (%d torn): last acknowledged version %d; went back %d times", rounds, torn, last, back)
	return back
}
