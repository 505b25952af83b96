package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
)

// TestMixedPaths_PhotoHalfByMQTTThenBundle (issue 27): a photo half
// uploaded over MQTT and then carried on a stick was lost — the hub kept
// 163,840 of 464,415 bytes, refused the bundle's whole piece, the receipt
// named it refused and the device deleted it. Now: results over MQTT, the
// link cut mid-photo, the rest on a stick: every result stored once, every
// photo whole and byte-identical at the hub, nothing left on the device.
func TestMixedPaths_PhotoHalfByMQTTThenBundle(t *testing.T) {
	r := newStickRig(t, "kiosk-m", map[string]any{"evidence": "always", "form": "original"})
	dir, hubDir, stick, cfg, hubKey := r.dir, r.hubDir, r.stick, r.cfg, r.hubKey
	samples := filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples")
	var photos [][]byte
	var paths []string
	for _, f := range []string{"rust.jpg", "blight.jpg", "mosaic.jpg"} {
		p := filepath.Join(samples, f)
		paths = append(paths, p)
		ph, _ := os.ReadFile(p)
		photos = append(photos, ph)
	}
	if _, errOut, code := run(t, nil, append([]string{"infer", "--config", cfg, "--models-dir", testutil.ModelsDir(t), "-m", "crop-disease"}, paths...)...); code != ExitOK {
		t.Fatalf("infer: %s", errOut)
	}

	// MQTT through a slow link, cut once the hub holds part of a photo.
	broker := testutil.StartMosquitto(t, false)
	proxy := testutil.StartProxy(t, broker.Addr())
	proxy.Rate(8 << 10)
	c, err := hub.Open(filepath.Join(hubDir, "collector.db"), hub.CollectorOptions{Key: hubKey, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	col := testutil.RunCollector(t, c, broker.URL())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"sync", "--once", "--broker", proxy.URL(), "--config", cfg, "--timeout", "120s"}, nil, &bytes.Buffer{}, &bytes.Buffer{})
	}()
	testutil.Eventually(t, 60*time.Second, "no photo bytes reached the hub", func() bool { return c.Stats().EvBytes >= 16<<10 })
	cancel() // the link goes; the device stops mid-photo
	proxy.Reset()
	<-done
	col.Stop()
	partial := 0
	if st, err := hub.OpenBolt(filepath.Join(hubDir, "collector.db")); err == nil {
		if n, _ := st.Count(context.Background()); n != 3 {
			t.Fatalf("results at the hub after MQTT: %d, want 3", n)
		}
		l, _ := st.EvidenceList(context.Background())
		partial = 3 - len(l)
		st.Close()
	}
	if partial == 0 {
		t.Fatal("every photo went whole before the cut: the test cut nothing")
	}

	// The rest on a stick: export, import at the hub, receipt back.
	if _, errOut, code := run(t, nil, "bundle", "export", "--out", stick, "--config", cfg); code != ExitOK {
		t.Fatalf("export: %s", errOut)
	}
	if _, errOut, code := run(t, nil, "collect", "import", stick, "--data-dir", hubDir, "--key", filepath.Join(dir, "hub.key")); code != ExitOK {
		t.Fatalf("import: %s", errOut)
	}
	if _, errOut, code := run(t, nil, "bundle", "receipt", stick, "--config", cfg); code != ExitOK {
		t.Fatalf("receipt: %s", errOut)
	}

	st, err := hub.OpenBolt(filepath.Join(hubDir, "collector.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, _ := st.Count(context.Background())
	whole := 0
	var ids []outbox.ID
	st.Each(context.Background(), func(r hub.StoredResult) error { ids = append(ids, r.Record.ID); return nil })
	for _, id := range ids {
		if _, ph, _ := st.Evidence(context.Background(), "kiosk-m", id); ph != nil {
			for _, want := range photos {
				if bytes.Equal(ph, want) {
					whole++
				}
			}
		}
	}
	out, _, _ := run(t, nil, "queue", "stats", "--json", "--config", cfg)
	var qs outbox.Stats
	json.Unmarshal([]byte(out), &qs)
	if n != 3 || whole != 3 || qs.Count != 0 {
		t.Fatalf("after MQTT cut mid-photo (%d photos not whole) and a stick: %d results at the hub, %d photos whole, %d records left on the device", partial, n, whole, qs.Count)
	}
	t.Logf("MQTT cut with %d photo(s) not whole at the hub (one part-way), the rest by stick: 3 results stored once, 3 photos whole, 0 left on the device", partial)
}
