package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
)

// TestMixedPaths_EveryPair (issue 27): results and their photos over
// every pair of paths — MQTT alone, a stick alone, MQTT cut by a SIGKILL
// then a stick, a stick then MQTT, a stick imported then MQTT before the
// receipt comes back — with the device process killed mid-upload, then a
// last sync. Both sides counted: every result stored once at the hub,
// every photo whole and byte-identical there, nothing left on the device.
// OUTPOST_MIXED_ROUNDS (make chaos: 10) repeats each scenario.
func TestMixedPaths_EveryPair(t *testing.T) {
	rounds := 1
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_MIXED_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	bin := filepath.Join(t.TempDir(), "outpost")
	build := exec.Command("go", "build", "-o", bin, "./cmd/outpost")
	build.Dir = testutil.Root(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	scenarios := []struct {
		name  string
		steps []string
	}{
		{"mqtt", []string{"mqtt-kill", "mqtt"}},
		{"stick", []string{"export", "import", "receipt"}},
		{"mqtt-cut-then-stick", []string{"mqtt-kill", "export", "import", "receipt"}},
		{"stick-then-mqtt", []string{"export", "mqtt-kill", "mqtt", "import", "receipt"}},
		{"stick-imported-then-mqtt", []string{"export", "import", "mqtt-kill", "receipt"}},
	}
	broker := testutil.StartMosquitto(t, false)
	proxy := testutil.StartProxy(t, broker.Addr())
	proxy.Rate(48 << 10) // the photos take seconds: room for a kill mid-upload
	var lost, photosLost, dups, left, killsMid int
	for _, sc := range scenarios {
		for round := range rounds {
			r := newStickRig(t, fmt.Sprintf("kiosk-%s-%d", sc.name, round), map[string]any{"evidence": "always", "form": "original"})
			m := runMixed(t, bin, r, broker, proxy, sc.steps)
			lost += m.lost
			photosLost += m.photosLost
			dups += m.dups
			left += m.left
			killsMid += m.killsMid
			if m.lost+m.photosLost+m.dups+m.left > 0 {
				t.Errorf("%s round %d: %d results lost, %d photos not whole at the hub, %d stored twice, %d records left on the device",
					sc.name, round, m.lost, m.photosLost, m.dups, m.left)
			}
		}
	}
	t.Logf("mixed paths: %d scenarios × %d rounds, %d SIGKILLs landed mid-upload: %d results lost, %d photos not whole, %d stored twice, %d left on devices",
		len(scenarios), rounds, killsMid, lost, photosLost, dups, left)
}

type mixedCounts struct{ lost, photosLost, dups, left, killsMid int }

func runMixed(t *testing.T, bin string, r *stickRig, broker *testutil.Broker, proxy *testutil.Proxy, steps []string) mixedCounts {
	t.Helper()
	samples := filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples")
	var paths []string
	photos := map[string][]byte{}
	for _, f := range []string{"rust.jpg", "blight.jpg", "mosaic.jpg", "healthy.jpg", "leaf_spot.jpg"} {
		p := filepath.Join(samples, f)
		paths = append(paths, p)
		photos[f], _ = os.ReadFile(p)
	}
	if _, errOut, code := run(t, nil, append([]string{"infer", "--config", r.cfg, "--models-dir", testutil.ModelsDir(t), "-m", "crop-disease"}, paths...)...); code != ExitOK {
		t.Fatalf("infer: %s", errOut)
	}
	dbPath := filepath.Join(r.hubDir, "collector.db")
	var col *testutil.Hub
	var c *hub.Collector
	startHub := func() {
		var err error
		if c, err = hub.Open(dbPath, hub.CollectorOptions{Key: r.hubKey, Logger: testutil.Logger(t)}); err != nil {
			t.Fatal(err)
		}
		col = testutil.RunCollector(t, c, broker.URL())
	}
	startHub()
	var counts mixedCounts
	doSync := func(kill bool) {
		cmd := exec.Command(bin, "sync", "--once", "--broker", proxy.URL(), "--config", r.cfg, "--timeout", "90s")
		cmd.Env = append(os.Environ(), "OUTPOST_ORT_LIB="+testutil.LibPath(t))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if kill {
			// Mid-upload: once the hub holds some photo bytes (or the sync
			// ended first, which the count below says).
			before := c.Stats().EvBytes
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) {
				if c.Stats().EvBytes > before {
					cmd.Process.Signal(syscall.SIGKILL)
					counts.killsMid++
					break
				}
				select {
				case err := <-done:
					done <- err
					deadline = time.Time{}
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
		err := <-done
		if !kill && err != nil {
			t.Fatalf("sync --once: %v\n%s", err, out.String())
		}
	}
	for _, s := range steps {
		switch s {
		case "mqtt-kill":
			doSync(true)
		case "mqtt":
			doSync(false)
		case "export":
			if _, errOut, code := run(t, nil, "bundle", "export", "--out", r.stick, "--config", r.cfg); code != ExitOK && !strings.Contains(errOut, "nothing") {
				t.Fatalf("export: %s", errOut)
			}
		case "import":
			col.Stop() // a bbolt store is the running collector's
			if _, errOut, code := run(t, nil, "collect", "import", r.stick, "--data-dir", r.hubDir, "--key", filepath.Join(r.dir, "hub.key")); code != ExitOK {
				t.Fatalf("import: %s", errOut)
			}
			startHub()
		case "receipt":
			if _, errOut, code := run(t, nil, "bundle", "receipt", r.stick, "--config", r.cfg); code != ExitOK {
				t.Fatalf("receipt: %s", errOut)
			}
		}
	}
	doSync(false) // whatever is left goes the usual way
	col.Stop()

	st, err := hub.OpenBolt(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	n, _ := st.Count(ctx)
	var ids []outbox.ID
	st.Each(ctx, func(sr hub.StoredResult) error { ids = append(ids, sr.Record.ID); return nil })
	whole := 0
	for _, id := range ids {
		_, ph, _ := st.Evidence(ctx, deviceOf(r.cfg), id)
		for _, want := range photos {
			if ph != nil && bytes.Equal(ph, want) {
				whole++
				break
			}
		}
	}
	out, _, _ := run(t, nil, "queue", "stats", "--json", "--config", r.cfg)
	var qs outbox.Stats
	json.Unmarshal([]byte(out), &qs)
	counts.lost = max(0, len(photos)-n)
	counts.dups = max(0, n-len(photos))
	counts.photosLost = len(photos) - whole
	counts.left = int(qs.Count)
	return counts
}

func deviceOf(cfg string) string {
	var c struct {
		Device string `json:"device_id"`
	}
	b, _ := os.ReadFile(cfg)
	json.Unmarshal(b, &c)
	return c.Device
}
