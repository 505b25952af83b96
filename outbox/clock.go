package outbox

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	gosync "sync"
	"time"
)

// BootClock reports this boot's ID and the time since it: on Linux the
// kernel's boot ID and CLOCK_BOOTTIME (counts suspend, never set by
// anyone), elsewhere a random ID per process and the time since it
// started. Records carry both; ages and TTLs use them, not the wall clock.
func BootClock() (ID, time.Duration) {
	bootOnce.Do(initBoot)
	if d, ok := sinceBoot(); ok {
		return bootID, d
	}
	return bootID, time.Since(procStart)
}

var (
	bootOnce  gosync.Once
	bootID    ID
	procStart = time.Now()
)

func initBoot() {
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		if raw, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(b)), "-", "")); err == nil && len(raw) == 16 {
			copy(bootID[:], raw)
			if _, ok := sinceBoot(); ok {
				return
			}
		}
	}
	rand.Read(bootID[:])
}

// age is how long ago r was made, by the clock that cannot jump: the
// boot clock within this boot; for a record of an earlier boot, at least
// this boot's length (the time it spent before is unknown); for a record
// written before records carried a boot (no Boot), the wall clock.
func age(r *Record, now time.Time, boot ID, mono time.Duration) time.Duration {
	switch {
	case r.Boot == ID{}:
		return max(now.Sub(r.Created), 0)
	case r.Boot == boot:
		return max(mono-r.Mono, 0)
	default:
		return mono
	}
}
