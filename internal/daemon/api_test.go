// The HTTP API under load and attack: slow and stalled uploads, sizes,
// idempotency keys, Host and Origin, a cross-origin page in a browser.

package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestAPI_SlowUploadsDoNotHoldSlots: uploads still arriving do not take
// the inference slots.
func TestAPI_SlowUploadsDoNotHoldSlots(t *testing.T) {
	_, srv := newTestDaemon(t, func(c *Config) { c.MaxConcurrent = 2 })
	addr := strings.TrimPrefix(srv.URL, "http://")
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /v1/models/crop-disease/infer HTTP/1.1\r\nHost: %s\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\nslow", addr)
	}
	time.Sleep(200 * time.Millisecond) // the scenario: the slow uploads are under way (the daemon shows no sign of them to wait on)
	code, body, _ := post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", sample(t, "crop-disease/samples/rust.jpg"))
	if code != 201 {
		t.Fatalf("with two slow uploads pending: %d %v", code, body)
	}
}

// TestAPI_DeclaredTooLarge: 413 at once, before any body byte.
func TestAPI_DeclaredTooLarge(t *testing.T) {
	_, srv := newTestDaemon(t, nil)
	addr := strings.TrimPrefix(srv.URL, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/models/crop-disease/infer HTTP/1.1\r\nHost: %s\r\nContent-Type: image/jpeg\r\nContent-Length: 10737418240\r\n\r\n", addr)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, "413") {
		t.Fatalf("status line %q, %v", line, err)
	}
}

// TestAPI_IdempotencyKey: a retried POST answers with the first result.
func TestAPI_IdempotencyKey(t *testing.T) {
	d, srv := newTestDaemon(t, nil)
	photo := sample(t, "crop-disease/samples/rust.jpg")
	c1, b1, _ := post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", photo, "Idempotency-Key", "k-1")
	c2, b2, _ := post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", photo, "Idempotency-Key", "k-1")
	c3, b3, _ := post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", photo, "Idempotency-Key", "k-2")
	if c1 != 201 || c2 != 201 || c3 != 201 || b1["id"] != b2["id"] || b1["id"] == b3["id"] {
		t.Fatalf("%d %v / %d %v / %d %v", c1, b1["id"], c2, b2["id"], c3, b3["id"])
	}
	if n := queueCount(t, d); n != 2 {
		t.Fatalf("queue %d, want 2", n)
	}
}

// TestAPI_HostOriginAndMethods: a foreign Host (DNS rebinding) and a
// cross-origin POST are refused; GET on the infer route is 405 in JSON.
func TestAPI_HostOriginAndMethods(t *testing.T) {
	d, srv := newTestDaemon(t, nil)
	photo := sample(t, "crop-disease/samples/rust.jpg")
	req, _ := http.NewRequest("GET", srv.URL+"/v1/status", nil)
	req.Host = "rebind.example:8080"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("foreign Host: %d", resp.StatusCode)
	}
	// No Host at all (HTTP/1.0 from a local script): not a browser, allowed.
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /healthz HTTP/1.0\r\n\r\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.Contains(line, "200") {
		t.Fatalf("HTTP/1.0 without Host: %q", line)
	}
	code, _, _ := post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", photo, "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site")
	if code != 403 || queueCount(t, d) != 0 {
		t.Fatalf("cross-origin post: %d, queue %d", code, queueCount(t, d))
	}
	code, _, _ = post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", photo, "Origin", srv.URL, "Sec-Fetch-Site", "same-origin")
	if code != 201 {
		t.Fatalf("same-origin post: %d", code)
	}
	resp, err = http.Get(srv.URL + "/v1/models/crop-disease/infer")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 405 || !strings.Contains(string(b), `"error"`) {
		t.Fatalf("GET infer: %d %s", resp.StatusCode, b)
	}
}

// TestAPI_CrossOriginBrowser: a page from another origin, open in a real
// browser on the device, posts a forged alert to the loopback API (a
// multipart POST needs no preflight). Nothing may be stored.
func TestAPI_CrossOriginBrowser(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not installed (scripts/sysdeps.sh installs it): %v", err)
	}
	d, srv := newTestDaemon(t, nil)
	photo := sample(t, "crop-disease/samples/rust.jpg")
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/leaf.jpg" {
			w.Write(photo)
			return
		}
		fmt.Fprintf(w, `<!doctype html><body><script>
(async () => {
  const leaf = await (await fetch('/leaf.jpg')).blob();
  const fd = new FormData(); fd.append('file', new Blob([leaf], {type: 'image/jpeg'}), 'forged.jpg');
  try { await fetch(%q, {method: 'POST', body: fd, mode: 'no-cors'}); } catch (e) {}
  const p = document.createElement('p'); p.id = 'done'; p.textContent = 'sent'; document.body.appendChild(p);
})();
</script></body>`, srv.URL+"/v1/models/crop-disease/infer?priority=alert")
	}))
	defer evil.Close()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.Headless,
		chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()), chromedp.Flag("disable-background-networking", true))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// The evil page on "localhost", the API on 127.0.0.1: different origins.
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)
	if err := chromedp.Do(ctx, chromedp.Navigate(evilURL+"/"), chromedp.WaitVisible(chromedp.ID("done"))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a request the page made would land meanwhile: "nothing stored" has no event to wait on
	if n := queueCount(t, d); n != 0 {
		t.Fatalf("a cross-origin page stored %d result(s)", n)
	}
}

// TestAPI_StalledUploadsFreeTheirSlots (issue 25): three uploads that
// stall after a few bytes locked out every upload for 60 s (the slots are
// max_concurrent + 1). Below the minimum rate after the grace, a slot is
// freed and the stalled client is told why.
func TestAPI_StalledUploadsFreeTheirSlots(t *testing.T) {
	_, srv := newTestDaemon(t, func(c *Config) { c.MaxConcurrent = 2 })
	addr := strings.TrimPrefix(srv.URL, "http://")
	answers := make(chan string, 3)
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /v1/models/crop-disease/infer HTTP/1.1\r\nHost: %s\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\nstall", addr)
		go func() {
			line, _ := bufio.NewReader(c).ReadString('\n')
			answers <- line
		}()
	}
	start := time.Now()
	for i := 0; i < 3; i++ {
		select {
		case line := <-answers:
			if !strings.Contains(line, "408") {
				t.Fatalf("a stalled upload was answered %q", line)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("stalled uploads still held their slots after 30 s")
		}
	}
	freed := time.Since(start)
	code, body, _ := post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", sample(t, "crop-disease/samples/rust.jpg"))
	if code != 201 {
		t.Fatalf("after the stalled uploads were cut: %d %v", code, body)
	}
	t.Logf("3 stalled uploads cut after %s (was 60 s); the next upload stored", freed.Round(100*time.Millisecond))
}

// TestAPI_IdempotencyKeyAcrossRestart (issue 27): a retry after the daemon
// restarted stored a second record (5 records for 3 keys). The key is kept
// in the outbox beside the record, in the same commit.
func TestAPI_IdempotencyKeyAcrossRestart(t *testing.T) {
	data := t.TempDir()
	photo := sample(t, "crop-disease/samples/rust.jpg")
	var first map[string]any
	for run := 1; run <= 2; run++ {
		d, srv := newTestDaemon(t, func(c *Config) { c.DataDir = data })
		code, body, _ := post(t, srv.URL+"/v1/models/crop-disease/infer", "image/jpeg", photo, "Idempotency-Key", "photo-17")
		if code != 201 {
			t.Fatalf("run %d: %d %v", run, code, body)
		}
		if run == 1 {
			first = body
		} else if body["id"] != first["id"] || queueCount(t, d) != 1 {
			t.Fatalf("after a restart the retry got %v (first %v); queue %d, want 1", body["id"], first["id"], queueCount(t, d))
		} else if body["result"] == nil {
			t.Fatalf("the retry's answer lacks the result still on the device: %v", body)
		}
		srv.Close()
		d.Close()
	}
}
