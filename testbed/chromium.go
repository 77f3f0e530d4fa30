package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/remote"
)

// Chromium is a headless Chromium with its DevTools endpoint on loopback,
// for browser tests driven by chromedp.
type Chromium struct {
	dir   string
	wsURL string
	proc  *process
}

// chromiumFlags are the flags that work on our machines: as root Chromium
// needs --no-sandbox; without the background-networking flags it keeps
// trying to reach Google's hosts, which a closed network refuses.
var chromiumFlags = []string{
	"--headless",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-quic",
	"--no-first-run",
	"--no-default-browser-check",
	"--disable-background-networking",
	"--disable-component-update",
	"--disable-sync",
	"--disable-dev-shm-usage",
	// The crash handler daemonizes into its own session, out of reach of
	// the process-group teardown; we have no use for crash reports.
	"--disable-crash-reporter",
	"--disable-breakpad",
	"--remote-debugging-address=127.0.0.1",
	// Port 0: Chromium picks a free port and writes it to
	// DevToolsActivePort in the profile directory, so no race.
	"--remote-debugging-port=0",
}

// NewChromium starts a headless Chromium for t and stops it when t ends.
func NewChromium(t testing.TB) *Chromium {
	t.Helper()
	c, err := StartChromium(context.Background())
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	register(t, "chromium", c)
	return c
}

// StartChromium starts Chromium with a new empty profile.
func StartChromium(ctx context.Context) (*Chromium, error) {
	bin, err := lookBinary("chromium", "OUTPOST_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "outpost-chromium-")
	if err != nil {
		return nil, fmt.Errorf("chromium: creating directory: %w", err)
	}
	profile := filepath.Join(dir, "profile")
	argv := append([]string{bin}, chromiumFlags...)
	argv = append(argv, "--user-data-dir="+profile, "about:blank")
	proc, err := startProcess(procSpec{
		name:    "chromium",
		argv:    argv,
		dir:     dir,
		logPath: filepath.Join(dir, "chromium.log"),
		env:     []string{"HOME=" + dir},
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &Chromium{dir: dir, proc: proc}
	if err := c.waitDevTools(ctx, filepath.Join(profile, "DevToolsActivePort"), 60*time.Second); err != nil {
		_ = proc.stop(syscall.SIGTERM, 5*time.Second)
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

// waitDevTools waits for Chromium to write the DevTools port file: the
// first line is the port, the second the browser target path.
func (c *Chromium) waitDevTools(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c.proc.exited() {
			return c.proc.exitError()
		}
		if b, err := os.ReadFile(path); err == nil {
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) == 2 {
				c.wsURL = "ws://127.0.0.1:" + strings.TrimSpace(lines[0]) + strings.TrimSpace(lines[1])
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("chromium did not open its DevTools port within %v; log ends with:\n%s", timeout, c.proc.logTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WebSocketURL returns the browser's DevTools WebSocket URL.
func (c *Chromium) WebSocketURL() string { return c.wsURL }

// NewContext returns a chromedp context bound to a new tab of this browser.
// Cancel it to close the tab.
func (c *Chromium) NewContext(parent context.Context) (context.Context, context.CancelFunc) {
	actx, cancelAlloc := remote.NewAllocator(parent, c.wsURL, remote.NoModifyURL)
	ctx, cancelTab := chromedp.NewContext(actx)
	return ctx, func() {
		cancelTab()
		cancelAlloc()
	}
}

// Close stops the browser and every helper process it started, and
// removes its profile.
func (c *Chromium) Close() error {
	return shutdown(c.proc, syscall.SIGTERM, 10*time.Second, c.dir)
}

func (c *Chromium) logs() []string { return []string{filepath.Join(c.dir, "chromium.log")} }
