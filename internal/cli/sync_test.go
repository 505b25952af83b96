package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestSyncOnceAndCollect: infer queues results on a device; `sync --once`
// drains them through a real mosquitto to `collect`, which exports them.
func TestSyncOnceAndCollect(t *testing.T) {
	broker := testutil.StartMosquitto(t, false)
	hub, dev := t.TempDir(), t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var collectErr bytes.Buffer
	done := make(chan int, 1)
	testutil.SileroPath(t)
	t.Setenv("OUTPOST_ORT_LIB", testutil.LibPath(t))
	go func() {
		done <- Main(ctx, []string{"collect", "--broker", broker.URL(), "--data-dir", hub}, nil, &bytes.Buffer{}, &collectErr)
	}()
	wav := speechWAV(t)
	if _, errOut, code := run(t, nil, "infer", "--models-dir", testutil.ModelsDir(t), "-m", "silero-vad",
		"--data-dir", dev, "--device-id", "kiosk-9", wav, wav, wav); code != ExitOK {
		t.Fatalf("infer: %s", errOut)
	}
	time.Sleep(300 * time.Millisecond) // the collector subscribes; if later, the short ack timeout resends
	out, errOut, code := run(t, nil, "sync", "--once", "--broker", broker.URL(), "--data-dir", dev, "--device-id", "kiosk-9", "--timeout", "60s", "--ack-timeout", "2s")
	if code != ExitOK || !strings.Contains(out, "synced 3 records") || !strings.Contains(out, "0 left") {
		t.Fatalf("sync (code %d): %s\n%s", code, out, errOut)
	}
	// While the collector holds the embedded store, export and devices go
	// through its socket.
	out, errOut, code = run(t, nil, "collect", "export", "--data-dir", hub)
	if code != ExitOK || strings.Count(out, `"received":`) != 3 || !strings.Contains(errOut, "through the running collector") {
		t.Fatalf("export while collecting (code %d): %s\n%s", code, errOut, out)
	}
	if out, errOut, code = run(t, nil, "collect", "devices", "--data-dir", hub); code != ExitOK || !strings.Contains(out, "kiosk-9") {
		t.Fatalf("devices while collecting (code %d): %s\n%s", code, errOut, out)
	}
	cancel()
	if c := <-done; c != ExitOK {
		t.Fatalf("collect exited %d: %s", c, collectErr.String())
	}
	out, _, code = run(t, nil, "collect", "export", "--data-dir", hub, "--format", "csv")
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != ExitOK || err != nil || len(rows) != 4 || rows[1][1] != "kiosk-9" || !strings.Contains(rows[1][len(rows[1])-1], "segments") {
		t.Fatalf("csv export (code %d, %v):\n%s", code, err, out)
	}
	out, _, _ = run(t, nil, "collect", "export", "--data-dir", hub)
	if strings.Count(out, `"received":`) != 3 || !strings.Contains(out, `"output":{"segments"`) {
		t.Fatalf("jsonl export:\n%s", out)
	}
	out, _, _ = run(t, nil, "collect", "devices", "--data-dir", hub)
	if !strings.Contains(out, "kiosk-9") {
		t.Fatalf("devices:\n%s", out)
	}
	// Nothing left to send: a second sync is a quick no-op.
	out, _, code = run(t, nil, "queue", "stats", "--data-dir", dev)
	if code != ExitOK || !strings.Contains(out, "records   0 of") {
		t.Fatalf("device queue after sync:\n%s", out)
	}
}

func TestSync_Usage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sync", "--broker", "tcp://127.0.0.1:1"}, "use --once"},
		{[]string{"sync", "--once"}, "--broker is required"},
		{[]string{"sync", "--once", "--broker", "tcp://x:1", "--device-id", "a/b"}, `device id "a/b"`},
		{[]string{"sync", "--once", "--broker", "tcp://x:1", "--device-id", "a", "--daily-budget", "lots"}, "--daily-budget"},
	} {
		t.Setenv("OUTPOST_BROKER", "")
		_, errOut, code := run(t, nil, c.args...)
		if code != ExitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: code %d, %q", c.args, code, errOut)
		}
	}
	if n, err := osync.ParseBytes("5MB"); err != nil || n != 5_000_000 {
		t.Fatalf("5MB = %d, %v", n, err)
	}
	if n, _ := osync.ParseBytes("2 MiB"); n != 2<<20 {
		t.Fatalf("2 MiB = %d", n)
	}
}

func TestSync_UnreachableBrokerTimesOut(t *testing.T) {
	dev := t.TempDir()
	port := testutil.FreePort(t) // nothing listens there
	_, errOut, code := run(t, nil, "sync", "--once", "--broker", "tcp://127.0.0.1:"+itoa(port), "--data-dir", dev, "--device-id", "d1", "--timeout", "1500ms")
	if code != ExitFailure || !strings.Contains(errOut, "timed out after 1.5s") {
		t.Fatalf("code %d: %s", code, errOut)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestSync_UnreachableBrokerGivesUp(t *testing.T) {
	dev := t.TempDir()
	port := testutil.FreePort(t)
	_, errOut, code := run(t, nil, "sync", "--once", "--broker", "tcp://127.0.0.1:"+itoa(port), "--data-dir", dev, "--device-id", "d1", "--connect-timeout", "1s")
	if code != ExitFailure || !strings.Contains(errOut, "could not connect to tcp://127.0.0.1:") {
		t.Fatalf("code %d: %s", code, errOut)
	}
}

func TestSync_BadBudgetRefused(t *testing.T) {
	for _, b := range []string{"5MB/day", "5XB", "lots"} {
		_, errOut, code := run(t, nil, "sync", "--once", "--broker", "tcp://127.0.0.1:1", "--data-dir", t.TempDir(), "--device-id", "d1", "--daily-budget", b)
		if code != ExitUsage || !strings.Contains(errOut, "is not a size") {
			t.Fatalf("--daily-budget %s: code %d: %s", b, code, errOut)
		}
	}
}

func TestKioskURL(t *testing.T) {
	for _, c := range []struct {
		addr  string
		token bool
		want  string
	}{
		{"127.0.0.1:8080", false, "http://127.0.0.1:8080/"},
		{"[::]:8080", true, "http://127.0.0.1:8080/ (sign in with the token) (all interfaces"},
		{"0.0.0.0:9000", false, "http://127.0.0.1:9000/ (all interfaces"},
		{"192.168.4.1:80", true, "http://192.168.4.1:80/ (sign in with the token)"},
	} {
		if got := kioskURL(c.addr, c.token); !strings.HasPrefix(got, c.want) {
			t.Errorf("kioskURL(%q) = %q, want prefix %q", c.addr, got, c.want)
		}
	}
}

func TestCollect_Dictionary(t *testing.T) {
	out := filepath.Join(t.TempDir(), "v1.dict")
	_, errOut, code := run(t, nil, "collect", "dictionary", "--out", out)
	b, err := os.ReadFile(out)
	sum := sha256.Sum256(b)
	if code != ExitOK || err != nil || hex.EncodeToString(sum[:]) != osync.DictV1SHA256 {
		t.Fatalf("code %d, %v: %s", code, err, errOut)
	}
}

// TestConfigFile_EveryCommand: sync --once, infer and queue read the same
// --config file as serve (the broker, the data dir), flags still win.
func TestConfigFile_EveryCommand(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	port := testutil.FreePort(t)
	cfg := filepath.Join(dir, "outpost.json")
	os.WriteFile(cfg, []byte(`{"broker":"tcp://127.0.0.1:`+itoa(port)+`","device_id":"from-config","data_dir":"`+data+`"}`), 0o644)
	md := testutil.ModelsDir(t)
	photo := filepath.Join(md, "crop-disease", "samples", "rust.jpg")
	if _, errOut, code := run(t, nil, "infer", "--config", cfg, "--models-dir", md, "-m", "crop-disease", photo); code != ExitOK {
		t.Fatalf("infer --config: %s", errOut)
	}
	out, errOut, code := run(t, nil, "queue", "stats", "--config", cfg, "--json")
	if code != ExitOK || !strings.Contains(out, `"count":1`) {
		t.Fatalf("queue stats --config (the data dir from the file): %d %s %s", code, out, errOut)
	}
	_, errOut, code = run(t, nil, "sync", "--once", "--config", cfg, "--connect-timeout", "1s")
	if code != ExitFailure || !strings.Contains(errOut, "could not connect to tcp://127.0.0.1:"+itoa(port)) {
		t.Fatalf("sync --once --config: %d %s", code, errOut)
	}
	_, errOut, _ = run(t, nil, "sync", "--once", "--config", cfg, "--broker", "tcp://127.0.0.1:1", "--connect-timeout", "1s")
	if !strings.Contains(errOut, "tcp://127.0.0.1:1 ") {
		t.Fatalf("--broker did not win over the file: %s", errOut)
	}
}

// TestCollect_PostgresStore: `collect migrate` and `collect devices` /
// `export` against a PostgreSQL store — the latter while a collector on
// the same store runs (the embedded store refuses that: ErrLocked).
func TestCollect_PostgresStore(t *testing.T) {
	pg := testutil.StartPostgres(t)
	url := pg.NewDatabase(t)
	out, errOut, code := run(t, nil, "collect", "migrate", "--store", url)
	if code != 0 || !strings.Contains(errOut, "at version 5") || !strings.Contains(errOut, "applied now: [1 2 3 4 5]") {
		t.Fatalf("migrate: %d %s%s", code, out, errOut)
	}
	if _, errOut, _ := run(t, nil, "collect", "migrate", "--store", url); !strings.Contains(errOut, "applied now: []") {
		t.Fatalf("second migrate: %s", errOut)
	}
	broker := testutil.StartMosquitto(t, false)
	st, err := hub.OpenPostgres(context.Background(), url, hub.PGOptions{Name: "running"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := hub.New(st, hub.CollectorOptions{Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx, testutil.Dialer(t, broker.URL(), false))
	<-c.Ready()
	dataDir := t.TempDir()
	enqueue(t, dataDir, 25)
	if _, errOut, code := run(t, nil, "sync", "--once", "--data-dir", dataDir, "--device-id", "kiosk-pg", "--broker", broker.URL(), "--ack-timeout", "2s"); code != 0 {
		t.Fatalf("sync: %s", errOut)
	}
	out, errOut, code = run(t, nil, "collect", "devices", "--store", url)
	if code != 0 || !strings.Contains(out, "25") {
		t.Fatalf("devices while a collector runs: %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = run(t, nil, "collect", "export", "--store", url)
	if code != 0 || strings.Count(out, "\n") != 25 || !strings.Contains(errOut, "exported 25") {
		t.Fatalf("export while a collector runs: %d\n%s", code, errOut)
	}
	if _, errOut, code := run(t, nil, "collect", "devices", "--store", "mysql://x"); code == 0 || !strings.Contains(errOut, "postgres://") {
		t.Fatalf("a bad --store: %s", errOut)
	}
	cancel()
	c.Close()
}

// waitHealthy waits until the collector listening at addr answers
// /healthz with 200: it is subscribed at the broker.
func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, "the collector at "+addr+" to answer /healthz with 200", func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// enqueue appends n results to the outbox in dataDir as a device would.
func enqueue(t *testing.T, dataDir string, n int) {
	t.Helper()
	ob, err := outbox.Open(filepath.Join(dataDir, OutboxFile), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	for i := 0; i < n; i++ {
		if _, err := ob.Append(context.Background(), &outbox.Record{Device: "kiosk-pg", Model: "crop-disease", Version: "0.2.0",
			Task: "image-classification", Output: []byte(`{"label":"rust"}`)}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSignedAcks_CLI: keys generate, collect --key, and devices pinning
// the key with --hub-key: a device pinning the right key drains; one
// pinning another key deletes nothing (every ack counts as forged).
func TestSignedAcks_CLI(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "hub.key")
	pub, errOut, code := run(t, nil, "keys", "generate", "--out", keyFile)
	if code != ExitOK || !strings.HasPrefix(pub, "ed25519:") {
		t.Fatalf("keys generate: %d %s %s", code, pub, errOut)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", st, err)
	}
	if _, errOut, code := run(t, nil, "keys", "generate", "--out", keyFile); code == ExitOK || !strings.Contains(errOut, "exists") {
		t.Fatalf("overwriting a key without --force: %d %s", code, errOut)
	}
	other, _, _ := run(t, nil, "keys", "generate", "--out", filepath.Join(dir, "other.key"))
	broker := testutil.StartMosquitto(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	testutil.SileroPath(t)
	t.Setenv("OUTPOST_ORT_LIB", testutil.LibPath(t))
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	go func() {
		done <- Main(ctx, []string{"collect", "--broker", broker.URL(), "--data-dir", filepath.Join(dir, "hub"), "--key", keyFile, "--listen", addr}, nil, &bytes.Buffer{}, &bytes.Buffer{})
	}()
	waitHealthy(t, addr)
	good, bad := t.TempDir(), t.TempDir()
	enqueue(t, good, 5)
	enqueue(t, bad, 5)
	out, errOut, code := run(t, nil, "sync", "--once", "--data-dir", good, "--device-id", "kiosk-pg", "--broker", broker.URL(),
		"--ack-timeout", "2s", "--hub-key", strings.TrimSpace(pub))
	if code != ExitOK || !strings.Contains(out, "synced 5 records") {
		t.Fatalf("sync pinning the hub's key: %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = run(t, nil, "sync", "--once", "--data-dir", bad, "--device-id", "kiosk-pg", "--broker", broker.URL(),
		"--ack-timeout", "1s", "--timeout", "4s", "--hub-key", strings.TrimSpace(other))
	if code == ExitOK {
		t.Fatalf("sync pinning another key drained:\n%s%s", out, errOut)
	}
	q, _, _ := run(t, nil, "queue", "stats", "--data-dir", bad)
	if !strings.Contains(q, "records   5 of") {
		t.Fatalf("records were deleted on acks signed by an unpinned key:\n%s", q)
	}
	if _, errOut, code := run(t, nil, "sync", "--once", "--data-dir", bad, "--broker", broker.URL(), "--hub-key", "ed25519:bm9wZQ=="); code == ExitOK || !strings.Contains(errOut, "hub_keys") {
		t.Fatalf("a malformed --hub-key: %d %s", code, errOut)
	}
	cancel()
	<-done
}

// TestCollect_HTTPAPI: `collect --listen` serves healthz, the device view,
// stats, exports (while collecting) and metrics; off loopback it needs a
// token, and with one the API refuses requests without it.
func TestCollect_HTTPAPI(t *testing.T) {
	if _, errOut, code := run(t, nil, "collect", "--broker", "tcp://127.0.0.1:1", "--data-dir", t.TempDir(), "--listen", "0.0.0.0:0"); code == ExitOK || !strings.Contains(errOut, "--token") {
		t.Fatalf("listening off loopback without a token: %d %s", code, errOut)
	}
	broker := testutil.StartMosquitto(t, false)
	port := testutil.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	testutil.SileroPath(t)
	t.Setenv("OUTPOST_ORT_LIB", testutil.LibPath(t))
	var errb bytes.Buffer
	go func() {
		done <- Main(ctx, []string{"collect", "--broker", broker.URL(), "--data-dir", t.TempDir(), "--listen", addr, "--token", "s3cret"}, nil, &bytes.Buffer{}, &errb)
	}()
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitHealthy(t, addr)
	if code, body := get("/healthz", ""); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("healthz: %d %s (%s)", code, body, errb.String())
	}
	dev := t.TempDir()
	enqueue(t, dev, 7)
	if _, errOut, code := run(t, nil, "sync", "--once", "--data-dir", dev, "--device-id", "kiosk-pg", "--broker", broker.URL(), "--ack-timeout", "2s"); code != ExitOK {
		t.Fatalf("sync: %s", errOut)
	}
	if code, _ := get("/v1/devices", ""); code != http.StatusUnauthorized {
		t.Fatalf("devices without the token: %d", code)
	}
	code, body := get("/v1/devices", "s3cret")
	if code != 200 || !strings.Contains(body, `"device":"kiosk-pg"`) || !strings.Contains(body, `"stored":7`) {
		t.Fatalf("devices: %d %s", code, body)
	}
	if code, body := get("/v1/export?format=csv", "s3cret"); code != 200 || strings.Count(body, "\n") != 8 {
		t.Fatalf("csv export while collecting: %d\n%s", code, body)
	}
	if code, body := get("/metrics", "s3cret"); code != 200 || !strings.Contains(body, "outpost_hub_stored_total 7") || !strings.Contains(body, `outpost_hub_device_last_seen_age_seconds{device="kiosk-pg"}`) {
		t.Fatalf("metrics: %d\n%s", code, body)
	}
	if code, body := get("/", ""); code != 200 || !strings.Contains(body, "outbreaks") {
		t.Fatalf("hub page: %d", code)
	}
	if code, body := get("/v1/nope", "s3cret"); code != 404 || !strings.Contains(body, "not_found") {
		t.Fatalf("unknown route: %d %s", code, body)
	}
	cancel()
	<-done
}

// TestCollect_WaitsForPostgres (issue 27): a collector started while
// PostgreSQL is down exited at once and stayed down. It now waits for the
// database and starts collecting when it comes up.
func TestCollect_WaitsForPostgres(t *testing.T) {
	pg := testutil.StartPostgres(t)
	url := pg.NewDatabase(t)
	pg.Down(t)
	broker := testutil.StartMosquitto(t, false)
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb syncBuffer
	go func() {
		done <- Main(ctx, []string{"collect", "--broker", broker.URL(), "--store", url, "--data-dir", t.TempDir(), "--listen", addr}, nil, &bytes.Buffer{}, &errb)
	}()
	testutil.Eventually(t, 20*time.Second, "the collector did not say it waits for its store", func() bool {
		return strings.Contains(errb.String(), "not reachable")
	})
	select {
	case code := <-done:
		t.Fatalf("the collector exited (%d) while PostgreSQL was down:\n%s", code, errb.String())
	default:
	}
	// Its /healthz says why it is not ready.
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "not reachable") {
		t.Fatalf("/healthz while waiting for PostgreSQL: %d %s", resp.StatusCode, body)
	}
	pg.Up(t)
	waitHealthy(t, addr)
	cancel()
	<-done
}

// syncBuffer is a bytes.Buffer safe for one writer and a polling reader.
type syncBuffer struct {
	mu gosync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCollect_FlagsBelongToSubcommand (issue 29): `collect acl --chunk-size
// 5 --reviewed` exited 0. A flag the subcommand does not read is refused
// by name, with the flags it does read.
func TestCollect_FlagsBelongToSubcommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		bad  string
	}{
		{[]string{"collect", "acl", "--chunk-size", "5", "--reviewed"}, "--chunk-size, --reviewed"},
		{[]string{"collect", "export", "--to", "all"}, "--to"},
		{[]string{"collect", "revoke", "--device", "x", "--passwd-file", "p", "--listen", ":1"}, "--listen"},
		{[]string{"collect", "--format", "csv", "--broker", "tcp://127.0.0.1:1"}, "--format"},
	} {
		_, errOut, code := run(t, nil, c.args...)
		if code != ExitUsage || !strings.Contains(errOut, "does not take "+c.bad) || !strings.Contains(errOut, "its flags: --") {
			t.Errorf("%v: exit %d, %q", c.args, code, errOut)
		}
	}
	if out, errOut, code := run(t, nil, "collect", "acl", "--hub-user", "hub-a"); code != ExitOK || !strings.Contains(out, "user hub-a") {
		t.Errorf("collect acl --hub-user: %d %s", code, errOut)
	}
}

// TestCollect_ConfigFile (issue 29: the hub had no config file): keys are
// the flag names; a flag and the environment override the file; a key the
// subcommand does not read is left alone (one file serves all); an unknown
// key is refused by name.
func TestCollect_ConfigFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "hub.json")
	os.WriteFile(conf, []byte(`{"hub-user": "hub-from-file", "listen": "127.0.0.1:1", "data-dir": "`+filepath.Join(dir, "hub")+`"}`), 0o644)
	if out, errOut, code := run(t, nil, "collect", "acl", "--config", conf); code != ExitOK || !strings.Contains(out, "user hub-from-file") {
		t.Fatalf("acl from the file: %d %s%s", code, out, errOut)
	}
	if out, _, code := run(t, nil, "collect", "acl", "--config", conf, "--hub-user", "hub-flag"); code != ExitOK || !strings.Contains(out, "user hub-flag") {
		t.Fatalf("a flag must override the file: %s", out)
	}
	t.Setenv("OUTPOST_HUB_CONFIG", conf)
	if out, _, code := run(t, nil, "collect", "acl"); code != ExitOK || !strings.Contains(out, "user hub-from-file") {
		t.Fatalf("OUTPOST_HUB_CONFIG: %s", out)
	}
	// export reads data-dir from the file (and ignores listen): it looks
	// for the store there.
	if _, errOut, _ := run(t, nil, "collect", "export"); !strings.Contains(errOut, filepath.Join(dir, "hub", "collector.db")) {
		t.Fatalf("export did not use the file's data dir: %s", errOut)
	}
	t.Setenv("OUTPOST_DATA_DIR", filepath.Join(dir, "env"))
	if _, errOut, _ := run(t, nil, "collect", "devices"); !strings.Contains(errOut, filepath.Join(dir, "env", "collector.db")) {
		t.Fatalf("the environment must override the file: %s", errOut)
	}
	// --print-config: what is in effect, from all three, secrets masked.
	os.WriteFile(conf, []byte(`{"broker": "tcp://10.0.0.2:1883", "password": "file-secret", "store": "postgres://hub:dbpass@db/outpost", "listen": "127.0.0.1:1"}`), 0o644)
	t.Setenv("OUTPOST_HUB_TOKEN", "env-token")
	out, errOut, code := run(t, nil, "collect", "--print-config", "--listen", "127.0.0.1:9", "--commits", "2")
	if code != ExitOK {
		t.Fatalf("--print-config: %d %s", code, errOut)
	}
	var shown map[string]any
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("--print-config printed %q: %v", out, err)
	}
	for k, want := range map[string]string{"broker": "tcp://10.0.0.2:1883", "listen": "127.0.0.1:9", "password": "********", "token": "********",
		"store": "postgres://hub:xxxxx@db/outpost", "data-dir": filepath.Join(dir, "env"), "commits": "2"} {
		if fmt.Sprint(shown[k]) != want {
			t.Errorf("--print-config %s = %v, want %q", k, shown[k], want)
		}
	}
	if strings.Contains(out, "secret") || strings.Contains(out, "dbpass") || strings.Contains(out, "env-token") {
		t.Errorf("--print-config shows a secret: %s", out)
	}
	// Each subcommand's --help lists its own flags only.
	flagsOf := func(help string) string { f, _, _ := strings.Cut(help, "Examples:"); return f }
	if out, _, _ := run(t, nil, "collect", "acl", "--help"); !strings.Contains(flagsOf(out), "--hub-user") || strings.Contains(flagsOf(out), "--chunk-size") || strings.Contains(flagsOf(out), "--broker") {
		t.Errorf("collect acl --help:\n%s", out)
	}
	if out, _, _ := run(t, nil, "collect", "--help"); !strings.Contains(flagsOf(out), "--broker") || strings.Contains(flagsOf(out), "--device-key") || strings.Contains(flagsOf(out), "dbpass") {
		t.Errorf("collect --help:\n%s", out)
	}
	os.WriteFile(conf, []byte(`{"brokr": "tcp://x:1"}`), 0o644)
	if _, errOut, code := run(t, nil, "collect", "acl"); code != ExitUsage || !strings.Contains(errOut, `unknown key "brokr"`) {
		t.Fatalf("an unknown key: %d %s", code, errOut)
	}
}

// TestWarnUnknownTargets: a publish target the registry knows neither as a
// device nor as a region is said (a misspelt region reaches no device).
func TestWarnUnknownTargets(t *testing.T) {
	reg := hub.Registry{"kiosk-1": {Region: "Kisumu"}, "kiosk-2": {}}
	var b strings.Builder
	warnUnknownTargets(&b, reg, []string{"Kisumu", "kiosk-2", "all", "Kisumo"})
	if got := b.String(); strings.Count(got, "note:") != 1 || !strings.Contains(got, `"Kisumo"`) {
		t.Fatalf("warnings: %q", got)
	}
	b.Reset()
	warnUnknownTargets(&b, nil, []string{"Kisumo"}) // no registry: nothing to check against
	if b.Len() != 0 {
		t.Fatalf("without a registry: %q", b.String())
	}
}
