package browser

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
)

// TestDashboard drives the dashboard in a real headless Chromium: one
// control plane with a seeded fleet, and one tab per step, each in a
// browser context of its own (its own session). The steps share the
// fleet, so each changes only what it owns: the steps that only read run
// first, the one that revokes a certificate revokes f.target, which
// nothing else looks at, and the viewer tries (and fails) on f.spare.
func TestDashboard(t *testing.T) {
	s := &suite{browser: startBrowser(t)} // first: without a browser there is nothing to test
	s.env = cptest.Start(t, nil)
	s.f = seedFleet(t, s.env)

	for _, step := range []struct {
		name string
		run  func(*testing.T, *suite)
	}{
		{"log in", testLogin},
		{"charts render with data", testCharts},
		{"find a device", testFindDevice},
		{"viewer sees no revoke control and is refused", testViewer},
		{"screenshots", testScreenshots},
		{"create a CA", testCreateCA},
		{"create a DMS and read its token", testCreateDMS},
		{"revoke a certificate", testRevokeCertificate},
	} {
		t.Run(step.name, func(t *testing.T) { step.run(t, s) })
	}
}

// testLogin logs in through the login page: a wrong token is refused on
// the form, an admin token lands on the overview with an HttpOnly,
// SameSite=Strict session cookie that scripts cannot read, and logging out
// ends the session.
func testLogin(t *testing.T, s *suite) {
	env := s.env
	b := s.newTab(t)

	b.open("/ui", 200, "login-form")
	b.do("typing a wrong token", chromedp.SendKeys(hook("login-token"), "opk_not-a-token"))
	b.submit("login-submit", 401, "login-error")
	if got := b.text("login-error"); !strings.Contains(got, "not valid") {
		b.fatalf("login error %q, want it to say the token is not valid", got)
	}
	if n := b.count(hook("principal")); n != 0 {
		b.fatalf("a refused login shows a principal")
	}

	b.do("typing the admin token", chromedp.SendKeys(hook("login-token"), env.AdminToken))
	b.submit("login-submit", 200, "cert-counts")
	if got := pathOf(t, run(b, "reading the address", chromedp.Location())); got != "/ui" {
		b.fatalf("after login at %s, want /ui", got)
	}
	if got, want := b.text("principal"), "admin"; got != want {
		b.fatalf("principal: got %q, want %q", got, want)
	}
	if got, want := b.text("role"), "admin"; got != want {
		b.fatalf("role: got %q, want %q", got, want)
	}
	// The cookie as the browser keeps it (a raw DevTools call: the typed
	// one is in cdproto, which the module only needs through chromedp).
	type cookie struct {
		Name     string `json:"name"`
		Path     string `json:"path"`
		HTTPOnly bool   `json:"httpOnly"`
		SameSite string `json:"sameSite"`
		Session  bool   `json:"session"`
	}
	cookies := run(b, "reading cookies", func(ctx context.Context, tg *chromedp.Target) ([]cookie, error) {
		var r struct {
			Cookies []cookie `json:"cookies"`
		}
		err := tg.Call(ctx, "Network.getCookies", map[string]any{"urls": []string{env.URL + "/ui"}}, &r)
		return r.Cookies, err
	})
	var session *cookie
	for i, c := range cookies {
		if c.Name == "outpost_ui_session" {
			session = &cookies[i]
		}
	}
	if session == nil {
		b.fatalf("no session cookie among %d cookies", len(cookies))
	}
	if !session.HTTPOnly || session.SameSite != "Strict" || session.Path != "/ui" || !session.Session {
		b.fatalf("session cookie: HttpOnly %v, SameSite %q, Path %q, session-only %v; want true, Strict, /ui, true",
			session.HTTPOnly, session.SameSite, session.Path, session.Session)
	}
	if got := eval[string](b, `document.cookie`); strings.Contains(got, "outpost_ui_session") {
		b.fatalf("a script can read the session cookie: %q", got)
	}

	b.submit("logout-button", 200, "login-form")
	b.open("/ui/cas", 200, "login-form")
}

// testCreateCA creates an intermediate CA below the control plane's
// bootstrap root through the CAs page form, picking the parent by its
// name, and finds it below its parent in the hierarchy tree.
func testCreateCA(t *testing.T, s *suite) {
	env := s.env
	b := s.newTab(t)
	b.login(env.AdminToken)

	b.open("/ui/cas", 200, "ca-create-form")
	rootID := b.attr(`[data-test="ca-tree"] > [data-ca-name="bootstrap-root"]`, "data-ca-id")
	parent := eval[string](b, `(Array.from(document.querySelectorAll('[data-test="ca-parent"] option')).find(o => o.text.startsWith("bootstrap-root ")) || {value: "none"}).value`)
	if rootID == "" || parent != rootID {
		b.fatalf("the parent list offers bootstrap-root as %q, the tree has it as %q", parent, rootID)
	}
	// An admin may also make a root: the list offers "none".
	if n := b.count(`[data-test="ca-parent"] option[value=""]`); n != 1 {
		b.fatalf("an admin's parent list has %d root options, want 1", n)
	}
	b.do("filling the CA form",
		chromedp.SendKeys(hook("ca-name"), "line3"),
		chromedp.SendKeys(hook("ca-common-name"), "Line 3 Devices CA"),
		chromedp.SetValue(hook("ca-parent"), parent),
		chromedp.SetValue(hook("ca-key-algorithm"), "ecdsa-p384"),
		chromedp.SendKeys(hook("ca-validity-days"), "730"),
	)
	b.submit("ca-create-submit", 200, "ca-detail")
	b.do("waiting for the confirmation", chromedp.WaitVisible(hook("flash")))
	id := b.text("ca-id")
	if got := b.attr(chromedp.CSS(`[data-test="ca-detail"] a[href="/ui/cas/`+rootID+`"]`), "href"); got == "" {
		b.fatalf("the new CA's page does not link its parent %s", rootID)
	}

	b.open("/ui/cas", 200, "ca-tree")
	for _, sel := range []string{
		`[data-test="ca-tree"] > [data-ca-name="bootstrap-root"] > ul > [data-test="ca-node"][data-ca-name="line3"][data-ca-id="` + id + `"]`,
		`[data-test="ca-tree"] > [data-ca-name="factory-root"] > ul > [data-ca-name="line1"]`,
	} {
		b.do("finding "+sel+" in the tree", chromedp.WaitVisible(chromedp.CSS(sel)))
	}

	var ca apitypes.CA
	env.MustDo("GET", "/api/v1/cas/"+id, env.AdminToken, nil, &ca, 200)
	if ca.Kind != "intermediate" || ca.ParentID != rootID || ca.Status != "active" || !ca.HasKey || ca.Name != "line3" {
		t.Fatalf("the API has the new CA as %s %q under %s, %s, key %v; want the active intermediate line3 under %s with its key", ca.Kind, ca.Name, ca.ParentID, ca.Status, ca.HasKey, rootID)
	}
}

var bootstrapTokenRE = regexp.MustCompile(`^obt_[A-Za-z0-9_-]{32,}$`)

// testCreateDMS creates a DMS through the form, reads its one-time
// bootstrap token from the result page, checks that no other page shows
// it, and bootstraps the DMS with it through the API (once).
func testCreateDMS(t *testing.T, s *suite) {
	env := s.env
	b := s.newTab(t)
	b.login(env.AdminToken)

	b.open("/ui/dmss", 200, "dms-table")
	b.follow(hook("dms-new-link"), "dms-create-form")
	b.do("filling the DMS form",
		chromedp.SendKeys(hook("dms-name"), "gw-hall-4"),
		chromedp.SetValue(hook("dms-mode"), "queued"),
		chromedp.SendKeys(hook("dms-authorized-cas"), "line2\nline1"),
	)
	b.submit("dms-create-submit", 201, "dms-bootstrap-token")
	token := b.text("dms-bootstrap-token")
	if !bootstrapTokenRE.MatchString(token) {
		b.fatalf("bootstrap token %q does not look like one (obt_ and at least 32 base64url characters)", token)
	}
	href := b.attr(hook("dms-created-continue"), "href")
	dmsID := strings.TrimPrefix(href, "/ui/dmss/")

	b.follow(hook("dms-created-continue"), "dms-sync-state")
	if got := b.attr(chromedp.CSS(`h1 [data-test="dms-status"]`), "data-status"); got != "pending" {
		b.fatalf("new DMS status %q, want pending", got)
	}
	if got := b.text("dms-authorized-ca-list"); !strings.Contains(got, "line2") || !strings.Contains(got, "line1") || strings.Index(got, "line2") > strings.Index(got, "line1") {
		b.fatalf("authorized CAs %q, want line2 then line1", got)
	}
	for _, p := range []struct{ path, ready string }{{href, "dms-sync-state"}, {"/ui/dmss", "dms-table"}, {"/ui", "cert-counts"}} {
		b.open(p.path, 200, p.ready)
		if strings.Contains(b.html(), token) {
			b.fatalf("%s shows the bootstrap token again", p.path)
		}
	}

	// The token works, once.
	boot := bootstrapDMS(t, env, token)
	if boot.DMSID != dmsID || !strings.Contains(boot.CertificatePEM, "BEGIN CERTIFICATE") {
		t.Fatalf("bootstrap: DMS %q, certificate %.40q; want DMS %s and a certificate", boot.DMSID, boot.CertificatePEM, dmsID)
	}
	csr := csrFor(t, "outpost-agent")
	if status, body := env.Do("POST", "/api/v1/dms/bootstrap", "", apitypes.DMSBootstrapRequest{Token: token, CSRPEM: csr}, nil); status < 400 {
		t.Fatalf("second bootstrap with the same token: got %d, want a refusal: %s", status, body)
	}
	b.open(href, 200, "dms-sync-state")
	if got := b.attr(chromedp.CSS(`h1 [data-test="dms-status"]`), "data-status"); got != "active" {
		b.fatalf("bootstrapped DMS status %q, want active", got)
	}
	if got := b.attr(chromedp.CSS(`[data-test="dms-sync-state"] a[href^="/ui/certificates/"]`), "href"); got == "" {
		b.fatalf("the bootstrapped DMS shows no identity certificate")
	}
}

// testFindDevice finds devices with the search form (id prefix, DMS,
// status), opens one and checks its slots, certificate history and
// timeline against the API.
func testFindDevice(t *testing.T, s *suite) {
	env, f := s.env, s.f
	b := s.newTab(t)
	b.login(env.AdminToken)

	rows := func() []string {
		return eval[[]string](b, `Array.from(document.querySelectorAll('[data-test="device-row"]')).map(r => r.dataset.deviceId)`)
	}
	b.open("/ui/devices", 200, "device-filter")
	b.do("searching plc- devices of gw-hall-1",
		chromedp.SendKeys(hook("device-filter-q"), "plc-"),
		chromedp.SetValue(hook("device-filter-dms"), f.hall1.ID),
	)
	b.submit("device-filter-submit", 200, "device-table")
	if got := rows(); !sameSet(got, f.plcs) {
		b.fatalf("search q=plc- dms=gw-hall-1: got %v, want %v", got, f.plcs)
	}
	b.do("narrowing to devices that require action", chromedp.SetValue(hook("device-filter-status"), "requires_action"))
	b.submit("device-filter-submit", 200, "device-table")
	if got := rows(); !slices.Equal(got, []string{"plc-0005"}) {
		b.fatalf("search q=plc- status=requires_action: got %v, want [plc-0005] (its certificate expires in 12 days)", got)
	}
	b.do("searching one device",
		chromedp.SetValue(hook("device-filter-q"), f.plc),
		chromedp.SetValue(hook("device-filter-status"), ""),
		chromedp.SetValue(hook("device-filter-dms"), ""),
	)
	b.submit("device-filter-submit", 200, "device-table")
	if got := rows(); !slices.Equal(got, []string{f.plc}) {
		b.fatalf("search q=%s: got %v", f.plc, got)
	}
	b.follow(chromedp.CSS(`[data-test="device-row"] a[href="/ui/devices/`+f.plc+`"]`), "device-slots")

	var dev apitypes.Device
	env.MustDo("GET", "/api/v1/devices/"+f.plc, env.AdminToken, nil, &dev, 200)
	if got := b.attr(chromedp.CSS(`h1 [data-test="device-status"]`), "data-status"); got != dev.Status {
		b.fatalf("device status %q, the API says %q", got, dev.Status)
	}
	slots := eval[[]string](b, `Array.from(document.querySelectorAll('[data-test="device-slot"]')).map(s => s.dataset.caId)`)
	if !sameSet(slots, []string{f.line1.ID, f.line2.ID}) {
		b.fatalf("slots %v, want line1 %s and line2 %s", slots, f.line1.ID, f.line2.ID)
	}
	for _, s := range dev.Slots {
		inSlot := `[data-test="device-slot"][data-ca-id="` + s.CAID + `"] [data-test="slot-cert"]`
		got := eval[[]string](b, `Array.from(document.querySelectorAll('`+inSlot+`')).map(r => r.dataset.serial)`)
		var want []string
		for _, c := range s.Certificates {
			want = append(want, c.Serial)
		}
		if !sameSet(got, want) {
			b.fatalf("slot %s lists %v, the API %v", s.CAID, got, want)
		}
		b.do("finding the active certificate of slot "+s.CAID,
			chromedp.WaitVisible(chromedp.CSS(inSlot+`[data-serial="`+s.ActiveSerial+`"] [data-test="slot-active"]`)))
		if n := b.count(chromedp.CSS(inSlot + ` [data-test="slot-active"]`)); n != 1 {
			b.fatalf("slot %s marks %d certificates active, want 1", s.CAID, n)
		}
	}
	// The fixture's history of this device, as the page shows it.
	newest := f.plcLine1[len(f.plcLine1)-1].Serial
	b.do("finding the renewed certificate as the active one",
		chromedp.WaitVisible(chromedp.CSS(`[data-test="slot-cert"][data-serial="`+newest+`"] [data-test="slot-active"]`)))
	if n := b.count(chromedp.CSS(`[data-test="device-slot"][data-ca-id="` + f.line1.ID + `"] [data-test="slot-cert"]`)); n != len(f.plcLine1) {
		b.fatalf("line1 slot history has %d certificates, want %d", n, len(f.plcLine1))
	}
	if n := b.count(chromedp.CSS(`[data-test="device-event"][data-kind="certificate.issued"]`)); n != len(f.plcLine1)+1 {
		b.fatalf("timeline has %d certificate.issued events, want %d", n, len(f.plcLine1)+1)
	}
	b.do("waiting for the timeline", chromedp.WaitVisible(hook("device-timeline")))
}

// testRevokeCertificate finds a certificate by SAN, revokes it from its
// page with a reason and sees its status badge turn to revoked.
func testRevokeCertificate(t *testing.T, s *suite) {
	env, f := s.env, s.f
	b := s.newTab(t)
	b.login(env.AdminToken)

	b.open("/ui/certificates", 200, "cert-filter")
	b.do("searching by SAN", chromedp.SendKeys(hook("cert-filter-san"), f.targetSAN))
	b.submit("cert-filter-submit", 200, "cert-table")
	if got := eval[[]string](b, `Array.from(document.querySelectorAll('[data-test="cert-row"]')).map(r => r.dataset.serial)`); !slices.Equal(got, []string{f.target.Serial}) {
		b.fatalf("search san=%s: got %v, want [%s]", f.targetSAN, got, f.target.Serial)
	}
	b.follow(chromedp.CSS(`[data-test="cert-row"] a[href="/ui/certificates/`+f.target.Serial+`"]`), "cert-detail")
	b.do("waiting for the active badge", chromedp.WaitVisible(chromedp.CSS(`h1 [data-test="cert-status"][data-status="active"]`)))
	if got := b.text("cert-sans"); !strings.Contains(got, "DNS: "+f.targetSAN) {
		b.fatalf("SANs %q, want DNS: %s", got, f.targetSAN)
	}
	// The form cannot be sent before the confirmation is ticked.
	if eval[bool](b, `document.querySelector('[data-test="revoke-form"]').checkValidity()`) {
		b.fatalf("the revoke form is valid without its confirmation")
	}
	b.do("choosing the reason and confirming",
		chromedp.SetValue(hook("revoke-reason"), "keyCompromise"),
		chromedp.Click(hook("revoke-confirm")),
	)
	b.submit("revoke-button", 200, "flash")
	b.do("waiting for the revoked badge", chromedp.WaitVisible(chromedp.CSS(`h1 [data-test="cert-status"][data-status="revoked"]`)))
	if got := b.text("cert-revocation-reason"); got != "keyCompromise" {
		b.fatalf("revocation reason on the page %q, want keyCompromise", got)
	}
	if n := b.count(hook("revoke-form")); n != 0 {
		b.fatalf("a revoked certificate still has a revoke form")
	}
	if got := b.attr(hook("cert-status-detail"), "data-status"); got != "revoked" {
		b.fatalf("status in the registry fields %q, want revoked", got)
	}

	c := certificate(t, env, f.target.Serial)
	if c.Status != "revoked" || c.RevocationReason != "keyCompromise" || c.RevokedAt == nil {
		t.Fatalf("the API has the certificate %s (%q, revoked at %v), want revoked for keyCompromise", c.Status, c.RevocationReason, c.RevokedAt)
	}
}

// chartInfo is what the browser measured of a chart.
type chartInfo struct {
	Total  int     `json:"total"`
	Points int     `json:"points"`
	Start  string  `json:"start"` // first day, from the chart's description
	Width  float64 `json:"width"`
	Height float64 `json:"height"`
	Bars   int     `json:"bars"`   // bars with a height
	Inside bool    `json:"inside"` // every bar within the chart
}

const chartJS = `(() => {
	const svg = document.querySelector('[data-test="%s"]');
	const box = svg.getBoundingClientRect();
	const bars = Array.from(svg.querySelectorAll("path"))
		.filter(p => getComputedStyle(p).fill === "rgb(79, 124, 172)")
		.map(p => p.getBoundingClientRect())
		.filter(r => r.height > 0.1);
	const m = /from (\d{4}-\d{2}-\d{2})$/.exec(svg.getAttribute("aria-label") || "");
	return {
		total: Number(svg.dataset.total), points: Number(svg.dataset.points), start: m ? m[1] : "",
		width: box.width, height: box.height, bars: bars.length,
		inside: bars.every(r => r.left >= box.left - 1 && r.right <= box.right + 1 && r.top >= box.top - 1 && r.bottom <= box.bottom + 1),
	};
})()`

// testCharts loads the overview and checks, in the browser, that both
// charts are drawn with the data of the database: visible, with as many
// bars as days with certificates, and totals that match the database; and
// that the counts by status match it too.
func testCharts(t *testing.T, s *suite) {
	env := s.env
	b := s.newTab(t)
	b.login(env.AdminToken)
	b.open("/ui", 200, "cert-counts")

	ctx := context.Background()
	db := env.DB()
	for _, c := range []struct {
		hook string
		// count counts the certificates of the chart's 90 days from $1.
		count string
	}{
		{"chart-expiries-svg", `SELECT count(*), count(DISTINCT date_trunc('day', not_after AT TIME ZONE 'UTC')) FROM certificates
			WHERE status IN ('active', 'about_to_expire') AND not_after >= $1 AND not_after < $1 + interval '90 days'`},
		{"chart-enrollments-svg", `SELECT count(*), count(DISTINCT date_trunc('day', created_at AT TIME ZONE 'UTC')) FROM certificates
			WHERE created_at >= $1 AND created_at < $1 + interval '90 days'`},
	} {
		b.do("waiting for "+c.hook, chromedp.WaitVisible(hook(c.hook)))
		got := eval[chartInfo](b, fmt.Sprintf(chartJS, c.hook))
		start, err := time.Parse("2006-01-02", got.Start)
		if err != nil {
			b.fatalf("%s: no start day in its description: %+v", c.hook, got)
		}
		var total, days int
		if err := db.QueryRow(ctx, c.count, start).Scan(&total, &days); err != nil {
			t.Fatal(err)
		}
		if got.Width < 200 || got.Height < 100 {
			b.fatalf("%s is drawn %vx%v px, want a visible chart", c.hook, got.Width, got.Height)
		}
		if got.Total != total || got.Total == 0 {
			b.fatalf("%s: data-total %d, the database has %d (want them equal and not zero)", c.hook, got.Total, total)
		}
		if got.Points != days || got.Points < 2 {
			b.fatalf("%s: data-points %d, the database has certificates on %d days (want them equal, at least 2)", c.hook, got.Points, days)
		}
		if got.Bars != got.Points || !got.Inside {
			b.fatalf("%s: %d bars with a height (inside the chart: %v), want %d", c.hook, got.Bars, got.Inside, got.Points)
		}
	}

	// The counts by status.
	rows, err := db.Query(ctx, `SELECT status, count(*) FROM certificates GROUP BY status`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		want[s] = n
	}
	rows.Close()
	for _, s := range []string{"active", "about_to_expire", "expired", "revoked"} {
		got := strings.ReplaceAll(b.text("count-cert-"+s), ",", "")
		if got != strconv.Itoa(want[s]) || want[s] == 0 {
			b.fatalf("count of %s certificates %s, the database has %d (the fixture has some of each)", s, got, want[s])
		}
	}
	for hookName, want := range map[string]string{"dms-online-count": "1", "dms-offline-count": "2", "dms-disabled-count": "1"} {
		if got := b.text(hookName); got != want {
			b.fatalf("%s: got %s, want %s", hookName, got, want)
		}
	}
	// The offline gateway with its backlog comes first among those needing
	// attention.
	if got := eval[string](b, `document.querySelector('[data-test="dms-overview-table"] [data-test="dms-row"]').dataset.online`); got != "false" {
		b.fatalf("first DMS needing attention is online (%s)", got)
	}
}

// forced is what a forced request from the page got.
type forced struct {
	Status int    `json:"status"`
	Body   string `json:"body"`
}

// testViewer logs in with a viewer token: the certificate page has no
// revoke control, and a revoke forced from the page (with the session
// cookie and a valid CSRF token, by fetch and by a forged form) is refused
// with 403 and changes nothing.
func testViewer(t *testing.T, s *suite) {
	env, f := s.env, s.f
	tok := viewerToken(t, env, "auditor-anna")
	b := s.newTab(t)
	b.login(tok)
	if got := b.text("role"); got != "viewer" {
		b.fatalf("role %q, want viewer", got)
	}

	path := "/ui/certificates/" + f.spare.Serial
	b.open(path, 200, "cert-detail")
	b.do("waiting for the active badge", chromedp.WaitVisible(chromedp.CSS(`h1 [data-test="cert-status"][data-status="active"]`)))
	for _, h := range []string{"revoke-form", "revoke-button", "revoke-reason", "nav-audit"} {
		if n := b.count(hook(h)); n != 0 {
			b.fatalf("a viewer sees %s", h)
		}
	}
	// The only form that posts is the logout button.
	if n := b.count(`form[method="post"]`); n != 1 {
		b.fatalf("%d POST forms for a viewer, want 1 (log out)", n)
	}
	for _, p := range []struct{ path, ready, control string }{
		{"/ui/cas", "ca-tree", "ca-create-form"},
		{"/ui/dmss", "dms-table", "dms-new-link"},
		{"/ui/devices/" + f.plc, "device-slots", "decommission-button"},
	} {
		b.open(p.path, 200, p.ready)
		if n := b.count(hook(p.control)); n != 0 {
			b.fatalf("a viewer sees %s on %s", p.control, p.path)
		}
	}

	// Forced: the revoke form replayed from the page with the session
	// cookie and the session's real CSRF token.
	b.open(path, 200, "cert-detail")
	got := run(b, "posting a revoke with fetch", chromedp.Evaluate[forced](`(async () => {
		const csrf = document.querySelector('input[name="csrf"]').value;
		const body = new URLSearchParams({csrf: csrf, reason: "keyCompromise", confirm: "yes"});
		const r = await fetch(location.pathname + "/revoke", {method: "POST", body: body, credentials: "same-origin", redirect: "manual"});
		return {status: r.status, body: await r.text()};
	})()`, chromedp.EvalAwaitPromise))
	if got.Status != 403 || !strings.Contains(got.Body, "Your role (viewer) cannot do this") {
		b.fatalf("forced revoke by fetch: got %d, want 403 naming the role:\n%.600s", got.Status, got.Body)
	}
	// The same as a form the page never had, submitted by the browser.
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Evaluate[chromedp.Void](`(() => {
		const f = document.createElement("form");
		f.method = "post";
		f.action = location.pathname + "/revoke";
		for (const [k, v] of Object.entries({csrf: document.querySelector('input[name="csrf"]').value, reason: "keyCompromise", confirm: "yes"})) {
			const i = document.createElement("input");
			i.type = "hidden"; i.name = k; i.value = v;
			f.append(i);
		}
		document.body.append(f);
		f.submit();
	})()`))
	if err != nil {
		b.fatalf("submitting a forged revoke form: %v", err)
	}
	if resp.Status != 403 {
		b.fatalf("forged revoke form: status %d, want 403", resp.Status)
	}
	b.do("waiting for the refusal", chromedp.WaitVisible(chromedp.CSS(`[data-test="error-page"][data-status="403"]`)))
	if got := b.text("error-message"); !strings.Contains(got, "viewer") {
		b.fatalf("refusal %q does not name the role", got)
	}

	if c := certificate(t, env, f.spare.Serial); c.Status != "active" || c.RevokedAt != nil {
		t.Fatalf("after a viewer's forced revoke the certificate is %s, want active", c.Status)
	}
	var audited int
	if err := env.DB().QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE action = 'certificate.revoke' AND target = $1`, f.spare.Serial).Scan(&audited); err != nil {
		t.Fatal(err)
	}
	if audited != 0 {
		t.Fatalf("the audit log has %d revocations of the certificate the viewer tried to revoke", audited)
	}
	b.open(path, 200, "cert-detail")
	b.do("waiting for the unchanged badge", chromedp.WaitVisible(chromedp.CSS(`h1 [data-test="cert-status"][data-status="active"]`)))
}

// testScreenshots saves a screenshot of each page, 1280 pixels wide, to
// the screenshot directory (docs/screenshots via `make screenshots`; the README shows the overview).
func testScreenshots(t *testing.T, s *suite) {
	env, f := s.env, s.f
	b := s.newTab(t)

	b.open("/ui/login", 200, "login-form")
	b.screenshot("login")
	b.do("typing the admin token", chromedp.SendKeys(hook("login-token"), env.AdminToken))
	b.submit("login-submit", 200, "cert-counts")

	pages := []struct{ name, path, ready string }{
		{"overview", "/ui", "chart-enrollments-svg"},
		{"cas", "/ui/cas", "ca-tree"},
		{"ca", "/ui/cas/" + f.line1.ID, "ca-detail"},
		{"dmss", "/ui/dmss", "dms-table"},
		{"dms", "/ui/dmss/" + f.hall1.ID, "dms-sync-state"},
		{"devices", "/ui/devices", "device-table"},
		{"device", "/ui/devices/" + f.plc, "device-slots"},
		{"certificates", "/ui/certificates", "cert-table"},
		{"certificate", "/ui/certificates/" + f.plcLine1[2].Serial, "cert-detail"},
		{"audit", "/ui/audit?verify=1", "audit-table"},
		{"subscriptions", "/ui/subscriptions", "subscription-table"},
	}
	for _, p := range pages {
		b.open(p.path, 200, p.ready)
		if p.name == "audit" {
			// ?verify=1 waits for a fresh verification of the chain.
			if got := b.attr(hook("audit-chain-status"), "data-status"); got != "ok" {
				b.fatalf("audit chain status %q, want ok", got)
			}
		}
		b.screenshot(p.name)
	}
}

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
