package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond every 10 ms until it holds, failing the test with
// what after timeout: the one way tests wait on a condition (no bare
// sleeps). It reports how long the condition took.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
