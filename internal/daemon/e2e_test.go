package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	gosync "sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

// buildOutpost compiles the real binary once per test.
func buildOutpost(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "outpost")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/outpost")
	cmd.Dir = testutil.Root(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

type proc struct {
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer
	exit chan error
}

// startServe runs `outpost serve` and waits for its kiosk URL line.
func startServe(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--models-dir", testutil.ModelsDir(t)}, args...)...)
	cmd.Env = append(os.Environ(), "OUTPOST_ORT_LIB="+testutil.LibPath(t))
	return startCmd(t, cmd)
}

// startCmd starts a prepared `outpost serve` command and waits for its
// kiosk URL line.
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	out, _ := cmd.StdoutPipe()
	p := &proc{cmd: cmd, logs: &bytes.Buffer{}, exit: make(chan error, 1)}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "kiosk: "); ok {
				urls <- strings.Fields(u)[0]
			}
		}
	}()
	go func() { p.exit <- cmd.Wait() }()
	select {
	case p.url = <-urls:
	case err := <-p.exit:
		t.Fatalf("serve exited: %v\n%s", err, p.logs)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("serve did not start\n%s", p.logs)
	}
	p.url = strings.TrimSuffix(p.url, "/")
	t.Cleanup(func() { cmd.Process.Kill() })
	return p
}

// TestServe_EndToEnd: the real daemon process, real models, a real
// mosquitto and a collector. A photo posted to the API reaches the hub
// exactly once and leaves the device; SIGTERM stops it cleanly.
func TestServe_EndToEnd(t *testing.T) {
	bin := buildOutpost(t)
	broker := testutil.StartMosquitto(t, false)
	hubDB := filepath.Join(t.TempDir(), "hub.db")
	col, err := hub.Open(hubDB, hub.CollectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	dial, _ := mqtt.Dialer(mqtt.Options{Broker: broker.URL()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go col.Run(ctx, dial)
	select {
	case <-col.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("collector did not subscribe")
	}

	data := t.TempDir()
	p := startServe(t, bin, "--broker", broker.URL(), "--data-dir", data, "--device-id", "kiosk-e2e")
	photo, _ := os.ReadFile(filepath.Join(testutil.ModelsDir(t), "crop-disease", "samples", "leaf_spot.jpg"))
	for i := 0; i < 3; i++ {
		resp, err := http.Post(p.url+"/v1/models/crop-disease/infer?lang=fr", "image/jpeg", bytes.NewReader(photo))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 || !strings.Contains(string(b), `"label":"leaf_spot"`) || !strings.Contains(string(b), "Taches foliaires") {
			t.Fatalf("infer: %d %s", resp.StatusCode, b)
		}
	}
	// Bad input through the process: 400, still up.
	resp, _ := http.Post(p.url+"/v1/models/crop-disease/infer", "image/jpeg", strings.NewReader("not a jpeg"))
	if resp.StatusCode != 400 {
		t.Fatalf("bad photo: %d", resp.StatusCode)
	}
	synced := func() bool {
		n, _ := col.Count()
		var st struct{ Queue struct{ Count int } }
		r, err := http.Get(p.url + "/v1/status")
		if err == nil {
			json.NewDecoder(r.Body).Decode(&st)
			r.Body.Close()
		}
		return n == 3 && st.Queue.Count == 0
	}
	for deadline := time.Now().Add(20 * time.Second); !synced() && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond) // polled by hand: the failure below prints the daemon's logs
	}
	if n, _ := col.Count(); n != 3 {
		t.Fatalf("collector has %d results, want 3\n%s", n, p.logs)
	}
	// Two-stage shutdown, first stage: SIGTERM drains and exits 0.
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exit:
		if err != nil || !strings.Contains(p.logs.String(), "stopped cleanly") {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit after SIGTERM\n%s", p.logs)
	}
	ob, err := outbox.Open(filepath.Join(data, "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatalf("outbox after shutdown: %v", err)
	}
	defer ob.Close()
	if st, _ := ob.Stats(); st.Count != 0 || st.Appended != 3 || st.Acked != 3 {
		t.Fatalf("outbox after shutdown: %+v", st)
	}
}

// TestServe_SecondSignalExitsNow: a second signal does not wait for the drain.
func TestServe_SecondSignalExitsNow(t *testing.T) {
	bin := buildOutpost(t)
	p := startServe(t, bin, "--data-dir", t.TempDir())
	p.cmd.Process.Signal(syscall.SIGINT)
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-p.exit:
		// Either the drain finished first (exit 0) or the second signal won (130).
		if err != nil && !strings.Contains(err.Error(), "exit status 130") {
			t.Fatalf("exit: %v\n%s", err, p.logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running after two signals\n%s", p.logs)
	}
}

func TestServe_BadConfig(t *testing.T) {
	bin := buildOutpost(t)
	cmd := exec.Command(bin, "serve", "--listen", "0.0.0.0:8080")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "token: required") {
		t.Fatalf("%v: %s", err, out)
	}
	cmd = exec.Command(bin, "serve", "--print-config", "--data-dir", t.TempDir(), "--models-dir", testutil.ModelsDir(t))
	cmd.Env = append(os.Environ(), "OUTPOST_MQTT_PASSWORD=hunter2", "OUTPOST_QUEUE_POLICY=drop-lowest")
	out, err = cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "hunter2") || !strings.Contains(string(out), `"queue_policy": "drop-lowest"`) {
		t.Fatalf("%v: %s", err, out)
	}
}

// TestSystemdUnit_Verifies runs systemd-analyze verify on dist/outpost.service
// with ExecStart pointed at a freshly built binary.
func TestSystemdUnit_Verifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze not installed (scripts/sysdeps.sh installs systemd): %v", err)
	}
	bin := buildOutpost(t)
	unit, err := os.ReadFile(filepath.Join(testutil.Root(t), "dist", "outpost.service"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "outpost.service")
	os.WriteFile(p, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/outpost", bin)), 0o644)
	if out, err := exec.Command(sa, "verify", p).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The hub's unit too (issue 26: the hub had no unit or install steps).
	hubUnit, err := os.ReadFile(filepath.Join(testutil.Root(t), "dist", "outpost-hub.service"))
	if err != nil {
		t.Fatal(err)
	}
	hp := filepath.Join(dir, "outpost-hub.service")
	os.WriteFile(hp, []byte(strings.ReplaceAll(string(hubUnit), "/usr/local/bin/outpost", bin)), 0o644)
	if out, err := exec.Command(sa, "verify", hp).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify the hub unit: %v\n%s", err, out)
	}
	if !strings.Contains(string(unit), "OUTPOST_CONFIG=/etc/outpost/outpost.json") {
		t.Error("the device unit does not read the JSON config provision prints")
	}
	for _, want := range []string{"ProtectSystem=strict", "StateDirectory=outpost", "Restart=on-failure", "MemoryMax=", "User=outpost", "NoNewPrivileges=true"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
}

// vmHWM is a process's peak resident set (VmHWM), in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestServe_LargePhotosMemory: the real daemon takes max_concurrent (2)
// uploads of a 48 MP phone JPEG at once, answers both, and its peak
// resident memory stays under the shipped unit's MemoryMax=256M.
func TestServe_LargePhotosMemory(t *testing.T) {
	bin := buildOutpost(t)
	photo := testutil.BigJPEG(t, 8000, 6000)
	p := startServe(t, bin, "--data-dir", t.TempDir())
	var wg gosync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(p.url+"/v1/models/crop-disease/infer", "image/jpeg", bytes.NewReader(photo))
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	peak := vmHWM(t, p.cmd.Process.Pid)
	t.Logf("2 concurrent 48 MP JPEGs (%d bytes each): answers %v, daemon peak RSS %d MiB", len(photo), codes, peak>>20)
	if codes[0] != 201 || codes[1] != 201 {
		t.Fatalf("answers %v, want 201 201\n%s", codes, p.logs)
	}
	if peak > 256<<20 {
		t.Fatalf("peak RSS %d MiB is over the unit's MemoryMax=256M", peak>>20)
	}
}

// TestServe_Demo: `make demo`'s command runs signed (issue 25): the demo
// device pins its embedded hub's key, the samples dropped into its inbox
// reach the hub and leave the device, the hub enrolled the device's key,
// and `collect devices` reaches the running demo hub (issue 29).
func TestServe_Demo(t *testing.T) {
	bin := buildOutpost(t)
	dir := t.TempDir()
	p := startServe(t, bin, "--demo", "--data-dir", dir)
	defer func() { p.cmd.Process.Signal(os.Interrupt); <-p.exit }()
	var st struct {
		Queue struct {
			Count int64 `json:"count"`
		} `json:"queue"`
		Trust struct {
			Pinned      bool   `json:"hub_key_pinned"`
			Fingerprint string `json:"device_key_fingerprint"`
		} `json:"trust"`
		Sync struct {
			Synced int64 `json:"records_synced"`
		} `json:"sync"`
	}
	testutil.Eventually(t, 60*time.Second, "the demo's samples did not reach its hub", func() bool {
		resp, err := http.Get(p.url + "/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&st)
		return st.Sync.Synced >= 6 && st.Queue.Count == 0
	})
	if !st.Trust.Pinned || st.Trust.Fingerprint == "" {
		t.Fatalf("the demo runs unsigned: %+v\n%s", st.Trust, p.logs)
	}
	out, err := exec.Command(bin, "collect", "devices", "--data-dir", filepath.Join(dir, "hub")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), st.Trust.Fingerprint) {
		t.Fatalf("collect devices against the running demo: %v\n%s", err, out)
	}
	// Export through the demo's running hub too: every synced result.
	out, err = exec.Command(bin, "collect", "export", "--data-dir", filepath.Join(dir, "hub")).Output()
	if err != nil || int64(strings.Count(string(out), `"received":`)) < st.Sync.Synced {
		t.Fatalf("collect export against the running demo: %v, %d results for %d synced", err, strings.Count(string(out), `"received":`), st.Sync.Synced)
	}
	// The device's sync counters reach Prometheus from their one declaration.
	resp, err := http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// At least what the status said a moment before (more may have gone since).
	var acked int64
	if m := regexp.MustCompile(`(?m)^outpost_sync_records_acked_total (\d+)$`).FindSubmatch(metrics); m != nil {
		acked, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if acked < st.Sync.Synced || !strings.Contains(string(metrics), "# HELP outpost_sync_connects_total Successful broker connections.") {
		t.Errorf("metrics: records acked %d, want at least %d, and the connects counter:\n%s", acked, st.Sync.Synced, metrics)
	}
	t.Logf("demo: %d results synced on signed acks; the hub enrolled the device's key %s", st.Sync.Synced, st.Trust.Fingerprint)
}
