package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	gosync "sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testutil"
	osync "github.com/outpost-edge/outpost/sync"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

// TestBrokerACL: credentials from `collect provision`, the ACL from
// `collect acl`, a real mosquitto enforcing both. A device can publish
// its own results and read its own acks; it cannot publish as another
// device, read another device's acks, or forge acks for it; anonymous and
// wrong-password clients are refused.
func TestBrokerACL(t *testing.T) {
	dir := t.TempDir()
	passwd, aclFile := filepath.Join(dir, "passwd"), filepath.Join(dir, "outpost.acl")
	creds := map[string]string{}
	for _, who := range []string{"pi-a", "pi-b", "hub"} {
		out, errOut, code := run(t, nil, "collect", "provision", "--device", who, "--passwd-file", passwd)
		var cfg map[string]any
		if code != ExitOK || json.Unmarshal([]byte(out), &cfg) != nil {
			t.Fatalf("provision %s: %d %s%s", who, code, out, errOut)
		}
		creds[who] = cfg["mqtt_password"].(string)
	}
	acl, _, _ := run(t, nil, "collect", "acl")
	os.WriteFile(aclFile, []byte(acl), 0o644)
	broker := testutil.StartMosquittoWith(t, false, "allow_anonymous false\npassword_file "+passwd+"\nacl_file "+aclFile+"\nuse_username_as_clientid true\n")
	ctx := context.Background()
	connect := func(user, pass string) (osync.Conn, error) {
		d, err := mqtt.Dialer(mqtt.Options{Broker: broker.URL(), Username: user, Password: pass, CleanSession: true, ConnectTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return d(ctx, user+"-client", nil)
	}
	if _, err := connect("", ""); err == nil {
		t.Fatal("an anonymous client connected")
	}
	if _, err := connect("pi-a", "wrong"); err == nil {
		t.Fatal("a wrong password connected")
	}
	hubc, err := connect("hub", creds["hub"])
	if err != nil {
		t.Fatal(err)
	}
	defer hubc.Close()
	a, err := connect("pi-a", creds["pi-a"])
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := connect("pi-b", creds["pi-b"])
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var mu gosync.Mutex
	seen := map[string][]string{} // who -> "topic payload"
	got := func(who string) func(osync.Message) {
		return func(m osync.Message) {
			mu.Lock()
			seen[who] = append(seen[who], m.Topic+" "+string(m.Payload))
			mu.Unlock()
		}
	}
	hubc.Subscribe(ctx, osync.TopicPrefix+"+/results", 1, got("hub"))
	hubc.Subscribe(ctx, osync.TopicPrefix+"+/evidence", 1, got("hub-evidence"))
	a.Subscribe(ctx, osync.AckTopic("pi-a"), 1, got("pi-a"))
	a.Subscribe(ctx, osync.AckTopic("pi-b"), 1, got("pi-a")) // not allowed: must get nothing
	b.Subscribe(ctx, osync.AckTopic("pi-b"), 1, got("pi-b"))
	// In order from one publisher: if the forbidden message were delivered,
	// it would arrive before the allowed one.
	a.Publish(ctx, osync.ResultsTopic("pi-b"), 1, false, []byte("spoofed"))
	a.Publish(ctx, osync.AckTopic("pi-b"), 1, false, []byte("forged-ack"))
	a.Publish(ctx, osync.ResultsTopic("pi-a"), 1, false, []byte("own"))
	a.Publish(ctx, osync.EvidenceTopic("pi-a"), 1, false, []byte("photo")) // issue 26: the ACL had no rule for it
	hubc.Publish(ctx, osync.AckTopic("pi-b"), 1, false, []byte("b-secret"))
	hubc.Publish(ctx, osync.AckTopic("pi-a"), 1, false, []byte("a-ack"))
	want := map[string]string{"hub": osync.ResultsTopic("pi-a") + " own", "pi-a": osync.AckTopic("pi-a") + " a-ack", "pi-b": osync.AckTopic("pi-b") + " b-secret",
		"hub-evidence": osync.EvidenceTopic("pi-a") + " photo"}
	testutil.Eventually(t, 10*time.Second, "the four allowed messages", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen["hub"])+len(seen["pi-a"])+len(seen["pi-b"])+len(seen["hub-evidence"]) >= 4
	})
	time.Sleep(200 * time.Millisecond) // a denied message would arrive in this time: the ACL's refusals are "nothing happens"
	mu.Lock()
	defer mu.Unlock()
	for who, w := range want {
		if len(seen[who]) != 1 || seen[who][0] != w {
			t.Errorf("%s received %q, want exactly %q", who, seen[who], w)
		}
	}
	t.Logf("ACL enforced by mosquitto: hub got %q; pi-a got %q (not pi-b's ack); pi-b got %q (not pi-a's forged ack)", seen["hub"], seen["pi-a"], seen["pi-b"])
	mu.Unlock()

	// pi-a logging in with pi-b's client ID does not kick pi-b off
	// (use_username_as_clientid, as docs/HUB.md says).
	d, _ := mqtt.Dialer(mqtt.Options{Broker: broker.URL(), Username: "pi-a", Password: creds["pi-a"], CleanSession: true, ConnectTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second})
	if c, err := d(ctx, "pi-b-client", nil); err == nil {
		defer c.Close()
	}
	if err := b.Publish(ctx, osync.ResultsTopic("pi-b"), 1, false, []byte("still here")); err != nil {
		t.Errorf("pi-b was kicked off by pi-a taking its client ID: %v", err)
	}

	// A second device provisioned while the broker runs, then pi-b revoked:
	// after a reload nobody else is locked out and pi-b cannot log in.
	if _, errOut, code := run(t, nil, "collect", "provision", "--device", "pi-c", "--passwd-file", passwd); code != ExitOK {
		t.Fatalf("provision pi-c: %s", errOut)
	}
	if _, errOut, code := run(t, nil, "collect", "revoke", "--device", "pi-b", "--passwd-file", passwd); code != ExitOK {
		t.Fatalf("revoke pi-b: %s", errOut)
	}
	if err := broker.Reload(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "pi-b could still log in after its revocation and a reload", func() bool {
		_, err := connect("pi-b", creds["pi-b"])
		return err != nil
	})
	if c, err := connect("hub", creds["hub"]); err != nil {
		t.Fatalf("the hub was locked out by a reload after provisioning: %v", err)
	} else {
		c.Close()
	}
	mu.Lock()
}
