// Package mqtt adapts github.com/eclipse/paho.mqtt.golang to sync.Conn.
//
// Reconnection is not paho's job here: AutoReconnect is off and the
// Uplink/Collector redial with capped, fully jittered backoff, so a fleet
// does not stampede a broker that just came back.
package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	gosync "sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	osync "github.com/outpost-edge/outpost/sync"
)

// Options for connecting to a broker.
type Options struct {
	// Broker: tcp://host:1883, ssl://host:8883, ws://host:80/mqtt, wss://...;
	// several, comma-separated, for a clustered broker: each connect tries
	// them in turn, starting after the one that failed last, so a device
	// whose node died reaches another one.
	Broker   string
	Username string
	Password string
	CAFile   string // PEM CA bundle for ssl:// and wss:// (default: system roots)
	CertFile string // client certificate (mutual TLS)
	KeyFile  string
	// CleanSession: devices use a clean session (true): nothing accumulates
	// on the broker for a device that is away for weeks, and a lost ack is
	// recovered by resending, which the collector dedups. The collector
	// uses a persistent session (false) so batches published while it
	// restarts wait for it on the broker.
	CleanSession   bool
	KeepAlive      time.Duration // default 30s
	ConnectTimeout time.Duration // default 10s
	WriteTimeout   time.Duration // publish waits at most this for PUBACK; default 30s
}

// Dialer returns a sync.Dialer for opts.
func Dialer(opts Options) (osync.Dialer, error) {
	if opts.Broker == "" {
		return nil, errors.New("mqtt: no broker URL")
	}
	var tlsCfg *tls.Config
	if opts.CAFile != "" || opts.CertFile != "" {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		if opts.CAFile != "" {
			pem, err := os.ReadFile(opts.CAFile)
			if err != nil {
				return nil, fmt.Errorf("mqtt: CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("mqtt: CA file %s holds no PEM certificate", opts.CAFile)
			}
			tlsCfg.RootCAs = pool
		}
		if opts.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("mqtt: client certificate: %w", err)
			}
			tlsCfg.Certificates = []tls.Certificate{cert}
		}
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 30 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	var servers []string
	for _, b := range strings.Split(opts.Broker, ",") {
		if b = strings.TrimSpace(b); b != "" {
			servers = append(servers, b)
		}
	}
	// next is the server the next connect starts with. Each connect tries
	// the servers one by one itself: paho, given the list, moves on only
	// when a TCP connect fails — a node that accepts the connection and
	// then closes it (shutting down; a proxy in front of a dead node; a
	// cluster member refusing a session) ended every attempt with EOF at
	// the first server, and a device never reached the live ones (the
	// NATS failover test's device that stopped draining).
	var mu gosync.Mutex
	next := 0
	return func(ctx context.Context, clientID string, will *osync.Will) (osync.Conn, error) {
		mu.Lock()
		start := next
		mu.Unlock()
		var errs []error
		for k := range servers {
			i := (start + k) % len(servers)
			c, err := dialOne(ctx, servers[i], clientID, will, opts, tlsCfg)
			if err == nil {
				mu.Lock()
				next = i
				mu.Unlock()
				return c, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		mu.Lock()
		next = (start + 1) % len(servers)
		mu.Unlock()
		return nil, errors.Join(errs...)
	}, nil
}

// dialOne connects to one server.
func dialOne(ctx context.Context, server, clientID string, will *osync.Will, opts Options, tlsCfg *tls.Config) (*conn, error) {
	c := &conn{done: make(chan struct{}), writeTimeout: opts.WriteTimeout}
	po := paho.NewClientOptions()
	po.AddBroker(server)
	po.SetProtocolVersion(4) // MQTT 3.1.1 only: paho's fallback to 3.1 dialled a failing server twice
	po.SetClientID(clientID).
		SetUsername(opts.Username).
		SetPassword(opts.Password).
		SetCleanSession(opts.CleanSession).
		SetKeepAlive(opts.KeepAlive).
		SetConnectTimeout(opts.ConnectTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.lost(err) })
	if tlsCfg != nil {
		po.SetTLSConfig(tlsCfg)
	}
	if will != nil {
		po.SetBinaryWill(will.Topic, will.Payload, 1, will.Retained)
	}
	c.c = paho.NewClient(po)
	tok := c.c.Connect()
	if err := wait(ctx, tok, opts.ConnectTimeout+time.Second, nil); err != nil {
		c.c.Disconnect(0)
		return nil, fmt.Errorf("mqtt: connect %s: %w", server, err)
	}
	return c, nil
}

type conn struct {
	c            paho.Client
	done         chan struct{}
	once         gosync.Once
	mu           gosync.Mutex
	err          error
	writeTimeout time.Duration
}

func (c *conn) lost(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	})
}

// wait waits for tok, ctx, the timeout — or the connection's loss: a
// publish waiting on a broker that died returned only after the whole
// write timeout (30 s) before, keeping a collector off the broker its
// devices were already back on.
func wait(ctx context.Context, tok paho.Token, timeout time.Duration, lost <-chan struct{}) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-lost:
		return errors.New("connection lost")
	case <-t.C:
		return fmt.Errorf("timed out after %s", timeout)
	}
}

func (c *conn) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error {
	tok := c.c.Publish(topic, qos, retained, payload)
	select {
	case <-c.done:
		return fmt.Errorf("mqtt: publish %s: connection lost: %w", topic, c.Err())
	default:
	}
	if err := wait(ctx, tok, c.writeTimeout, c.done); err != nil {
		return fmt.Errorf("mqtt: publish %s: %w", topic, err)
	}
	return nil
}

func (c *conn) Subscribe(ctx context.Context, topic string, qos byte, h func(osync.Message)) error {
	tok := c.c.Subscribe(topic, qos, func(_ paho.Client, m paho.Message) {
		h(osync.Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()})
	})
	if err := wait(ctx, tok, c.writeTimeout, c.done); err != nil {
		return fmt.Errorf("mqtt: subscribe %s: %w", topic, err)
	}
	return nil
}

func (c *conn) Done() <-chan struct{} { return c.done }

func (c *conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close disconnects cleanly (the broker does not send the Will) and waits
// briefly for queued work.
func (c *conn) Close() {
	c.c.Disconnect(250)
	c.lost(errors.New("closed"))
}

// Prober returns a cheap reachability check for broker: a TCP connect to
// its host and port, closed at once (no TLS, no MQTT: a few hundred bytes).
func Prober(broker string) (func(ctx context.Context) error, error) {
	var hosts []string
	for _, b := range strings.Split(broker, ",") {
		if b = strings.TrimSpace(b); b == "" {
			continue
		}
		u, err := url.Parse(b)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("mqtt: broker URL %q: want scheme://host:port", b)
		}
		host := u.Host
		if u.Port() == "" {
			port := map[string]string{"tcp": "1883", "mqtt": "1883", "ssl": "8883", "tls": "8883", "mqtts": "8883", "ws": "80", "wss": "443"}[u.Scheme]
			if port == "" {
				port = "1883"
			}
			host = net.JoinHostPort(u.Hostname(), port)
		}
		hosts = append(hosts, host)
	}
	if len(hosts) == 0 {
		return nil, errors.New("mqtt: no broker URL")
	}
	// Any server of a cluster that answers ends the wait.
	return func(ctx context.Context) error {
		var errs []error
		for _, h := range hosts {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", h)
			if err == nil {
				return c.Close()
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}, nil
}
