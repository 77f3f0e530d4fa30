package browser

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/testbed"
)

// tabTimeout bounds everything one step does in its tab, so that a page
// that never shows what the step waits for fails it instead of hanging
// the run.
const tabTimeout = 60 * time.Second

// suite is what the steps of TestDashboard share: one control plane with
// its fleet, and the package's one Chromium.
type suite struct {
	env *cptest.Env
	f   *fleet
	// browser is a chromedp context attached to the Chromium; each step
	// opens its tabs from it.
	browser context.Context
}

// startBrowser starts a headless Chromium for t and attaches to it. A
// missing or broken Chromium fails the test: these tests run in CI and
// never skip.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	c := testbed.NewChromium(t)
	ctx, cancel := c.NewContext(context.Background())
	t.Cleanup(cancel) // before the browser stops (cleanups run last first)
	// The first run attaches to the browser; it must not carry a timeout,
	// which would end the connection with it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("attaching to chromium: %v", err)
	}
	return ctx
}

// tab is one browser tab, in a browser context of its own (its own
// cookies), on a control plane.
type tab struct {
	t   *testing.T
	env *cptest.Env
	// ctx carries the tab's deadline; base does not, so that a failure
	// can still be described after the deadline passed.
	ctx, base context.Context
}

// newTab opens a tab 1280 CSS pixels wide in a new browser context, for
// the length of t.
func (s *suite) newTab(t *testing.T) *tab {
	t.Helper()
	base, cancel := chromedp.NewContext(s.browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(base, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	ctx, cancelT := context.WithTimeout(base, tabTimeout)
	t.Cleanup(cancelT)
	return &tab{t: t, env: s.env, ctx: ctx, base: base}
}

// hook selects the elements with data-test="name".
func hook(name string) chromedp.CSS { return chromedp.CSS(`[data-test="` + name + `"]`) }

// fatalf fails the test with the tab's address and the start of its text.
func (b *tab) fatalf(format string, args ...any) {
	b.t.Helper()
	b.t.Fatalf(format+"\n--- %s", append(args, b.describe())...)
}

func (b *tab) describe() string {
	ctx, cancel := context.WithTimeout(b.base, 5*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return fmt.Sprintf("(page not readable: %v)", err)
	}
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 2000) : ""`))
	return fmt.Sprintf("page %s:\n%s", loc, text)
}

// do runs actions that return nothing, failing the test on an error.
func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.fatalf("%s: %v", what, err)
	}
}

// run runs an action that returns a value, failing the test on an error.
func run[T any](b *tab, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.fatalf("%s: %v", what, err)
	}
	return v
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *tab, expr string) T {
	b.t.Helper()
	return run(b, "evaluating "+expr, chromedp.Evaluate[T](expr))
}

// open loads a dashboard path, checks the status of the page the browser
// ends on (after redirects) and waits until the element data-test=ready
// is visible.
func (b *tab) open(path string, status int64, ready string) {
	b.t.Helper()
	resp := run(b, "loading "+path, chromedp.NavigateResponse(b.env.URL+path))
	if resp.Status != status {
		b.fatalf("GET %s: the page ended at %s with status %d, want %d", path, resp.URL, resp.Status, status)
	}
	b.do("waiting for "+ready+" on "+path, chromedp.WaitVisible(hook(ready)))
}

// submit clicks a button that submits a form and waits for the page the
// browser ends on; it fails unless that page has the status want and shows
// the element data-test=ready.
func (b *tab) submit(button string, status int64, ready string) {
	b.t.Helper()
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Click(hook(button)))
	if err != nil {
		b.fatalf("clicking %s: %v", button, err)
	}
	if resp.Status != status {
		b.fatalf("clicking %s: the page ended at %s with status %d, want %d", button, resp.URL, resp.Status, status)
	}
	b.do("waiting for "+ready+" after clicking "+button, chromedp.WaitVisible(hook(ready)))
}

// follow clicks a link and waits until data-test=ready is visible on the
// page it leads to.
func (b *tab) follow(link chromedp.CSS, ready string) {
	b.t.Helper()
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Click(link))
	if err != nil {
		b.fatalf("clicking %s: %v", link, err)
	}
	if resp.Status != 200 {
		b.fatalf("clicking %s: the page ended at %s with status %d, want 200", link, resp.URL, resp.Status)
	}
	b.do("waiting for "+ready+" after clicking "+string(link), chromedp.WaitVisible(hook(ready)))
}

// text is the text content of the first element data-test=name (as in
// the markup: not upper-cased by a style).
func (b *tab) text(name string) string {
	b.t.Helper()
	return strings.TrimSpace(run(b, "reading "+name, chromedp.TextContent(hook(name))))
}

// attr is an attribute of the first element that sel matches ("" when it
// has none).
func (b *tab) attr(sel chromedp.CSS, name string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%q) || {getAttribute: () => ""}).getAttribute(%q) || ""`, string(sel), name))
}

// count is the number of elements sel matches.
func (b *tab) count(sel chromedp.CSS) int {
	b.t.Helper()
	return eval[int](b, fmt.Sprintf(`document.querySelectorAll(%q).length`, string(sel)))
}

// html is the page's markup as the browser has it now.
func (b *tab) html() string {
	b.t.Helper()
	return eval[string](b, `document.documentElement.outerHTML`)
}

// login logs in through the login page with an API token, starting from
// a page that needs a session, and checks that the browser lands back on
// that page.
func (b *tab) login(token string) {
	b.t.Helper()
	// The dashboard sends a browser without a session to the login page,
	// keeping where it was going.
	b.open("/ui/certificates", 200, "login-form")
	if loc := run(b, "reading the address", chromedp.Location()); !strings.Contains(loc, "/ui/login?next=") {
		b.fatalf("without a session: at %s, want the login page", loc)
	}
	b.do("typing the token", chromedp.SendKeys(hook("login-token"), token))
	b.submit("login-submit", 200, "cert-filter")
	if loc := run(b, "reading the address", chromedp.Location()); !strings.HasSuffix(loc, "/ui/certificates") {
		b.fatalf("after login: at %s, want /ui/certificates", loc)
	}
}

// screenshotDir is where the screenshots go: $OUTPOST_SCREENSHOTS_DIR
// if set (`make screenshots` points it at docs/screenshots, which the
// README shows), else test-output/screenshots of the repository (ignored
// by git), so that `make test` leaves the working tree clean.
func screenshotDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("OUTPOST_SCREENSHOTS_DIR"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "test-output", "screenshots")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// screenshot saves the whole page (not only the viewport) as
// <screenshotDir>/<name>.png, 1280 pixels wide.
func (b *tab) screenshot(name string) {
	b.t.Helper()
	png := run(b, "taking a screenshot", func(ctx context.Context, t *chromedp.Target) ([]byte, error) {
		// Raw DevTools calls: the typed ones are in cdproto, which the
		// module only needs through chromedp.
		var metrics struct {
			Content struct {
				Height float64 `json:"height"`
			} `json:"cssContentSize"`
		}
		if err := t.Call(ctx, "Page.getLayoutMetrics", nil, &metrics); err != nil {
			return nil, err
		}
		h := metrics.Content.Height
		if h <= 0 || h > 20000 {
			return nil, fmt.Errorf("page height %v", h)
		}
		var shot struct {
			Data string `json:"data"` // base64
		}
		err := t.Call(ctx, "Page.captureScreenshot", map[string]any{
			"format":                "png",
			"captureBeyondViewport": true,
			"fromSurface":           true,
			"clip":                  map[string]float64{"x": 0, "y": 0, "width": 1280, "height": h, "scale": 1},
		}, &shot)
		if err != nil {
			return nil, err
		}
		return base64.StdEncoding.DecodeString(shot.Data)
	})
	dir := screenshotDir(b.t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// pathOf is the path and query of a URL the browser reports.
func pathOf(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatalf("parsing %q: %v", u, err)
	}
	return p.RequestURI()
}
