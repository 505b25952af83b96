package device

import (
	"context"
	gosync "sync"
	"time"
)

// maintainEvery is how often the device's housekeeping jobs run.
const maintainEvery = time.Minute

// Run does the device's background work until ctx ends, and returns when
// every job has stopped: the uplink (sync, evidence, reviews, warnings,
// model updates), the watch over a just-activated model update, and the
// housekeeping — records past their TTL expired, the wall clock checked,
// the outbox kept inside its cap. Whatever hosts a device (the daemon, a
// test, another program) calls this one method; the commands that only
// open a device for a moment (infer, queue, status) do not.
func (d *Device) Run(ctx context.Context) {
	jobs := []func(context.Context){d.WatchActivation, d.chooseVariantsOnce, d.every(maintainEvery, d.expireRecords),
		d.every(maintainEvery, d.checkClock), d.every(maintainEvery, d.stayInsideCap)}
	if d.up != nil {
		jobs = append(jobs, func(ctx context.Context) { d.up.Run(ctx) })
	}
	var wg gosync.WaitGroup
	for _, job := range jobs {
		wg.Add(1)
		go func() { defer wg.Done(); job(ctx) }()
	}
	wg.Wait()
}

// every runs job on each tick until ctx ends.
func (d *Device) every(period time.Duration, job func(now time.Time)) func(context.Context) {
	return func(ctx context.Context) {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				job(now)
			}
		}
	}
}

// expireRecords drops results past their time to live (Config TTLs).
func (d *Device) expireRecords(now time.Time) { d.ob.Expire(now) }

// checkClock notices a wall-clock jump and remembers the time (clock.json).
func (d *Device) checkClock(time.Time) { d.Clock() }

// stayInsideCap compacts the outbox file when deletes left it over its cap.
func (d *Device) stayInsideCap(time.Time) {
	if did, err := d.ob.Trim(); err != nil {
		d.log.Warn("outbox: compaction to stay inside the cap failed", "err", err)
	} else if did {
		d.log.Info("outbox: compacted to stay inside its cap")
	}
}
