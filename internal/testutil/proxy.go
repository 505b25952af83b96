package testutil

import (
	"io"
	"net"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP fault injector between a client and a server on loopback:
// it can reset every connection, refuse new ones, stall traffic, or limit
// bandwidth (a 2G link is about 5 KB/s).
type Proxy struct {
	t      testing.TB
	target string
	ln     net.Listener

	mu      gosync.Mutex
	conns   map[net.Conn]bool
	refuse  bool
	stalled bool
	rate    int           // bytes per second per direction; 0 = unlimited
	delay   time.Duration // one-way latency added to every byte (new connections)
	wg      gosync.WaitGroup

	// Up counts bytes client → server, Down server → client: the real
	// TCP payload on the wire, for benchmarks of bytes per record.
	Up, Down atomic.Int64
}

// StartProxy listens on a free loopback port and forwards to target.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{t: t, target: target, ln: ln, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// URL is the proxy's tcp:// address.
func (p *Proxy) URL() string { return "tcp://" + p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(s, c, &p.Up)
		go p.pipe(c, s, &p.Down)
	}
}

func (p *Proxy) pipe(dst, src net.Conn, count *atomic.Int64) {
	defer p.wg.Done()
	defer func() {
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	p.mu.Lock()
	delay := p.delay
	p.mu.Unlock()
	if delay > 0 {
		// Latency without a bandwidth cost: bytes are read at once and
		// written delay later, so several messages can be on the way.
		type timed struct {
			at   time.Time
			data []byte
		}
		q := make(chan timed, 1024)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for m := range q {
				time.Sleep(time.Until(m.at.Add(delay)))
				if _, err := dst.Write(m.data); err != nil {
					return
				}
			}
		}()
		defer func() { close(q); <-done }()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				count.Add(int64(n))
				q <- timed{time.Now(), append([]byte(nil), buf[:n]...)}
			}
			if err != nil {
				return
			}
		}
	}
	buf := make([]byte, 4096)
	for {
		p.mu.Lock()
		rate, stalled := p.rate, p.stalled
		p.mu.Unlock()
		if stalled {
			time.Sleep(10 * time.Millisecond)
			// Keep reading nothing; the peer's writes pile up in kernel buffers.
			if _, ok := p.live(src); !ok {
				return
			}
			continue
		}
		chunk := buf
		if rate > 0 && rate/10 < len(chunk) {
			chunk = buf[:max(rate/10, 1)]
		}
		src.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := src.Read(chunk)
		if n > 0 {
			if _, werr := dst.Write(chunk[:n]); werr != nil {
				return
			}
			count.Add(int64(n))
			if rate > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
			}
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			if err != io.EOF {
				return
			}
			return
		}
	}
}

func (p *Proxy) live(c net.Conn) (net.Conn, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return c, p.conns[c]
}

// Reset closes every open connection abruptly (RST), mid-message if busy.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
		delete(p.conns, c)
	}
}

// Refuse makes new connections fail (true) or work again (false).
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Stall stops forwarding in both directions without closing (true), or resumes.
func (p *Proxy) Stall(on bool) {
	p.mu.Lock()
	p.stalled = on
	p.mu.Unlock()
}

// Rate limits each direction to bytesPerSec (0 = unlimited).
func (p *Proxy) Rate(bytesPerSec int) {
	p.mu.Lock()
	p.rate = bytesPerSec
	p.mu.Unlock()
}

// Delay adds one-way latency d to connections made from now on (a 2G or
// satellite link: 150 ms each way is a 300 ms round trip).
func (p *Proxy) Delay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Close stops the proxy and every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Reset()
	p.wg.Wait()
}
