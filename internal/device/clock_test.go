package device

import (
	"testing"
	"time"

	"github.com/outpost-edge/outpost/outbox"
)

// TestClockWatch: a wall clock that moves differently from the boot clock
// is a jump (forwards or backwards), noticed in one run and across a
// reboot (backwards only: the time powered off is unknown), and counted
// in a state that survives restarts.
func TestClockWatch(t *testing.T) {
	dir := t.TempDir()
	wall := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	boot, mono := outbox.ID{1}, time.Hour
	clock := func() (outbox.ID, time.Duration) { return boot, mono }
	now := func() time.Time { return wall }
	w := newClockWatch(dir, clock, now)
	mono += time.Minute
	wall = wall.Add(time.Minute + 40*24*time.Hour) // NTP arrives
	if st := w.Check(); st.Jumps != 1 || st.LastJump.By < 40*24*time.Hour-time.Minute || st.LastJump.Reboot {
		t.Fatalf("forward jump: %+v %+v", st, st.LastJump)
	}
	mono += 10 * time.Minute
	wall = wall.Add(10 * time.Minute)
	if st := w.Check(); st.Jumps != 1 {
		t.Fatalf("an honest 10 minutes counted as a jump: %+v", st)
	}
	// Reboot without an RTC: the clock comes back a month behind.
	boot, mono = outbox.ID{2}, time.Minute
	wall = wall.Add(-30 * 24 * time.Hour)
	w = newClockWatch(dir, clock, now)
	if st := w.Check(); st.Jumps != 2 || !st.LastJump.Reboot || st.LastJump.By > -29*24*time.Hour {
		t.Fatalf("backward jump across a reboot: %+v %+v", st, st.LastJump)
	}
	// A reboot after a normal power cut (the clock moved on): no jump.
	boot, mono = outbox.ID{3}, time.Minute
	wall = wall.Add(2 * time.Hour)
	if st := newClockWatch(dir, clock, now).Check(); st.Jumps != 2 {
		t.Fatalf("a reboot with a sane clock counted as a jump: %+v", st)
	}
}
