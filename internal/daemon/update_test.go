package daemon_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models/pkg"
	osync "github.com/outpost-edge/outpost/sync"
)

// updateRig is a device (`outpost serve`, real process), a real mosquitto,
// a fault proxy on the device's link, and an in-process collector with a
// package shelf and an ack/offer key.
type updateRig struct {
	t       *testing.T
	bin     string
	broker  *testutil.Broker
	proxy   *testutil.Proxy
	hubDB   string
	shelf   *hub.Shelf
	hubKey  ed25519.PrivateKey
	hub     *testutil.Hub
	served  atomic.Int64 // chunks served by collectors already stopped
	models  string
	data    string
	config  string
	pkgFile string
	pkgSize int64
	photo   []byte
	p       *proc
	oldVer  string
	newVer  string
}

func keyPair(t *testing.T, bin, path string) string {
	t.Helper()
	out, err := exec.Command(bin, "keys", "generate", "--out", path).Output()
	if err != nil {
		t.Fatalf("keys generate: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func copyFolder(t *testing.T, src, dst string) {
	t.Helper()
	os.MkdirAll(dst, 0o755)
	ents, _ := os.ReadDir(src)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644)
	}
}

func newUpdateRig(t *testing.T, chunk int) *updateRig {
	r := &updateRig{t: t, bin: buildOutpost(t)}
	dir := t.TempDir()
	programPub := keyPair(t, r.bin, filepath.Join(dir, "program.key"))
	hubPub := keyPair(t, r.bin, filepath.Join(dir, "hub.key"))
	priv, err := os.ReadFile(filepath.Join(dir, "hub.key"))
	if err != nil {
		t.Fatal(err)
	}
	if r.hubKey, err = osync.ParsePrivateKey(priv); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(testutil.ModelsDir(t), "crop-disease")
	r.models = filepath.Join(dir, "models")
	copyFolder(t, src, filepath.Join(r.models, "crop-disease"))
	// The new version: same weights, a new version string (the answers
	// say which version gave them).
	next := filepath.Join(dir, "next", "crop-disease")
	copyFolder(t, src, next)
	var man map[string]any
	b, _ := os.ReadFile(filepath.Join(next, "manifest.json"))
	json.Unmarshal(b, &man)
	r.oldVer = man["version"].(string)
	r.newVer = r.oldVer + "-update"
	man["version"] = r.newVer
	b, _ = json.MarshalIndent(man, "", "  ")
	os.WriteFile(filepath.Join(next, "manifest.json"), b, 0o644)
	r.pkgFile = filepath.Join(dir, "crop-disease-2.opkg")
	cmd := exec.Command(r.bin, "models", "pack", "--key", filepath.Join(dir, "program.key"), "--seq", "2", "--out", r.pkgFile,
		"--golden", filepath.Join(src, "samples", "leaf_spot.jpg"), "--golden", filepath.Join(src, "samples", "rust.jpg"), next)
	cmd.Env = append(os.Environ(), "OUTPOST_ORT_LIB="+testutil.LibPath(t))
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "2 golden inputs") {
		t.Fatalf("pack: %v\n%s", err, out)
	}
	fi, _ := os.Stat(r.pkgFile)
	r.pkgSize = fi.Size()
	r.photo, _ = os.ReadFile(filepath.Join(src, "samples", "leaf_spot.jpg"))

	r.broker = testutil.StartMosquitto(t, false)
	r.proxy = testutil.StartProxy(t, r.broker.Addr())
	r.hubDB = filepath.Join(dir, "hub.db")
	if r.shelf, err = hub.OpenShelf(filepath.Join(dir, "packages")); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(r.pkgFile)
	if _, err := r.shelf.Publish(data, []string{"kiosk-upd"}, chunk); err != nil {
		t.Fatal(err)
	}
	r.startHub()
	r.data = filepath.Join(dir, "data")
	r.config = filepath.Join(dir, "config.json")
	cfg, _ := json.Marshal(map[string]any{"device_id": "kiosk-upd", "broker": r.proxy.URL(), "data_dir": r.data,
		"model_keys": []string{programPub}, "hub_keys": []string{hubPub}})
	os.WriteFile(r.config, cfg, 0o644)
	return r
}

func (r *updateRig) startHub() {
	c, err := hub.Open(r.hubDB, hub.CollectorOptions{Shelf: r.shelf, Key: r.hubKey, Logger: testutil.Logger(r.t),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		r.t.Fatal(err)
	}
	r.hub = testutil.RunCollector(r.t, c, r.broker.URL())
}

func (r *updateRig) stopHub() {
	r.served.Add(r.hub.C.Stats().Chunks)
	r.hub.Stop()
}

func (r *updateRig) chunksServed() int64 { return r.served.Load() + r.hub.C.Stats().Chunks }

func (r *updateRig) serve(env ...string) {
	cmd := exec.Command(r.bin, "serve", "--listen", "127.0.0.1:0", "--models-dir", r.models, "--config", r.config)
	cmd.Env = append(append(os.Environ(), "OUTPOST_ORT_LIB="+testutil.LibPath(r.t)), env...)
	r.p = startCmd(r.t, cmd)
}

type deviceStatus struct {
	Update struct {
		Latest *osync.UpdateStatus `json:"latest"`
		Stats  osync.FetchStats    `json:"stats"`
	} `json:"update"`
	Installed map[string]int64 `json:"installed"`
}

func (r *updateRig) status() deviceStatus {
	var st deviceStatus
	resp, err := http.Get(r.p.url + "/v1/status")
	if err == nil {
		json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
	}
	return st
}

// waitUpdate polls the device until cond holds.
func (r *updateRig) waitUpdate(what string, cond func(*osync.UpdateStatus) bool) *osync.UpdateStatus {
	r.t.Helper()
	var got *osync.UpdateStatus
	testutil.Eventually(r.t, 90*time.Second, "the device's update to reach "+what, func() bool {
		got = r.status().Update.Latest
		return got != nil && cond(got)
	})
	return got
}

func (r *updateRig) infer() (version string, code int, err error) {
	resp, err := http.Post(r.p.url+"/v1/models/crop-disease/infer", "image/jpeg", bytes.NewReader(r.photo))
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	var res struct {
		Version string `json:"version"`
	}
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &res)
	return res.Version, resp.StatusCode, nil
}

func (r *updateRig) kill() {
	r.p.cmd.Process.Signal(syscall.SIGKILL)
	<-r.p.exit
}

func half(u *osync.UpdateStatus, frac float64) bool {
	return u.State == osync.UpdateDownloading && float64(u.Have) >= frac*float64(u.Chunks)
}

// TestModelUpdate_OverMQTT: a signed package published at the hub reaches
// a running kiosk over a real mosquitto on a slow link, through a link cut,
// a hub restart and a SIGKILL of the device mid-transfer; it resumes each
// time at the first missing chunk, is checked on its golden inputs and
// swapped in while requests keep coming — none fails, answers switch
// version — and the hub sees the outcome.
func TestModelUpdate_OverMQTT(t *testing.T) {
	r := newUpdateRig(t, 8<<10)
	r.proxy.Rate(60 << 10) // ~8 s for the package: room to interrupt it
	r.serve()
	if v, code, err := r.infer(); err != nil || code != 201 || v != r.oldVer {
		t.Fatalf("before the update: %s %d %v", v, code, err)
	}
	u := r.waitUpdate("a quarter", func(u *osync.UpdateStatus) bool { return half(u, 0.25) })
	chunks := u.Chunks
	r.proxy.Reset() // 1: the link drops mid-chunk
	r.waitUpdate("half", func(u *osync.UpdateStatus) bool { return half(u, 0.5) })
	r.stopHub()             // 2: the hub restarts
	time.Sleep(time.Second) // the hub is down a second: the scenario, not a wait
	r.startHub()
	r.waitUpdate("three quarters", func(u *osync.UpdateStatus) bool { return half(u, 0.75) })
	r.kill() // 3: power cut on the device
	r.serve()
	if u := r.status().Update.Latest; u == nil || u.Have < chunks*3/4-1 || u.State != osync.UpdateDownloading {
		t.Fatalf("after the restart the download did not resume: %+v", u)
	}
	r.proxy.Rate(0)

	// Requests all through the swap: none may fail.
	var (
		stop     atomic.Bool
		wg       gosync.WaitGroup
		mu       gosync.Mutex
		versions []string
		perW     [2][]string // each worker's answers in its own order
		failures []string
		lat      []time.Duration
	)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				t0 := time.Now()
				v, code, err := r.infer()
				took := time.Since(t0)
				mu.Lock()
				lat = append(lat, took)
				if err != nil || code != 201 {
					failures = append(failures, fmt.Sprintf("%d %v", code, err))
				} else {
					if len(versions) == 0 || versions[len(versions)-1] != v {
						versions = append(versions, v)
					}
					if pw := perW[w]; len(pw) == 0 || pw[len(pw)-1] != v {
						perW[w] = append(perW[w], v)
					}
				}
				mu.Unlock()
			}
		}()
	}
	u = r.waitUpdate("installed", func(u *osync.UpdateStatus) bool {
		return u.State == osync.UpdateInstalled || u.State == osync.UpdateRefused
	})
	// Keep the load on until answers come from the new version.
	testutil.Eventually(t, 20*time.Second, "answers from the new version", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(versions) > 0 && versions[len(versions)-1] == r.newVer
	})
	stop.Store(true)
	wg.Wait()
	if u.State != osync.UpdateInstalled || u.Version != r.newVer || u.Seq != 2 {
		t.Fatalf("update: %+v\n%s", u, r.p.logs)
	}
	// Each worker sees the old version, then the new one, never back: a
	// request begun before the swap may finish after another worker's
	// first new answer, so the order across workers is not the test.
	reached := false
	for _, pw := range perW {
		if len(pw) == 0 || pw[0] != r.oldVer || len(pw) > 2 || (len(pw) == 2 && pw[1] != r.newVer) {
			t.Fatalf("requests during the swap: a worker answered %v (want %s then %s)", pw, r.oldVer, r.newVer)
		}
		reached = reached || len(pw) == 2
	}
	if len(failures) > 0 || !reached {
		t.Fatalf("requests during the swap: %d failed (%v); versions answered in order %v", len(failures), failures, versions)
	}
	if m, err := pkg.Installed(filepath.Join(r.models, "crop-disease")); err != nil || m.Seq != 2 {
		t.Fatalf("installed on disk: %+v %v", m, err)
	}
	if _, err := os.Stat(filepath.Join(r.models, ".crop-disease.prev", "manifest.json")); err != nil {
		t.Fatalf("previous version not kept: %v", err)
	}
	// Re-sent: chunks the hub served beyond the package's own, one
	// interruption each at most.
	served := r.chunksServed()
	if extra := served - int64(chunks); extra < 0 || extra > 3 {
		t.Fatalf("hub served %d chunks for a %d-chunk package through 3 interruptions", served, chunks)
	}
	// The hub's fleet view has the outcome.
	testutil.Eventually(t, 20*time.Second, "the hub's device view to show the update installed", func() bool {
		devs, _ := r.hub.C.Devices()
		return len(devs) == 1 && devs[0].Update != nil && devs[0].Update.State == osync.UpdateInstalled && devs[0].Models["crop-disease"] == 2
	})
	resp, err := http.Get(r.p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte("outpost_update_progress_ratio 1")) || !bytes.Contains(metrics, []byte("outpost_update_installed_total 1")) {
		t.Fatalf("metrics lack the update:\n%s", grepLines(metrics, "outpost_update"))
	}
	slices.Sort(lat)
	t.Logf("package %d bytes in %d chunks; hub served %d chunks (%d re-sent through a link cut, a hub restart and a SIGKILL); proxy carried %d bytes up + %d down for everything",
		r.pkgSize, chunks, served, served-int64(chunks), r.proxy.Up.Load(), r.proxy.Down.Load())
	t.Logf("requests through the swap: %d, 0 failed; latency p50 %v, p99 %v, max %v", len(lat),
		lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
}

func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestModelUpdate_KillMidSwapAndCrashLoop: the daemon killed between the
// two renames of a swap comes back on the previous version, installs the
// downloaded package again and ends on exactly one valid version; then
// three restarts within the crash window roll the update back, the hub is
// told, and it does not offer the same package again.
func TestModelUpdate_KillMidSwapAndCrashLoop(t *testing.T) {
	r := newUpdateRig(t, 32<<10)
	r.serve("OUTPOST_FAILPOINT=pkg-swap")
	select {
	case <-r.p.exit:
	case <-time.After(90 * time.Second):
		t.Fatalf("the failpoint never fired\n%s", r.p.logs)
	}
	if _, err := os.Stat(filepath.Join(r.models, "crop-disease")); !os.IsNotExist(err) {
		t.Fatalf("killed mid-swap, the model folder should be renamed away: %v", err)
	}
	r.serve()
	u := r.waitUpdate("installed", func(u *osync.UpdateStatus) bool {
		return u.State != osync.UpdateDownloading && u.State != osync.UpdateInstalling
	})
	if u.State != osync.UpdateInstalled || u.Seq != 2 {
		t.Fatalf("after the interrupted swap: %+v\n%s", u, r.p.logs)
	}
	ents, _ := os.ReadDir(r.models)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != ".crop-disease.floor .crop-disease.prev crop-disease" {
		t.Fatalf("models dir after recovery: %v (want one installed version, its previous one and the sequence floor)", names)
	}
	if v, code, err := r.infer(); err != nil || code != 201 || v != r.newVer {
		t.Fatalf("after recovery: %s %d %v", v, code, err)
	}
	offers := r.hub.C.Stats().Offers
	// Bytes on the device's link for the whole update (offer, requests,
	// chunks, acks, and the few status messages around them).
	t.Logf("update of a %d-byte package: %d bytes up + %d down through the device's link (%.3f bytes per package byte)",
		r.pkgSize, r.proxy.Up.Load(), r.proxy.Down.Load(), float64(r.proxy.Up.Load()+r.proxy.Down.Load())/float64(r.pkgSize))

	// A crash loop: three restarts within the window.
	for i := 0; i < 3; i++ {
		r.kill()
		r.serve()
	}
	u = r.waitUpdate("rolled back", func(u *osync.UpdateStatus) bool { return u.State == osync.UpdateRolledBack })
	if !strings.Contains(u.Reason, "crash loop") {
		t.Fatalf("rollback reason: %+v", u)
	}
	if v, _, _ := r.infer(); v != r.oldVer {
		t.Fatalf("after the rollback the device answers with %s, want %s", v, r.oldVer)
	}
	if _, err := os.Stat(filepath.Join(r.models, "crop-disease", ".package.json")); !os.IsNotExist(err) {
		t.Fatalf("the rolled-back folder still says it came from the package: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, "the hub to be told of the rollback", func() bool {
		devs, _ := r.hub.C.Devices()
		return len(devs) == 1 && devs[0].Update != nil && devs[0].Update.State == osync.UpdateRolledBack
	})
	devs, _ := r.hub.C.Devices()
	seen := devs[0].StatusTime
	r.kill() // one more start: the hub must not offer the rolled-back package
	r.serve()
	// A sync point: the restarted device's status goes out at connect,
	// before the result below; once the hub has stored the result, it has
	// handled the status (and made any offer it would).
	stored, _ := r.hub.C.Count()
	if _, code, err := r.infer(); err != nil || code != 201 {
		t.Fatalf("infer after restart: %d %v", code, err)
	}
	testutil.Eventually(t, 20*time.Second, "the restarted device to report in", func() bool {
		devs, _ := r.hub.C.Devices()
		n, _ := r.hub.C.Count()
		return n > stored && len(devs) == 1 && devs[0].StatusTime.After(seen)
	})
	if got := r.hub.C.Stats().Offers; got != offers {
		t.Fatalf("the hub offered the rolled-back package again (%d offers, was %d)", got, offers)
	}
	if u := r.status().Update.Latest; u == nil || u.State != osync.UpdateRolledBack {
		t.Fatalf("after another restart: %+v", u)
	}
}

// TestModelUpdate_WatchFolder: a package dropped in the watch folder (a
// USB stick copied in) takes the same path as one over MQTT: installed
// and moved to done/, or refused into failed/ with the reason, the running
// model untouched.
func TestModelUpdate_WatchFolder(t *testing.T) {
	r := newUpdateRig(t, 32<<10)
	var cfg map[string]any
	b, _ := os.ReadFile(r.config)
	json.Unmarshal(b, &cfg)
	delete(cfg, "broker") // USB only: no link at all
	inbox := filepath.Join(t.TempDir(), "inbox")
	os.MkdirAll(inbox, 0o755)
	cfg["inbox"] = inbox
	b, _ = json.Marshal(cfg)
	os.WriteFile(r.config, b, 0o644)
	r.serve()
	pkgBytes, _ := os.ReadFile(r.pkgFile)
	bad := append([]byte(nil), pkgBytes...)
	bad[len(bad)/2] ^= 0xff // inside the model file
	os.WriteFile(filepath.Join(inbox, "tampered.opkg"), bad, 0o644)
	var reason []byte
	testutil.Eventually(t, 30*time.Second, "the tampered package to be refused", func() bool {
		var err error
		reason, err = os.ReadFile(filepath.Join(inbox, "failed", "tampered.opkg.reason.txt"))
		return err == nil
	})
	if !strings.Contains(string(reason), "model package") {
		t.Fatalf("reason: %s", reason)
	}
	if v, _, _ := r.infer(); v != r.oldVer {
		t.Fatalf("a refused package changed the model: %s", v)
	}
	os.WriteFile(filepath.Join(inbox, "crop-disease-2.opkg"), pkgBytes, 0o644)
	testutil.Eventually(t, 30*time.Second, "the package to be installed from the inbox", func() bool {
		_, err := os.Stat(filepath.Join(inbox, "done", "crop-disease-2.opkg"))
		return err == nil
	})
	if v, code, err := r.infer(); v != r.newVer || code != 201 {
		t.Fatalf("after the USB install: %s %d %v", v, code, err)
	}
	if st := r.status(); st.Installed["crop-disease"] != 2 {
		t.Fatalf("status installed: %v", st.Installed)
	}
}

// TestModelUpdate_CleanRestartsAfterActivation (issue 27): a healthy,
// golden-checked update was rolled back by three clean restarts within
// ten minutes of its activation (reproduced 4 times), and the hub never
// offered it again. Now a real daemon takes the update over MQTT and is
// stopped cleanly and started again OUTPOST_GUARD_ROUNDS times (make
// chaos: 20; default 4) inside the window: it keeps the new model every
// time. Crashes still count (TestModelUpdate_KillMidSwapAndCrashLoop).
func TestModelUpdate_CleanRestartsAfterActivation(t *testing.T) {
	rounds := 4
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_GUARD_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	r := newUpdateRig(t, 32<<10)
	r.serve()
	r.waitUpdate("installed", func(u *osync.UpdateStatus) bool { return u.State == osync.UpdateInstalled })
	rolledBack := 0
	for i := range rounds {
		r.p.cmd.Process.Signal(os.Interrupt) // systemctl restart: SIGTERM-like, a clean stop
		<-r.p.exit
		r.serve()
		v, code, err := r.infer()
		if u := r.status().Update.Latest; err != nil || code != 201 || v != r.newVer || u == nil || u.State != osync.UpdateInstalled {
			rolledBack++
			t.Errorf("clean restart %d: answered %q (%d, %v), update %+v\n%s", i+1, v, code, err, u, r.p.logs)
		}
	}
	t.Logf("clean restarts within the crash window after an activation: %d, rolled back %d", rounds, rolledBack)
}
