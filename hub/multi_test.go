package hub_test

import (
	"bufio"
	"context"
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
	osync "github.com/outpost-edge/outpost/sync"
)

// collectorChild runs when the test binary is started as a collector
// process (HUB_CHILD_STORE set): PostgreSQL store, shared subscription,
// persistent session; it prints "ready" once subscribed.
func collectorChild() {
	ctx := context.Background()
	var st hub.Store
	var err error
	if path := os.Getenv("HUB_CHILD_BOLT"); path != "" {
		st, err = hub.OpenBolt(path)
	} else {
		st, err = hub.OpenPostgres(ctx, os.Getenv("HUB_CHILD_STORE"), hub.PGOptions{Name: os.Getenv("HUB_CHILD_NAME")})
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	commits, _ := strconv.Atoi(os.Getenv("HUB_CHILD_COMMITS")) // 0: the default
	c, err := hub.New(st, hub.CollectorOptions{ShareGroup: os.Getenv("HUB_CHILD_SHARE"), Commits: commits, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	go func() {
		<-c.Ready()
		fmt.Println("ready", c.ClientID())
	}()
	err = c.Run(ctx, testutil.Dialer(nil, os.Getenv("HUB_CHILD_BROKER"), false))
	fmt.Println("error", err)
	os.Exit(4)
}

type child struct {
	cmd  *exec.Cmd
	name string
}

func startChild(t testing.TB, name, store, broker string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "HUB_CHILD_STORE="+store, "HUB_CHILD_NAME="+name, "HUB_CHILD_BROKER="+broker, "HUB_CHILD_SHARE=hubs"), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "ready") || strings.HasPrefix(l, "error") {
				select {
				case ready <- l:
				default:
				}
			}
		}
	}()
	select {
	case l := <-ready:
		if !strings.HasPrefix(l, "ready") {
			t.Fatalf("collector %s: %s", name, l)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("collector %s did not subscribe", name)
	}
	c := &child{cmd: cmd, name: name}
	t.Cleanup(func() { c.kill() })
	return c
}

func (c *child) kill() {
	if c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGKILL)
		c.cmd.Wait()
	}
}

// TestCollectors_ThreeSharingOnePostgres: three collector processes in one
// MQTT shared-subscription group, one PostgreSQL store; eight devices
// drain 2,400 records; one collector is SIGKILLed mid-drain and restarted
// under its name (same client id, persistent session). Every record is
// stored exactly once, every device outbox ends empty.
func TestCollectors_ThreeSharingOnePostgres(t *testing.T) {
	pg := testutil.StartPostgres(t)
	store := pg.NewDatabase(t)
	broker := testutil.StartMosquitto(t, false)
	var cs []*child
	for i := 0; i < 3; i++ {
		cs = append(cs, startChild(t, fmt.Sprintf("hub-%d", i), store, broker.URL()))
	}
	const devices, per = 8, 300
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := startDevices(t, ctx, devices, per, 10, func(int) string { return broker.URL() })
	// Kill one collector once about a third has drained, restart it.
	for deadline := time.Now().Add(60 * time.Second); f.left() > devices*per*2/3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond) // the fault's trigger: polled tighter than Eventually's 10 ms
	}
	atKill := f.left()
	if atKill == 0 {
		t.Fatal("the devices drained before a collector could be killed: the test proves nothing")
	}
	cs[1].kill()
	time.Sleep(300 * time.Millisecond) // the scenario: the collector stays dead a moment
	cs[1] = startChild(t, "hub-1", store, broker.URL())
	f.drainWithin(t, 120*time.Second, cancel)
	st, err := hub.OpenPostgres(context.Background(), store, hub.PGOptions{Name: "check"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got := f.storedOnce(t, func(fn func(hub.StoredResult) error) error { return st.Each(context.Background(), fn) })
	devs, _ := st.Devices(context.Background())
	var dups int64
	for _, d := range devs {
		dups += d.Duplicates
	}
	t.Logf("3 collectors, one SIGKILLed with %d records left and restarted: %d records stored exactly once, %d redeliveries absorbed as duplicates, every outbox empty",
		atKill, got, dups)
}

// TestCollector_PostgresDown: PostgreSQL stops in the middle of a drain.
// The collector refuses what it cannot store (an ack saying "unavailable"),
// so devices keep their records and back off; when the database is back
// the drain completes, every record stored exactly once.
func TestCollector_PostgresDown(t *testing.T) {
	pg := testutil.StartPostgres(t)
	store := pg.NewDatabase(t)
	broker := testutil.StartMosquitto(t, false)
	st, err := hub.OpenPostgres(context.Background(), store, hub.PGOptions{Name: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := hub.New(st, hub.CollectorOptions{Logger: testutil.Logger(t), MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunCollector(t, c, broker.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const per = 600
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	for i := 0; i < per; i++ {
		if _, err := ob.Append(ctx, &outbox.Record{Device: "pi-db", Model: "m", Version: "1", Task: "t", Output: []byte(`{}`)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	u, err := osync.NewUplink(ob, testutil.Dialer(t, broker.URL(), true), osync.UplinkOptions{Device: "pi-db",
		BatchRecords: 3, Window: 1, AckTimeout: 2 * time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	count := func() int64 { s, _ := ob.Stats(); return s.Count }
	testutil.Eventually(t, 60*time.Second, "the first tenth to drain", func() bool { return count() <= per*9/10 })
	pg.Down(t)
	atDown := count()
	time.Sleep(1500 * time.Millisecond) // the scenario: the database is down this long
	during := count()
	pg.Up(t)
	testutil.Eventually(t, 60*time.Second, "the device to drain after the database came back", func() bool { return count() == 0 })
	if n := count(); n != 0 {
		t.Fatalf("%d records still on the device 60 s after the database came back", n)
	}
	cancel()
	<-done
	n, err := st.Count(context.Background())
	if err != nil || n != per {
		t.Fatalf("stored %d of %d (%v)", n, per, err)
	}
	cs := c.Stats()
	if cs.Refused == 0 {
		t.Fatal("no batch was refused while the database was down: the outage was not hit")
	}
	t.Logf("database down with %d records on the device (%d after 1.5 s: the device kept them); after restart %d stored exactly once; collector %+v",
		atDown, during, n, cs)
}
