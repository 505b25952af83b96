package device

import (
	"encoding/json"
	"path/filepath"
	gosync "sync"
	"time"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
	"github.com/outpost-edge/outpost/outbox"
)

// ClockFile (in the data dir) remembers the last wall time the device saw
// and where the boot clock stood then, so a jump is noticed across a
// restart too (a Pi without an RTC boots with its clock wherever it was).
const ClockFile = "clock.json"

// JumpThreshold: a wall clock that moved this much more (or less) than
// the boot clock counts as a jump.
const JumpThreshold = 2 * time.Minute

// ClockState is what /v1/status and the status message say about time.
type ClockState struct {
	Boot     outbox.ID     `json:"boot"`
	Mono     time.Duration `json:"mono_ns"`
	Wall     time.Time     `json:"wall"`
	Jumps    int           `json:"jumps"`               // noticed since the data dir was made
	LastJump *ClockJump    `json:"last_jump,omitempty"` // the latest
}

// ClockJump is one noticed jump: when (wall time after it) and by how much
// (positive: forwards). Across a reboot only a backwards jump shows, and
// By is then a lower bound.
type ClockJump struct {
	At     time.Time     `json:"at"`
	By     time.Duration `json:"by_ns"`
	Reboot bool          `json:"across_reboot,omitempty"`
}

type clockWatch struct {
	mu    gosync.Mutex
	path  string
	clock func() (outbox.ID, time.Duration)
	now   func() time.Time
	st    ClockState
	saved time.Duration // boot clock at the last save
}

type clockFile struct {
	Boot     outbox.ID     `json:"boot"`
	Mono     time.Duration `json:"mono_ns"`
	Wall     time.Time     `json:"wall"`
	Jumps    int           `json:"jumps"`
	LastJump *ClockJump    `json:"last_jump,omitempty"`
}

func newClockWatch(dataDir string, clock func() (outbox.ID, time.Duration), now func() time.Time) *clockWatch {
	w := &clockWatch{path: filepath.Join(dataDir, ClockFile), clock: clock, now: now}
	var f clockFile
	if safefile.LoadJSON(w.path, 64<<10, &f) == nil {
		w.st = ClockState(f)
	}
	w.Check()
	return w
}

// Check compares the wall clock with the boot clock since the last check
// and records a jump; it saves the state.
func (w *clockWatch) Check() ClockState {
	w.mu.Lock()
	defer w.mu.Unlock()
	boot, mono := w.clock()
	wall := w.now()
	if !w.st.Wall.IsZero() {
		var j *ClockJump
		if w.st.Boot == boot {
			expected := w.st.Wall.Add(mono - w.st.Mono)
			if by := wall.Sub(expected); by > JumpThreshold || by < -JumpThreshold {
				j = &ClockJump{At: wall, By: by}
			}
		} else if by := wall.Sub(w.st.Wall); by < -JumpThreshold {
			j = &ClockJump{At: wall, By: by, Reboot: true}
		}
		if j != nil {
			w.st.Jumps++
			w.st.LastJump = j
		}
	}
	jumped := w.st.LastJump != nil && w.st.LastJump.At.Equal(wall)
	w.st.Boot, w.st.Mono, w.st.Wall = boot, mono, wall
	// Saved on a jump and otherwise at most once a minute: the kiosk asks
	// every few seconds, and an SD card should not take an fsync each time.
	if jumped || w.saved == 0 || mono-w.saved >= time.Minute || mono < w.saved {
		b, _ := json.Marshal(clockFile(w.st))
		if atomicfile.WriteBytes(w.path, b, 0o640) == nil {
			w.saved = mono
		}
	}
	return w.st
}

// Clock checks the wall clock against the boot clock and returns the
// device's time state (nil without a data dir).
func (d *Device) Clock() *ClockState {
	if d.clock == nil {
		return nil
	}
	st := d.clock.Check()
	return &st
}
