package rehearsal

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	gosync "sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
)

// TestRehearsal is the field rehearsal (issue 26): the release tarball,
// installed with its install.sh into a throwaway root, the device and the
// hub run from their installed units (user, environment files, read-only
// system, state directories, MemoryMax where this machine's cgroups allow),
// mosquitto as its own user with only what `collect acl` and `collect
// provision` wrote. Driven only through the public interfaces: HTTP, the
// CLI an operator types, files on a USB stick.
func TestRehearsal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the rehearsal installs into a throwaway root, adds users and switches to them: run as root (CI does; make rehearsal)")
	}
	for _, tool := range []string{"bwrap", "setpriv", "useradd", "mosquitto", "espeak-ng", "systemd-analyze", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (scripts/sysdeps.sh test installs it): %v", tool, err)
		}
	}
	r := &rehearsal{t: t, began: time.Now(), work: t.TempDir()}
	r.install()
	r.broker()
	r.hub()
	r.device()
	ids := r.photosAndSpeech()
	r.review(ids.photo)
	r.warning()
	r.modelUpdates()
	r.conformance()
	r.usbTrip()
	r.secondDevice()
	r.leftOnDisk()
	r.step("done")
}

type rehearsal struct {
	t     *testing.T
	began time.Time
	last  time.Time
	work  string
	root  Root
	admin string // the program officer's folder (keys, packages), outside the root

	devUnit, hubUnit *Unit
	mosq, hubSvc     *service
	dev              *service
	devURL, hubURL   string
	brokerPort       int
	hubPassword      string
	snifferPassword  string
	capture          *capture
	programPub       string
	modelsSum        string // R/usr/local/share/outpost/models after install
	cgroup           string // device memory cgroup ("" when this machine has none to make)
}

const (
	devToken = "kiosk-token-rehearsal"
	hubToken = "hub-token-rehearsal"
	hubURL   = "http://127.0.0.1:8090" // the hub unit's own --listen
)

func (r *rehearsal) step(what string) {
	now := time.Now()
	if r.last.IsZero() {
		r.last = r.began
	}
	r.t.Logf("rehearsal %6.1fs (+%5.1fs): %s", now.Sub(r.began).Seconds(), now.Sub(r.last).Seconds(), what)
	r.last = now
}

func (r *rehearsal) path(p string) string { return filepath.Join(r.root.Dir, p) }

// install: build the tarball (scripts/dist.sh, the release path), unpack
// it, run its install.sh --hub with /etc and /usr/local of the throwaway
// root writable and the rest of the system read-only.
func (r *rehearsal) install() {
	t := r.t
	repo := testutil.Root(t)
	out := filepath.Join(r.work, "dist")
	r.step("building the release tarball (scripts/dist.sh; a cold cache compiles cgo for a minute or two)")
	cmd := exec.Command("bash", filepath.Join(repo, "scripts", "dist.sh"), "rehearsal", "-X github.com/outpost-edge/outpost/internal/cli.Version=rehearsal", runtime.GOARCH)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "DIST_OUT="+out)
	mustRun(t, cmd)
	name := "outpost_rehearsal_linux_" + runtime.GOARCH
	tarball := filepath.Join(out, name+".tar.gz")
	sums, _ := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if !strings.Contains(string(sums), fileSum(t, tarball)+"  "+name+".tar.gz") {
		t.Fatalf("SHA256SUMS does not name the tarball's digest:\n%s", sums)
	}
	unpacked := filepath.Join(r.work, "unpacked")
	os.MkdirAll(unpacked, 0o755)
	mustRun(t, exec.Command("tar", "-xzf", tarball, "-C", unpacked))

	r.root = Root{Dir: filepath.Join(r.work, "root")}
	for _, d := range []string{"usr/local", "var/lib", "media/stick", "mnt"} {
		os.MkdirAll(r.path(d), 0o755)
	}
	mustRun(t, exec.Command("cp", "-a", "/etc", r.path("etc")))
	r.admin = filepath.Join(r.work, "admin")
	os.MkdirAll(r.admin, 0o755) // packages are read by the hub user; the program key itself is 0600
	r.step("installing: sudo ./install.sh --hub (into the throwaway root)")
	inst := exec.Command("bwrap", "--die-with-parent", "--ro-bind", "/", "/", "--bind", r.path("etc"), "/etc",
		"--bind", r.path("usr/local"), "/usr/local", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var",
		"--tmpfs", "/run", "--ro-bind", filepath.Join(unpacked, name), "/tmp/release", "--", "sh", "/tmp/release/install.sh", "--hub")
	outb := mustRun(t, inst)
	if !strings.Contains(outb, "installed.") || !strings.Contains(outb, "hub installed") {
		t.Fatalf("install.sh said:\n%s", outb)
	}
	// What the install left, as the docs list it.
	for p, mode := range map[string]os.FileMode{"usr/local/bin/outpost": 0o755, "usr/local/lib/outpost/libonnxruntime.so.1": 0o644,
		"etc/outpost/outpost.env": 0o600, "etc/outpost/outpost.json": 0o640, "etc/outpost/hub.env": 0o600,
		"etc/systemd/system/outpost.service": 0o644, "etc/systemd/system/outpost-hub.service": 0o644} {
		fi, err := os.Stat(r.path(p))
		if err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("after install: /%s: %v (mode %v, want %v)", p, err, modeOf(fi), mode)
		}
	}
	for _, u := range []string{"outpost", "outpost-hub"} {
		if _, err := r.root.Lookup(u); err != nil {
			t.Fatalf("install.sh did not add the service user: %v", err)
		}
	}
	r.modelsSum = treeSum(t, r.path("usr/local/share/outpost/models"))
	// The installed units, checked by systemd itself (ExecStart pointed
	// into the root: systemd-analyze checks the binary exists).
	for _, u := range []string{"outpost.service", "outpost-hub.service"} {
		b, _ := os.ReadFile(r.path("etc/systemd/system/" + u))
		p := filepath.Join(r.work, u)
		os.WriteFile(p, bytes.ReplaceAll(b, []byte("/usr/local/bin/outpost"), []byte(r.path("usr/local/bin/outpost"))), 0o644)
		if out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Fatalf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}
	var err error
	if r.devUnit, err = ParseUnit(r.path("etc/systemd/system/outpost.service")); err != nil {
		t.Fatal(err)
	}
	if r.hubUnit, err = ParseUnit(r.path("etc/systemd/system/outpost-hub.service")); err != nil {
		t.Fatal(err)
	}
}

// adminRun is the operator at the hub machine's root shell: /etc of the
// root writable, the hub's state directory and the stick reachable.
func (r *rehearsal) adminRun(args ...string) string {
	r.t.Helper()
	os.MkdirAll(r.path("var/lib/outpost-hub"), 0o750)
	cmd := exec.Command("bwrap", append([]string{"--die-with-parent", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
		"--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
		"--ro-bind", r.path("usr/local"), "/usr/local", "--bind", r.path("etc"), "/etc", "--dev", "/dev", "--proc", "/proc",
		"--tmpfs", "/tmp", "--tmpfs", "/var", "--bind", r.path("var/lib/outpost-hub"), "/var/lib/outpost-hub",
		"--bind", r.admin, "/root", "--chdir", "/root", "--", "/usr/local/bin/outpost"}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/usr/sbin", "HOME=/root"}
	out, _ := runSplit(r.t, cmd)
	return out
}

// broker: the operator's mosquitto.conf as docs/HUB.md gives it, the ACL
// from `collect acl`, the hub's login from `collect provision`; mosquitto
// started as root drops to its own user, as Debian's unit does.
func (r *rehearsal) broker() {
	t := r.t
	r.step("broker: collect acl, collect provision --device hub, mosquitto as user mosquitto")
	// A monitoring login that reads everything (its own user: with
	// use_username_as_clientid a second "hub" login would push the hub off).
	acl := r.adminRun("collect", "acl") + "\nuser sniffer\ntopic read outpost/v1/#\n"
	os.WriteFile(r.path("etc/mosquitto/outpost.acl"), []byte(acl), 0o644)
	var sn struct {
		Password string `json:"mqtt_password"`
	}
	json.Unmarshal([]byte(r.adminRun("collect", "provision", "--device", "sniffer", "--passwd-file", "/etc/mosquitto/passwd")), &sn)
	r.snifferPassword = sn.Password
	var cfg struct {
		Password string `json:"mqtt_password"`
	}
	if err := json.Unmarshal([]byte(r.adminRun("collect", "provision", "--device", "hub", "--passwd-file", "/etc/mosquitto/passwd")), &cfg); err != nil || cfg.Password == "" {
		t.Fatalf("provision hub: %v", err)
	}
	r.hubPassword = cfg.Password
	r.brokerPort = testutil.FreePort(t)
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous false\npassword_file /etc/mosquitto/passwd\nacl_file /etc/mosquitto/outpost.acl\nuse_username_as_clientid true\npersistence false\nlog_dest stderr\n", r.brokerPort)
	os.WriteFile(r.path("etc/mosquitto/mosquitto.conf"), []byte(conf), 0o644)
	r.startBroker()
	r.capture = newCapture(t, fmt.Sprintf("tcp://127.0.0.1:%d", r.brokerPort), r.snifferPassword)
}

func (r *rehearsal) startBroker() {
	cmd := exec.Command("bwrap", "--die-with-parent", "--unshare-pid", "--ro-bind", "/", "/", "--ro-bind", r.path("etc"), "/etc", "--dev", "/dev",
		"--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/run", "--", "mosquitto", "-c", "/etc/mosquitto/mosquitto.conf")
	r.mosq = r.start("mosquitto", cmd, "")
	r.waitPort(r.mosq, r.brokerPort)
}

// hub: hub.env and registry.json edited as install.sh says, then the
// hub's unit.
func (r *rehearsal) hub() {
	r.step("hub: hub.env, registry.json, outpost-hub.service")
	env := fmt.Sprintf("OUTPOST_BROKER=tcp://127.0.0.1:%d\nOUTPOST_MQTT_USERNAME=hub\nOUTPOST_MQTT_PASSWORD=%s\nOUTPOST_HUB_TOKEN=%s\n", r.brokerPort, r.hubPassword, hubToken)
	// Kept as installed (OUTPOST_HUB_ADVICE), the admin's lines after it.
	writeKeep(r.t, r.path("etc/outpost/hub.env"), string(readFile(r.t, r.path("etc/outpost/hub.env")))+env)
	writeKeep(r.t, r.path("etc/outpost/registry.json"), `{"kiosk-1": {"name": "Kiosk one", "region": "Kisumu"}, "kiosk-2": {"name": "Kiosk two", "region": "Kisumu"}}`)
	r.startHub()
	if fi, err := os.Stat(r.path("var/lib/outpost-hub/hub.key")); err != nil || fi.Mode().Perm() != 0o600 || owner(fi) != r.uid("outpost-hub") {
		r.t.Fatalf("the hub's signing key: %v (mode %v, owner %d)", err, modeOf(fi), owner(fi))
	}
}

// startHub waits for /healthz (200 once connected to the broker and its
// store), or with the broker down for the page alone.
func (r *rehearsal) startHub() { r.startHubWaiting("/healthz") }

func (r *rehearsal) startHubWaiting(path string) {
	cmd, err := r.root.Command(r.hubUnit, Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.hubSvc = r.start("hub", cmd, "")
	r.hubURL = hubURL
	r.waitHTTP(r.hubSvc, hubURL+path, hubToken)
}

// device: a program key for updates (the program officer's laptop), the
// device's config from `collect provision` with the hub key pinned plus
// the sharing policy, the env file's listen address and token, a USB
// stick in, then the device's unit.
func (r *rehearsal) device() {
	t := r.t
	r.step("device: collect provision --device kiosk-1 --key hub.key → /etc/outpost/outpost.json, outpost.service")
	r.adminRun("keys", "generate", "--out", "/root/program.key")
	pub, _ := os.ReadFile(filepath.Join(r.admin, "program.key.pub"))
	r.programPub = strings.TrimSpace(string(pub))
	cfg := r.provision("kiosk-1")
	cfg["sharing"] = map[string]any{"crop-disease": map[string]any{"evidence": "always", "form": "downscaled"}}
	cfg["model_keys"] = []string{r.programPub}
	cfg["usb_dir"] = "/media/stick"
	b, _ := json.MarshalIndent(cfg, "", "  ")
	writeKeep(t, r.path("etc/outpost/outpost.json"), string(b))
	port := testutil.FreePort(t)
	writeKeep(t, r.path("etc/outpost/outpost.env"), fmt.Sprintf("OUTPOST_LISTEN=127.0.0.1:%d\nOUTPOST_TOKEN=%s\n", port, devToken))
	// The stick: its own filesystem (the kiosk refuses an empty mount point).
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m,mode=0777", "rehearsal-stick", r.path("media/stick")).CombinedOutput(); err != nil {
		t.Fatalf("mount the stick: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", r.path("media/stick")).Run() })
	r.cgroup = memCgroup(t, r.devUnit.MemoryMax)
	r.devURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	r.startDevice()
	var st struct {
		Device string `json:"device"`
		Trust  struct {
			Pinned bool `json:"hub_key_pinned"`
		} `json:"trust"`
		Sharing struct {
			Text []string `json:"text"`
		} `json:"sharing"`
	}
	r.getJSON(r.devURL+"/v1/status", devToken, &st)
	if st.Device != "kiosk-1" || !st.Trust.Pinned || !strings.Contains(strings.Join(st.Sharing.Text, " "), "hoto") {
		t.Fatalf("the device did not take its identity and sharing from the provisioned config: %+v", st)
	}
	if fi, err := os.Stat(r.path("var/lib/outpost/device.key")); err != nil || fi.Mode().Perm() != 0o600 || owner(fi) != r.uid("outpost") {
		t.Fatalf("device.key: %v (mode %v)", err, modeOf(fi))
	}
}

func (r *rehearsal) provision(dev string) map[string]any {
	out := r.adminRun("collect", "provision", "--device", dev, "--passwd-file", "/etc/mosquitto/passwd",
		"--broker", fmt.Sprintf("tcp://127.0.0.1:%d", r.brokerPort), "--key", "/var/lib/outpost-hub/hub.key")
	var cfg map[string]any
	if err := json.Unmarshal([]byte(out), &cfg); err != nil || cfg["hub_keys"] == nil {
		r.t.Fatalf("provision %s printed %q: %v", dev, out, err)
	}
	if fi, err := os.Stat(r.path("etc/mosquitto/passwd")); err != nil || owner(fi) != r.uid("mosquitto") {
		r.t.Fatalf("the password file after provisioning is not the broker's: %v (owner %d)", err, owner(fi))
	}
	// What provision tells the operator to do next.
	if err := syscall.Kill(r.mosq.pid(), syscall.SIGHUP); err != nil {
		r.t.Fatal(err)
	}
	return cfg
}

func (r *rehearsal) startDevice() {
	cmd, err := r.root.Command(r.devUnit, Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.dev = r.start("kiosk-1", cmd, r.cgroup)
	r.waitHTTP(r.dev, r.devURL+"/healthz", devToken)
}

type posted struct{ photo, speech []string }

// photosAndSpeech: leaves photographed at the kiosk and a spoken phrase,
// synced to the hub and deleted from the device on its signed acks.
func (r *rehearsal) photosAndSpeech() posted {
	t := r.t
	r.step("photos and speech in; synced, evidence uploaded, deleted on signed acks")
	var p posted
	samples := r.path("usr/local/share/outpost/models/crop-disease/samples")
	for _, s := range []string{"rust.jpg", "blight.jpg", "mosaic.jpg"} {
		b, err := os.ReadFile(filepath.Join(samples, s))
		if err != nil {
			t.Fatal(err)
		}
		p.photo = append(p.photo, r.infer("crop-disease", "image/jpeg", b).ID)
	}
	wav, _ := os.ReadFile(testutil.Speak(t, "sw", "habari, nisaidie tafadhali"))
	p.speech = append(p.speech, r.infer("kws", "audio/wav", wav).ID, r.infer("silero-vad", "audio/wav", wav).ID)
	all := append(append([]string{}, p.photo...), p.speech...)
	r.waitHubHas("kiosk-1", all)
	testutil.Eventually(t, 60*time.Second, "the device to empty its outbox and upload the 3 photos", func() bool {
		var st struct {
			Queue struct {
				Count int `json:"count"`
			} `json:"queue"`
			Waiting int64 `json:"evidence_waiting_bytes"`
			Sync    struct {
				Evidence struct {
					Uploaded int `json:"uploaded"`
				} `json:"evidence"`
				Forged int `json:"forged_acks"`
			} `json:"sync"`
		}
		r.getJSON(r.devURL+"/v1/status", devToken, &st)
		return st.Queue.Count == 0 && st.Waiting == 0 && st.Sync.Evidence.Uploaded == 3
	})
	return p
}

type inferred struct {
	ID      string `json:"id"`
	Version string `json:"version"`
}

func (r *rehearsal) infer(model, ctype string, body []byte) inferred {
	r.t.Helper()
	req, _ := http.NewRequest("POST", r.devURL+"/v1/models/"+model+"/infer", bytes.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Bearer "+devToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var res inferred
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &res) != nil || res.ID == "" {
		r.t.Fatalf("infer %s: %d %s\n%s", model, resp.StatusCode, b, r.dev.tail())
	}
	return res
}

// waitHubHas: the hub's API lists each ID once for the device.
func (r *rehearsal) waitHubHas(device string, ids []string) map[string]int {
	var seen map[string]int
	testutil.Eventually(r.t, 90*time.Second, fmt.Sprintf("the hub to store %d results of %s", len(ids), device), func() bool {
		var res struct {
			Results []struct {
				ID string `json:"id"`
			} `json:"results"`
		}
		if !r.tryJSON(r.hubURL+"/v1/results?limit=1000&device="+device, hubToken, &res) {
			return false
		}
		seen = map[string]int{}
		for _, x := range res.Results {
			seen[x.ID]++
		}
		for _, id := range ids {
			if seen[id] == 0 {
				return false
			}
		}
		return true
	})
	for id, n := range seen {
		if n != 1 {
			r.t.Fatalf("the hub stored %s %d times", id, n)
		}
	}
	return seen
}

// review: the agronomist answers a photo on the hub; the kiosk shows the
// answer and speaks it in the farmer's language.
func (r *rehearsal) review(photos []string) {
	t := r.t
	r.step("expert review: hub page API → device → kiosk shows and speaks it")
	of := photos[0]
	before := r.get(r.devURL+"/v1/results/"+of+"/speech?lang=sw", devToken)
	var aw struct {
		Awaiting []struct {
			Evidence struct {
				Of string `json:"of"`
			} `json:"evidence"`
			URL string `json:"evidence_url"`
		} `json:"awaiting"`
	}
	r.getJSON(r.hubURL+"/v1/review", hubToken, &aw)
	found := false
	for _, a := range aw.Awaiting {
		if a.Evidence.Of == of {
			found = true
			if jpg := r.get(r.hubURL+a.URL, hubToken); len(jpg) < 1000 || !bytes.HasPrefix(jpg, []byte{0xff, 0xd8}) {
				t.Fatalf("the photo at the hub: %d bytes", len(jpg))
			}
		}
	}
	if !found || len(aw.Awaiting) != len(photos) {
		t.Fatalf("awaiting review at the hub: %+v (want the %d photos)", aw, len(photos))
	}
	advice := "Ugonjwa wa batobato: ng'oa mimea iliyougua na uichome."
	body := `{"device":"kiosk-1","of":"` + of + `","label":"mosaic","advice":"` + advice + `","lang":"sw","reviewer":"Bi. Mtaalamu"}`
	r.postCreated(r.hubURL+"/v1/reviews", hubToken, body)
	testutil.Eventually(t, 60*time.Second, "the review to reach the kiosk", func() bool {
		var rs struct {
			Reviews []struct {
				Of     string `json:"of"`
				Advice string `json:"advice"`
			} `json:"reviews"`
		}
		r.getJSON(r.devURL+"/v1/reviews", devToken, &rs)
		return len(rs.Reviews) == 1 && rs.Reviews[0].Of == of && rs.Reviews[0].Advice == advice
	})
	// Said instead of the model's answer (docs/SHARING.md): exactly what
	// `outpost say` makes of the expert's words in Swahili.
	after := r.get(r.devURL+"/v1/results/"+of+"/speech?lang=sw", devToken)
	r.adminRun("say", "--lang", "sw", "--out", "/root/review-sw.wav", "Mtaalamu wa kilimo amekagua picha yako. "+advice)
	if want := readFile(t, filepath.Join(r.admin, "review-sw.wav")); len(before) < 1000 || bytes.Equal(before, after) || !bytes.Equal(after, want) {
		t.Fatalf("the expert's answer is not spoken: %d bytes before the review, %d after, %d for the expert's words", len(before), len(after), len(want))
	}
}

// warning: a program officer warns Kisumu from the hub's API; the kiosk of
// Kisumu shows it in Swahili and says it, and the hub counts it confirmed.
func (r *rehearsal) warning() {
	t := r.t
	r.step("regional warning: hub API → the region's kiosk shows and says it; the hub sees it confirmed")
	r.postCreated(r.hubURL+"/v1/warnings", hubToken, `{"region":"Kisumu","disease":"rust","days":7}`)
	var ws struct {
		Warnings []struct {
			Text string `json:"text"`
			Lang string `json:"lang"`
		} `json:"warnings"`
	}
	testutil.Eventually(t, 60*time.Second, "the warning to reach the kiosk", func() bool {
		return r.tryJSON(r.devURL+"/v1/warnings?lang=sw", devToken, &ws) && len(ws.Warnings) == 1
	})
	// The installed hub quotes the shipped model's advice (hub.env's
	// OUTPOST_HUB_ADVICE), in the kiosk's language.
	if w := ws.Warnings[0]; w.Lang != "sw" || !strings.Contains(w.Text, "Kisumu") || !strings.Contains(w.Text, "Kutu") {
		t.Fatalf("the kiosk's warning: %+v", w)
	}
	if wav := r.get(r.devURL+"/v1/speech?say=warnings&lang=sw", devToken); len(wav) < 1000 {
		t.Fatalf("the warning spoken: %d bytes", len(wav))
	}
	testutil.Eventually(t, 60*time.Second, "the hub to see the warning confirmed by kiosk-1", func() bool {
		var hv struct {
			Warnings []struct {
				Confirmed int `json:"confirmed"`
				Devices   int `json:"devices"`
			} `json:"warnings"`
		}
		return r.tryJSON(r.hubURL+"/v1/warnings", hubToken, &hv) && len(hv.Warnings) == 1 && hv.Warnings[0].Confirmed == 1 && hv.Warnings[0].Devices == 2
	})
}

// modelUpdates: a signed model over MQTT, installed under the unit's
// layout (the state directory; the shipped models stay read-only), then
// a broken one refused with the good one still answering.
func (r *rehearsal) modelUpdates() {
	t := r.t
	r.step("model update: pack (program key), collect models publish as outpost-hub, installed over MQTT")
	shipped := r.path("usr/local/share/outpost/models/crop-disease")
	next := filepath.Join(r.admin, "next", "crop-disease")
	copyTree(t, shipped, next)
	man := readJSON(t, filepath.Join(next, "manifest.json"))
	oldVer := man["version"].(string)
	man["version"] = oldVer + "-2"
	writeJSONFile(t, filepath.Join(next, "manifest.json"), man)
	r.adminRun("models", "pack", "--key", "/root/program.key", "--seq", "2", "--out", "/root/crop-disease-2.opkg",
		"--golden", "/root/next/crop-disease/samples/leaf_spot.jpg", "/root/next/crop-disease")
	r.publish("crop-disease-2.opkg")
	r.waitUpdate("installed", oldVer+"-2")
	if v := r.infer("crop-disease", "image/jpeg", readFile(t, filepath.Join(shipped, "samples", "rust.jpg"))).Version; v != oldVer+"-2" {
		t.Fatalf("after the update the device answers with %q", v)
	}
	if m := readJSON(t, r.path("var/lib/outpost/models/crop-disease/manifest.json")); m["version"] != oldVer+"-2" {
		t.Fatalf("the update is not in the state directory: version %v", m["version"])
	}

	r.step("a broken model (random bytes, signed) offered: refused, the good one keeps answering")
	bad := filepath.Join(r.admin, "bad", "crop-disease")
	copyTree(t, next, bad)
	junk := make([]byte, 64<<10)
	rand.Read(junk)
	os.WriteFile(filepath.Join(bad, man["file"].(string)), junk, 0o644)
	man["version"], man["sha256"] = oldVer+"-3-broken", fmt.Sprintf("%x", sha256.Sum256(junk))
	writeJSONFile(t, filepath.Join(bad, "manifest.json"), man)
	r.adminRun("models", "pack", "--key", "/root/program.key", "--seq", "3", "--out", "/root/crop-disease-3.opkg", "/root/bad/crop-disease")
	r.publish("crop-disease-3.opkg")
	u := r.waitUpdate("refused", oldVer+"-3-broken")
	t.Logf("broken model refused: %s", u.Reason)
	if v := r.infer("crop-disease", "image/jpeg", readFile(t, filepath.Join(shipped, "samples", "rust.jpg"))).Version; v != oldVer+"-2" {
		t.Fatalf("after the broken offer the device answers with %q", v)
	}
	if got := treeSum(t, r.path("usr/local/share/outpost/models")); got != r.modelsSum {
		t.Fatal("the shipped models under /usr/local changed")
	}
}

// publish as the hub's user, so the shelf stays the hub's.
func (r *rehearsal) publish(pkg string) {
	r.t.Helper()
	cmd, err := r.root.Command(r.hubUnit, Options{Argv: []string{"/usr/local/bin/outpost", "collect", "models", "publish", "--to", "Kisumu",
		"--data-dir", "/var/lib/outpost-hub", "--registry", "/etc/outpost/registry.json", "/srv/admin/" + pkg}, Binds: map[string]string{"/srv/admin": r.admin}})
	if err != nil {
		r.t.Fatal(err)
	}
	mustRun(r.t, cmd)
}

type update struct {
	Version, State, Reason string
}

func (r *rehearsal) waitUpdate(state, version string) update {
	var st struct {
		Update struct {
			Latest *update `json:"latest"`
		} `json:"update"`
	}
	testutil.Eventually(r.t, 120*time.Second, "the device's update to be "+state+" at "+version, func() bool {
		r.getJSON(r.devURL+"/v1/status", devToken, &st)
		u := st.Update.Latest
		return u != nil && u.Version == version && (u.State == state || u.State == "refused" || u.State == "rolled_back")
	})
	if u := st.Update.Latest; u.State != state {
		r.t.Fatalf("update %s: %s (%s)", version, u.State, u.Reason)
	}
	return *st.Update.Latest
}

// usbTrip: the link is down; the kiosk writes a bundle to the stick; at
// the district office the stick is imported as the hub's user through the
// running hub, the hub restarted (still without a broker: it must wait);
// back at the kiosk the receipt deletes exactly what the hub has.
func (r *rehearsal) usbTrip() {
	t := r.t
	r.step("USB trip: broker down, 2 photos, kiosk 'Save to USB', collect import through the running hub, receipt back")
	r.mosq.stop(t)
	samples := r.path("usr/local/share/outpost/models/crop-disease/samples")
	ids := []string{r.infer("crop-disease", "image/jpeg", readFile(t, filepath.Join(samples, "healthy.jpg"))).ID,
		r.infer("crop-disease", "image/jpeg", readFile(t, filepath.Join(samples, "leaf_spot.jpg"))).ID}
	var ex struct {
		Bundle *struct {
			File     string `json:"file"`
			Records  int    `json:"records"`
			Evidence int    `json:"evidence"`
		} `json:"bundle"`
		Deleted int `json:"deleted"`
	}
	r.postJSON(r.devURL+"/v1/usb/export", devToken, &ex)
	if ex.Bundle == nil || ex.Bundle.Records < 2 {
		t.Fatalf("the kiosk's USB export: %+v", ex.Bundle)
	}
	carried := *ex.Bundle
	t.Logf("bundle on the stick: %+v", carried)
	// sudo -u outpost-hub outpost collect import …: the running hub imports
	// (the CLI streams the bundle to its socket; the hub's sandbox does
	// not see /media).
	cmd, err := r.root.Command(r.hubUnit, Options{Argv: []string{"/usr/local/bin/outpost", "collect", "import", "/media/stick",
		"--data-dir", "/var/lib/outpost-hub"}, RW: []string{"/media"}})
	if err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, cmd); !strings.Contains(out, "through the running collector") || !strings.Contains(out, " new,") {
		t.Fatalf("collect import: %s", out)
	}
	r.hubSvc.stop(t)
	r.startHubWaiting("/") // the broker is still down: the hub must wait for it, not exit
	ex.Bundle, ex.Deleted = nil, 0
	r.postJSON(r.devURL+"/v1/usb/export", devToken, &ex)
	if ex.Deleted != carried.Records+carried.Evidence || ex.Bundle != nil {
		t.Fatalf("the receipt back at the kiosk: deleted %d, new bundle %+v", ex.Deleted, ex.Bundle)
	}
	if left, _ := filepath.Glob(r.path("media/stick/*")); len(left) != 1 || !strings.HasSuffix(left[0], ".obundle") {
		t.Fatalf("on the stick after the trip: %v (want only the carried bundle)", left)
	}
	r.startBroker()
	r.waitHubHas("kiosk-1", ids)
}

// secondDevice: provisioned while the broker runs, then mosquitto
// reloaded (kill -HUP, as docs/HUB.md says): the new device logs in, and
// the hub and the first device, restarted so they log in again, are not
// locked out.
func (r *rehearsal) secondDevice() {
	t := r.t
	r.step("second device provisioned while the broker runs; kill -HUP mosquitto; everyone logs in again")
	cfg := r.provision("kiosk-2")
	b, _ := json.Marshal(cfg)
	conf := filepath.Join(r.work, "kiosk-2.json")
	os.WriteFile(conf, b, 0o644)
	r.hubSvc.stop(t)
	r.startHub()
	r.dev.stop(t)
	r.startDevice()
	port := testutil.FreePort(t)
	state := filepath.Join(r.work, "kiosk-2-var-lib")
	cmd, err := r.root.Command(r.devUnit, Options{Binds: map[string]string{"/etc/outpost/outpost.json": conf},
		Env: []string{fmt.Sprintf("OUTPOST_LISTEN=127.0.0.1:%d", port)}, StateRoot: state})
	if err != nil {
		t.Fatal(err)
	}
	k2 := r.start("kiosk-2", cmd, "")
	url2 := fmt.Sprintf("http://127.0.0.1:%d", port)
	r.waitHTTP(k2, url2+"/healthz", devToken)
	saved := r.devURL
	r.devURL = url2
	id2 := r.infer("crop-disease", "image/jpeg", readFile(t, r.path("usr/local/share/outpost/models/crop-disease/samples/rust.jpg"))).ID
	r.devURL = saved
	id1 := r.infer("crop-disease", "image/jpeg", readFile(t, r.path("usr/local/share/outpost/models/crop-disease/samples/blight.jpg"))).ID
	r.waitHubHas("kiosk-2", []string{id2})
	r.waitHubHas("kiosk-1", []string{id1})
	k2.stop(t)
}

// leftOnDisk: every file in each state directory belongs to its service
// user, nothing half-written is left, the stick holds no temp files.
func (r *rehearsal) leftOnDisk() {
	t := r.t
	r.step("what the steps left on disk")
	r.dev.stop(t)
	r.hubSvc.stop(t)
	for dir, user := range map[string]string{"var/lib/outpost": "outpost", "var/lib/outpost-hub": "outpost-hub"} {
		uid := r.uid(user)
		var files int
		filepath.WalkDir(r.path(dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := d.Info()
			files++
			if owner(fi) != uid {
				t.Errorf("%s is owned by uid %d, not %s", strings.TrimPrefix(p, r.root.Dir), owner(fi), user)
			}
			if n := d.Name(); strings.HasSuffix(n, ".tmp") || strings.Contains(n, ".new-") || strings.HasPrefix(n, ".tmp") {
				t.Errorf("left behind: %s", strings.TrimPrefix(p, r.root.Dir))
			}
			return nil
		})
		t.Logf("/%s: %d entries, all owned by %s", dir, files, user)
	}
	if r.cgroup != "" {
		peak, _ := os.ReadFile(filepath.Join(r.cgroup, "memory.max_usage_in_bytes"))
		fails, _ := os.ReadFile(filepath.Join(r.cgroup, "memory.failcnt"))
		n, _ := strconv.ParseInt(strings.TrimSpace(string(peak)), 10, 64)
		t.Logf("device memory (cgroup v1, limit MemoryMax=%d MiB): peak %.1f MiB, limit hits %s", r.devUnit.MemoryMax>>20, float64(n)/(1<<20), strings.TrimSpace(string(fails)))
	}
}

// service is one long-running sandboxed process.
type service struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
}

// syncWriter: a service's stdout and stderr, read while it runs.
type syncWriter struct {
	mu  gosync.Mutex
	buf *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (r *rehearsal) start(name string, cmd *exec.Cmd, cgroup string) *service {
	r.t.Helper()
	if cgroup != "" {
		// Into the cgroup before bwrap runs, so the sandbox is born in it.
		cmd.Args = append([]string{"sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, cgroup}, cmd.Args...)
		cmd.Path = "/bin/sh"
	}
	s := &service{name: name, cmd: cmd, log: &bytes.Buffer{}, done: make(chan struct{})}
	w := &syncWriter{buf: s.log}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 5 * time.Second // a grandchild keeping the pipe open must not hang the test
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start %s: %v", name, err)
	}
	go func() { cmd.Wait(); close(s.done) }()
	r.t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.done
		if r.t.Failed() {
			r.t.Logf("--- %s log ---\n%s", name, w.String())
		}
	})
	return s
}

// pid is the service's main process: the sandbox's child (bwrap stays as
// its parent), what systemd would signal.
func (s *service) pid() int {
	p := s.cmd.Process.Pid
	// sh (the cgroup wrapper) execs bwrap; bwrap forks its init, which
	// forks the service.
	for range 4 {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
		if strings.TrimSpace(string(comm)) != "bwrap" {
			break
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p, p))
		f := strings.Fields(string(b))
		if err != nil || len(f) == 0 {
			break
		}
		p, _ = strconv.Atoi(f[0])
	}
	return p
}

func (s *service) stop(t *testing.T) {
	t.Helper()
	syscall.Kill(s.pid(), syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second): // TimeoutStopSec=30
		t.Fatalf("%s did not stop within TimeoutStopSec (30 s)\n%s", s.name, s.tail())
	}
}

func (s *service) tail() string {
	w := s.cmd.Stdout.(*syncWriter)
	out := w.String()
	if len(out) > 4000 {
		out = out[len(out)-4000:]
	}
	return out
}

func (r *rehearsal) waitPort(s *service, port int) {
	testutil.Eventually(r.t, 20*time.Second, s.name+" to listen on "+strconv.Itoa(port), func() bool {
		select {
		case <-s.done:
			r.t.Fatalf("%s exited:\n%s", s.name, s.tail())
		default:
		}
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (r *rehearsal) waitHTTP(s *service, url, token string) {
	testutil.Eventually(r.t, 60*time.Second, s.name+" to answer "+url, func() bool {
		select {
		case <-s.done:
			r.t.Fatalf("%s exited:\n%s", s.name, s.tail())
		default:
		}
		code, _, err := call("GET", url, token)
		return err == nil && code == 200
	})
}

// call makes one request with the bearer token and reads the answer.
func call(method, url, token string) (int, []byte, error) { return callBody(method, url, token, "") }

// callBody is call with a JSON body ("" for none).
func callBody(method, url, token, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// postCreated POSTs a JSON body and wants 201 Created.
func (r *rehearsal) postCreated(url, token, body string) {
	r.t.Helper()
	code, b, err := callBody("POST", url, token, body)
	if err != nil || code != http.StatusCreated {
		r.t.Fatalf("POST %s: %d %v %s", url, code, err, b)
	}
}

func (r *rehearsal) get(url, token string) []byte {
	r.t.Helper()
	code, b, err := call("GET", url, token)
	if err != nil || code != 200 {
		r.t.Fatalf("GET %s: %d %v %s", url, code, err, b)
	}
	return b
}

func (r *rehearsal) getJSON(url, token string, v any) {
	r.t.Helper()
	if err := json.Unmarshal(r.get(url, token), v); err != nil {
		r.t.Fatalf("GET %s: %v", url, err)
	}
}

func (r *rehearsal) tryJSON(url, token string, v any) bool {
	code, b, err := call("GET", url, token)
	return err == nil && code == 200 && json.Unmarshal(b, v) == nil
}

func (r *rehearsal) postJSON(url, token string, v any) {
	r.t.Helper()
	code, b, err := call("POST", url, token)
	if err != nil || code != 200 || json.Unmarshal(b, v) != nil {
		r.t.Fatalf("POST %s: %d %v %s", url, code, err, b)
	}
}

func (r *rehearsal) uid(user string) int {
	a, err := r.root.Lookup(user)
	if err != nil {
		r.t.Fatal(err)
	}
	return a.UID
}

// memCgroup makes a cgroup v1 memory group with MemoryMax as its limit,
// beside this process's own; "" when this machine offers none (the note
// says MemoryMax is then not emulated).
func memCgroup(t *testing.T, limit int64) string {
	b, _ := os.ReadFile("/proc/self/cgroup")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 || f[1] != "memory" {
			continue
		}
		dir := filepath.Join("/sys/fs/cgroup/memory", f[2], fmt.Sprintf("outpost-rehearsal-%d", os.Getpid()))
		if os.Mkdir(dir, 0o755) != nil || os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0o644) != nil {
			t.Logf("MemoryMax not emulated: cannot make a memory cgroup at %s", dir)
			return ""
		}
		t.Cleanup(func() { os.Remove(dir) })
		return dir
	}
	t.Log("MemoryMax not emulated: no cgroup v1 memory controller here")
	return ""
}

// mustRun runs a command to its end and returns what it printed, both
// streams.
func mustRun(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, errOut := runSplit(t, cmd)
	return out + errOut
}

func runSplit(t *testing.T, cmd *exec.Cmd) (stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s%s", strings.Join(cmd.Args, " "), err, out.String(), errOut.String())
	}
	return out.String(), errOut.String()
}

// writeKeep replaces a file's content and keeps its owner and mode, as an
// editor does.
func writeKeep(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func owner(fi os.FileInfo) int {
	if fi == nil {
		return -1
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

func modeOf(fi os.FileInfo) os.FileMode {
	if fi == nil {
		return 0
	}
	return fi.Mode().Perm()
}

func fileSum(t *testing.T, p string) string {
	b := readFile(t, p)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// treeSum is one digest over every file's path and bytes.
func treeSum(t *testing.T, dir string) string {
	h := sha256.New()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if !d.IsDir() {
			fmt.Fprintf(h, "%s\x00", strings.TrimPrefix(p, dir))
			h.Write(readFile(t, p))
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(dst), 0o755)
	mustRun(t, exec.Command("cp", "-R", src, dst))
}

func readJSON(t *testing.T, p string) map[string]any {
	var m map[string]any
	if err := json.Unmarshal(readFile(t, p), &m); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return m
}

func writeJSONFile(t *testing.T, p string, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
