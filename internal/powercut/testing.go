package powercut

import (
	"bufio"
	"os/exec"
	"testing"
	"time"
)

// MountT mounts a power-cut filesystem in a temp dir for one test and
// unmounts it when the test ends; it fails the test where FUSE is missing.
func MountT(t testing.TB) *FS {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	f, err := Mount(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Unmount() })
	return f
}

// RunChild starts cmd (a child process writing to the mount), waits for
// its "ready" line, SIGKILLs it after d, and hands every later stdout line
// to line — each line the child printed after an operation returned, so
// what the test may hold it to. It returns once the child is gone.
func RunChild(t testing.TB, cmd *exec.Cmd, d time.Duration, line func(string)) {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	ready := make(chan bool, 1)
	go func() { ready <- sc.Scan() && sc.Text() == "ready" }()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child %v did not say ready", cmd.Args)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child %v never became ready", cmd.Args)
	}
	kill := time.AfterFunc(d, func() { cmd.Process.Kill() })
	defer kill.Stop()
	for sc.Scan() {
		line(sc.Text())
	}
	cmd.Wait()
}
