package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestBundles_Sneakernet: results go to the hub on a USB stick and come
// back as a signed receipt that deletes exactly what the hub has. A full
// stick (a pulled one likewise) leaves no complete-looking file; a
// tampered or truncated bundle is refused; receipts for another device,
// for a bundle never written, or naming records the bundle did not carry
// delete nothing; MQTT and bundles for the same records double nothing.
func TestBundles_Sneakernet(t *testing.T) {
	r := newStickRig(t, "kiosk-b", map[string]any{"evidence": "always"})
	dir, hubDir, stick, cfg, hubKey := r.dir, r.hubDir, r.stick, r.cfg, r.hubKey
	samples := filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples")
	infer := func(files ...string) {
		t.Helper()
		var paths []string
		for _, f := range files {
			paths = append(paths, filepath.Join(samples, f))
		}
		if _, errOut, code := run(t, nil, append([]string{"infer", "--config", cfg, "--models-dir", testutil.ModelsDir(t), "-m", "crop-disease"}, paths...)...); code != ExitOK {
			t.Fatalf("infer: %s", errOut)
		}
	}
	queued := func() int {
		out, _, _ := run(t, nil, "queue", "stats", "--json", "--config", cfg)
		var st outbox.Stats
		json.Unmarshal([]byte(out), &st)
		return int(st.Count)
	}
	infer("rust.jpg", "blight.jpg", "healthy.jpg")
	if n := queued(); n != 6 { // 3 results + 3 evidence records ("always")
		t.Fatalf("queued %d, want 6", n)
	}

	// A full stick: the write fails clearly and leaves nothing that looks complete.
	small := filepath.Join(dir, "small")
	os.MkdirAll(small, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", small).CombinedOutput(); err != nil {
		t.Fatalf("mount a 16 KiB stick (tests run as root): %v %s", err, out)
	}
	defer exec.Command("umount", small).Run()
	if _, errOut, code := run(t, nil, "bundle", "export", "--out", small, "--config", cfg); code == ExitOK || !strings.Contains(errOut, "no space left") {
		t.Fatalf("export to a full stick: %d %s", code, errOut)
	}
	if left, _ := os.ReadDir(small); len(left) != 0 {
		t.Fatalf("a full stick kept %v", left)
	}

	// What a stick pulled out mid-export leaves: gone at the next export (issue 27).
	stale := filepath.Join(stick, ".outpost-kiosk-b-x"+osync.BundleExt+".tmp-123")
	os.WriteFile(stale, []byte("half a bundle"), 0o644)
	out, errOut, code := run(t, nil, "bundle", "export", "--out", stick, "--config", cfg)
	if code != ExitOK || !strings.Contains(out, "3 results, 3 photos") {
		t.Fatalf("export: %s %s", out, errOut)
	}
	if exists(stale) {
		t.Fatal("an interrupted export's temp file is still on the stick")
	}
	bundles, _ := filepath.Glob(filepath.Join(stick, "*"+osync.BundleExt))
	if len(bundles) != 1 || queued() != 6 {
		t.Fatalf("bundles %v, queued %d: records must stay until the receipt", bundles, queued())
	}
	fi, _ := os.Stat(bundles[0])
	t.Logf("bundle of 3 results + 3 photos: %d bytes", fi.Size())

	// Some of the same records go over MQTT before the stick reaches the hub.
	broker := testutil.StartMosquitto(t, false)
	c, err := hub.Open(filepath.Join(hubDir, "collector.db"), hub.CollectorOptions{Key: hubKey})
	if err != nil {
		t.Fatal(err)
	}
	col := testutil.RunCollector(t, c, broker.URL())
	if out, errOut, code := run(t, nil, "sync", "--once", "--broker", broker.URL(), "--config", cfg, "--timeout", "60s"); code != ExitOK {
		t.Fatalf("sync: %s %s", out, errOut)
	}
	col.Stop()
	infer("leaf_spot.jpg", "rust.jpg")
	out, _, _ = run(t, nil, "bundle", "export", "--out", stick, "--config", cfg)
	bundles, _ = filepath.Glob(filepath.Join(stick, "*"+osync.BundleExt))
	if len(bundles) != 2 {
		t.Fatalf("second export: %s %v", out, bundles)
	}

	// Damaged bundles are refused, naming why.
	raw, _ := os.ReadFile(bundles[0])
	bad := filepath.Join(dir, "bad")
	os.MkdirAll(bad, 0o755)
	tampered := append([]byte(nil), raw...)
	tampered[len(tampered)/2] ^= 0xff
	os.WriteFile(filepath.Join(bad, "t"+osync.BundleExt), tampered, 0o644)
	os.WriteFile(filepath.Join(bad, "u"+osync.BundleExt), raw[:len(raw)*2/3], 0o644)
	if _, errOut, code := run(t, nil, "collect", "import", bad, "--data-dir", hubDir); code == ExitOK ||
		!strings.Contains(errOut, "does not match its SHA-256") || !strings.Contains(errOut, "truncated") || !strings.Contains(errOut, "2 of 2 bundles refused") {
		t.Fatalf("damaged bundles: %d %s", code, errOut)
	}

	// The district office imports the stick (twice: nothing doubles).
	for i := 0; i < 2; i++ {
		out, errOut, code = run(t, nil, "collect", "import", stick, "--data-dir", hubDir, "--key", filepath.Join(dir, "hub.key"))
		if code != ExitOK {
			t.Fatalf("import: %s %s", out, errOut)
		}
	}
	out, _, _ = run(t, nil, "collect", "export", "--data-dir", hubDir)
	if n := strings.Count(out, `"received":`); n != 5 {
		t.Fatalf("the hub has %d results, want 5 (3 by MQTT and bundle, 2 by bundle)", n)
	}
	receipts, _ := filepath.Glob(filepath.Join(stick, "*"+osync.ReceiptExt))
	if len(receipts) != 2 {
		t.Fatalf("receipts %v", receipts)
	}

	// Receipts that must delete nothing.
	rb, _ := os.ReadFile(receipts[0])
	parsed, err := osync.DecodeReceiptFile(rb, "kiosk-b", nil)
	if err != nil {
		t.Fatal(err)
	}
	rc := *parsed
	forge := func(name string, mutate func(*osync.Receipt), sign bool) string {
		r := rc
		r.Stored = append([]outbox.ID(nil), rc.Stored...)
		mutate(&r)
		key := hubKey
		if !sign {
			key = nil
		}
		p := filepath.Join(dir, name+osync.ReceiptExt)
		os.WriteFile(p, osync.EncodeReceiptFile(&r, key), 0o644)
		return p
	}
	// A receipt that is a symlink to /dev/zero (issue 25: the daemon and
	// `bundle receipt` ran out of memory on it) is refused unread.
	zero := filepath.Join(dir, "zero"+osync.ReceiptExt)
	os.Symlink("/dev/zero", zero)
	for _, c := range []struct{ name, path, want string }{
		{"symlink to /dev/zero", zero, "not a plain file"},
		{"another device", forge("other", func(r *osync.Receipt) { r.Device = "kiosk-z" }, true), "for device"},
		{"unsigned", forge("unsigned", func(r *osync.Receipt) {}, false), "not signed"},
		{"unknown bundle", forge("unknown", func(r *osync.Receipt) { r.Bundle = outbox.NewIDGen().New() }, true), "did not write"},
		{"extra records", forge("extra", func(r *osync.Receipt) {
			r.Stored, r.StoredSums = append(r.Stored, outbox.NewIDGen().New()), append(append([]osync.Sum(nil), r.StoredSums...), osync.Sum{})
		}, true), "did not carry"},
		// A substituted bundle under the same ID (issue 25): the hub signs a
		// receipt naming the bytes it read, which are not this device's.
		{"other bytes", forge("otherbytes", func(r *osync.Receipt) {
			r.StoredSums = make([]osync.Sum, len(r.Stored))
		}, true), "other bytes"},
		{"no sums", forge("nosums", func(r *osync.Receipt) { r.StoredSums = nil }, true), "bytes of each record"},
	} {
		before := queued()
		if _, errOut, code := run(t, nil, "bundle", "receipt", c.path, "--config", cfg); code == ExitOK || !strings.Contains(errOut, c.want) || queued() != before {
			t.Errorf("%s: code %d, %s (queued %d → %d)", c.name, code, errOut, before, queued())
		}
	}
	out, errOut, code = run(t, nil, "bundle", "receipt", stick, "--config", cfg)
	if code != ExitOK || queued() != 0 {
		t.Fatalf("receipts: %s %s; queued %d", out, errOut, queued())
	}
	if _, errOut, code := run(t, nil, "bundle", "receipt", receipts[0], "--config", cfg); code == ExitOK || !strings.Contains(errOut, "already applied") {
		t.Fatalf("a receipt applied twice: %s", errOut)
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// stickRig is a device config, a hub key and folders for a trip by stick:
// the shared start of the bundle tests.
type stickRig struct {
	dir, data, hubDir, stick, cfg, hubPub string
	hubKey                                ed25519.PrivateKey
}

func newStickRig(t *testing.T, device string, sharing map[string]any) *stickRig {
	t.Helper()
	t.Setenv("OUTPOST_ORT_LIB", testutil.LibPath(t))
	r := &stickRig{dir: t.TempDir()}
	r.hubPub, _, _ = run(t, nil, "keys", "generate", "--out", filepath.Join(r.dir, "hub.key"))
	r.hubKey, _ = loadPrivateKey(filepath.Join(r.dir, "hub.key"))
	r.data, r.hubDir, r.stick = filepath.Join(r.dir, "data"), filepath.Join(r.dir, "hub"), filepath.Join(r.dir, "stick")
	os.MkdirAll(r.stick, 0o755)
	os.MkdirAll(r.hubDir, 0o755)
	r.cfg = filepath.Join(r.dir, "config.json")
	b, _ := json.Marshal(map[string]any{"device_id": device, "data_dir": r.data, "hub_keys": []string{strings.TrimSpace(r.hubPub)},
		"sharing": map[string]any{"crop-disease": sharing}})
	os.WriteFile(r.cfg, b, 0o644)
	return r
}

// TestCollectImport_ThroughRunningCollector (issue 29; found by the
// rehearsal): `collect import` refused to run while a collector held the
// bbolt store ("stop it first"). Now it streams each bundle to the running
// collector's socket, which stores it and answers the signed receipt; the
// CLI writes it beside the bundle, and the device deletes on it.
func TestCollectImport_ThroughRunningCollector(t *testing.T) {
	r := newStickRig(t, "kiosk-sock", map[string]any{"evidence": "always", "form": "original"})
	samples := filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples")
	if _, errOut, code := run(t, nil, "infer", "--config", r.cfg, "--models-dir", testutil.ModelsDir(t), "-m", "crop-disease",
		filepath.Join(samples, "rust.jpg"), filepath.Join(samples, "mosaic.jpg")); code != ExitOK {
		t.Fatalf("infer: %s", errOut)
	}
	if _, errOut, code := run(t, nil, "bundle", "export", "--out", r.stick, "--config", r.cfg); code != ExitOK {
		t.Fatalf("export: %s", errOut)
	}
	broker := testutil.StartMosquitto(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var colErr bytes.Buffer
	go func() {
		done <- Main(ctx, []string{"collect", "--data-dir", r.hubDir, "--broker", broker.URL(), "--key", filepath.Join(r.dir, "hub.key")}, nil, &bytes.Buffer{}, &colErr)
	}()
	defer func() { cancel(); <-done }()
	testutil.Eventually(t, 20*time.Second, "the collector's socket", func() bool {
		_, err := os.Stat(filepath.Join(r.hubDir, hub.SocketFile))
		return err == nil
	})
	out, errOut, code := run(t, nil, "collect", "import", r.stick, "--data-dir", r.hubDir)
	if code != ExitOK || !strings.Contains(out, "2 new") || !strings.Contains(out, "through the running collector") {
		t.Fatalf("import while the collector runs: %d %s%s", code, out, errOut)
	}
	if _, errOut, code := run(t, nil, "bundle", "receipt", r.stick, "--config", r.cfg); code != ExitOK {
		t.Fatalf("receipt: %s", errOut)
	}
	qs, _, _ := run(t, nil, "queue", "stats", "--json", "--config", r.cfg)
	var st outbox.Stats
	json.Unmarshal([]byte(qs), &st)
	if st.Count != 0 {
		t.Fatalf("after the receipt from the running collector, %d records stay on the device", st.Count)
	}
	// A damaged bundle is refused by name, the collector keeps running.
	bad := filepath.Join(r.stick, "outpost-kiosk-sock-x"+osync.BundleExt)
	os.WriteFile(bad, []byte("not a bundle"), 0o644)
	if _, errOut, code := run(t, nil, "collect", "import", bad, "--data-dir", r.hubDir); code == ExitOK || !strings.Contains(errOut, "refused by the running collector") {
		t.Fatalf("a damaged bundle: %d %s", code, errOut)
	}
	if out, _, code := run(t, nil, "collect", "devices", "--data-dir", r.hubDir); code != ExitOK || !strings.Contains(out, "kiosk-sock") {
		t.Fatalf("the collector after a damaged bundle: %d %s", code, out)
	}
}
