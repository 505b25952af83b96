package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Broker is a real mosquitto process on a loopback port, for tests.
type Broker struct {
	t       testing.TB
	Port    int
	dir     string
	persist bool
	cmd     *exec.Cmd
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartMosquitto runs mosquitto on 127.0.0.1. With persist, QoS 1 messages
// and sessions survive a restart (saved on shutdown and every second).
// A missing mosquitto fails the test: CI installs it (scripts/sysdeps.sh).
func StartMosquitto(t testing.TB, persist bool) *Broker {
	t.Helper()
	return StartMosquittoWith(t, persist, "")
}

// StartMosquittoWith adds listener options (e.g. TLS files) to the config.
func StartMosquittoWith(t testing.TB, persist bool, listenerConf string) *Broker {
	t.Helper()
	if _, err := exec.LookPath("mosquitto"); err != nil {
		if _, err2 := os.Stat("/usr/sbin/mosquitto"); err2 != nil {
			t.Fatalf("mosquitto not installed (scripts/sysdeps.sh installs it): %v", err)
		}
	}
	b := &Broker{t: t, Port: FreePort(t), dir: t.TempDir(), persist: persist}
	anon := "allow_anonymous true\n"
	if strings.Contains(listenerConf, "allow_anonymous") {
		anon = "" // the caller decides (password file and ACL tests)
	}
	conf := fmt.Sprintf("listener %d 127.0.0.1\n%s%smax_queued_messages 100000\nmax_inflight_messages 100\n", b.Port, listenerConf, anon)
	if persist {
		conf += fmt.Sprintf("persistence true\npersistence_location %s/\nautosave_interval 1\n", b.dir)
	} else {
		conf += "persistence false\n"
	}
	if os.Geteuid() == 0 {
		conf += "user root\n" // else mosquitto drops to user 'mosquitto', which cannot write the temp dir
	}
	if err := os.WriteFile(filepath.Join(b.dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Start()
	t.Cleanup(b.Kill)
	return b
}

// URL is the broker's tcp:// address.
func (b *Broker) URL() string { return "tcp://127.0.0.1:" + strconv.Itoa(b.Port) }

// Addr is host:port.
func (b *Broker) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.Port) }

// Start launches the process and waits until it accepts connections.
func (b *Broker) Start() {
	b.t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
	}
	b.cmd = exec.Command(bin, "-c", filepath.Join(b.dir, "mosquitto.conf"))
	log, _ := os.Create(filepath.Join(b.dir, "mosquitto.log"))
	b.cmd.Stdout, b.cmd.Stderr = log, log
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", b.Addr(), 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
	b.t.Fatalf("mosquitto did not start on %s:\n%s", b.Addr(), out)
}

// Stop ends the broker gracefully (SIGTERM: persistence is saved).
func (b *Broker) Stop() { b.signal(syscall.SIGTERM) }

// Kill ends it at once (SIGKILL: only what autosave wrote survives).
func (b *Broker) Kill() { b.signal(syscall.SIGKILL) }

func (b *Broker) signal(sig syscall.Signal) {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Signal(sig)
	b.cmd.Wait()
	b.cmd = nil
}

// Pid is the running broker's process id (0 if stopped).
func (b *Broker) Pid() int {
	if b.cmd == nil || b.cmd.Process == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// Reload sends mosquitto SIGHUP: it rereads its password and ACL files (as
// the unprivileged user it runs as, on a real install).
func (b *Broker) Reload() error { return b.cmd.Process.Signal(syscall.SIGHUP) }
