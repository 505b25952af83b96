package testutil

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is a headless Chromium (Debian's chromium package) at the given
// window size, for page tests; the context ends with the test or after
// timeout.
func Browser(t testing.TB, width, height int, timeout time.Duration) context.Context {
	t.Helper()
	return BrowserWith(t, width, height, timeout)
}

// BrowserWith is Browser with extra Chromium flags (a fake microphone:
// use-fake-device-for-media-stream, use-file-for-fake-audio-capture).
func BrowserWith(t testing.TB, width, height int, timeout time.Duration, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not installed (scripts/sysdeps.sh installs it): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(width, height))
	opts = append(opts, extra...)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	ctx, cancelC := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancelC(); cancelB(); cancelA() })
	return ctx
}
