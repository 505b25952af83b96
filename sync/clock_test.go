package sync_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestClock_HubCorrectsRecordTimes: a device whose wall clock is 40 days
// ahead (a Pi that booted with a wrong fake-hwclock, then jumped) syncs
// through a real mosquitto. The hub anchors the device's boot to its own
// clock from the live status (boot ID and time since boot) and exports,
// beside the device's 40-days-ahead `created`, a corrected time within
// seconds of the truth, flagged trusted; a record from a boot the hub
// never saw keeps its raw time, flagged untrusted.
func TestClock_HubCorrectsRecordTimes(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	h := startCollector(t, filepath.Join(t.TempDir(), "hub.db"), broker.URL())
	skew := 40 * 24 * time.Hour
	ahead := func() time.Time { return time.Now().Add(skew) }
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{Now: ahead})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	ctx := context.Background()
	made := time.Now()
	for i := 0; i < 3; i++ {
		if _, err := ob.Append(ctx, &outbox.Record{Device: "pi-clock", Model: "m", Task: "t", Output: []byte(`{}`)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A record from a boot the hub has never heard of.
	if _, err := ob.Append(ctx, &outbox.Record{Device: "pi-clock", Model: "m", Task: "t", Output: []byte(`{}`), Boot: outbox.ID{9}, Mono: time.Hour}, nil); err != nil {
		t.Fatal(err)
	}
	up, err := osync.NewUplink(ob, dialer(t, broker.URL(), true), osync.UplinkOptions{Device: "pi-clock", Now: ahead, Logger: logger(t), ClockJumps: func() int { return 1 }})
	if err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := up.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	testutil.Eventually(t, 10*time.Second, "the hub to anchor the boot", func() bool {
		devs, _ := h.C.Devices()
		return len(devs) == 1 && len(devs[0].Boots) == 1 && devs[0].ClockJumps == 1
	})
	if _, err := hub.ExportCSV(ctx, h.C.Store(), nil, &out); err != nil {
		t.Fatal(err)
	}
	rows, _ := csv.NewReader(strings.NewReader(out.String())).ReadAll()
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	if len(rows) != 5 || rows[0][col["created_corrected_utc"]] != "created_corrected_utc" {
		t.Fatalf("export:\n%s", out.String())
	}
	trusted := 0
	for _, r := range rows[1:] {
		created, _ := time.Parse(hub.CSVTime, r[col["created_utc"]])
		corr, _ := time.Parse(hub.CSVTime, r[col["created_corrected_utc"]])
		switch r[col["time_trusted"]] {
		case "true":
			trusted++
			if d := created.Sub(made); d < skew-time.Minute || d > skew+time.Minute {
				t.Fatalf("raw created %v is not the device's 40-days-ahead time", created)
			}
			if d := corr.Sub(made); d < -5*time.Second || d > 5*time.Second {
				t.Fatalf("corrected time %v is %v from when the record was made", corr, d)
			}
		case "false":
			if !corr.Equal(created) {
				t.Fatalf("an untrusted record's corrected time must be its raw time: %v vs %v", corr, created)
			}
		}
	}
	if trusted != 3 {
		t.Fatalf("%d records trusted, want 3 (the 4th is from a boot the hub never saw)", trusted)
	}
}
