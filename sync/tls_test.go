package sync_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
	"github.com/outpost-edge/outpost/sync/mqtt"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, as PEM files in dir.
func pki(t *testing.T, dir, prefix string) (ca, srvCert, srvKey, cliCert, cliKey string) {
	t.Helper()
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: prefix + " test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, prefix+name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
			KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		kder, _ := x509.MarshalECPrivateKey(k)
		return write(name+".pem", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kder)
	}
	ca = write("ca.pem", "CERTIFICATE", caDER)
	srvCert, srvKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return
}

// TestSync_MutualTLS: a drain over ssl:// to a mosquitto that requires a
// client certificate; a device trusting another CA is refused with a
// certificate error, and one without a client certificate is refused too.
func TestSync_MutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, sc, sk, cc, ck := pki(t, dir, "good-")
	otherCA, _, _, _, _ := pki(t, dir, "other-")
	broker := testutil.StartMosquittoWith(t, false,
		"cafile "+ca+"\ncertfile "+sc+"\nkeyfile "+sk+"\nrequire_certificate true\n")
	url := "ssl://" + broker.Addr()

	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	for i := 0; i < 50; i++ {
		ob.Append(context.Background(), &outbox.Record{Device: "pi-tls", Output: []byte(`{}`)}, nil)
	}
	hubDial, _ := mqtt.Dialer(mqtt.Options{Broker: url, CAFile: ca, CertFile: cc, KeyFile: ck})
	col, _ := hub.Open(filepath.Join(t.TempDir(), "hub.db"), hub.CollectorOptions{})
	defer col.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go col.Run(ctx, hubDial)
	<-col.Ready()

	devDial, err := mqtt.Dialer(mqtt.Options{Broker: url, CAFile: ca, CertFile: cc, KeyFile: ck, CleanSession: true})
	if err != nil {
		t.Fatal(err)
	}
	// A batch published before the collector subscribes is resent after
	// the ack timeout: keep it short so a slow start costs seconds.
	up, _ := osync.NewUplink(ob, devDial, osync.UplinkOptions{Device: "pi-tls", MinBackoff: 50 * time.Millisecond, AckTimeout: 2 * time.Second})
	dctx, dcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer dcancel()
	if err := up.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := col.Count(); n != 50 {
		t.Fatalf("collector has %d of 50 over TLS", n)
	}

	wrongCA, _ := mqtt.Dialer(mqtt.Options{Broker: url, CAFile: otherCA, CertFile: cc, KeyFile: ck, ConnectTimeout: 3 * time.Second})
	if _, err := wrongCA(context.Background(), "intruder", nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted broker certificate accepted: %v", err)
	}
	noCert, _ := mqtt.Dialer(mqtt.Options{Broker: url, CAFile: ca, ConnectTimeout: 3 * time.Second})
	if c, err := noCert(context.Background(), "anonymous", nil); err == nil {
		c.Close()
		t.Fatal("broker accepted a client without a certificate")
	}
}
