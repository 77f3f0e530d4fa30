package ui_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/testpki"
)

func TestLogin(t *testing.T) {
	env := start(t)
	revoked := token(t, env, "gone", "operator")
	env.MustDo("DELETE", "/api/v1/tokens/"+revoked.TokenID, env.AdminToken, nil, nil, 204)

	t.Run("good token", func(t *testing.T) {
		c := newClient(t, env)
		r := c.login(env.AdminToken)
		must(t, r.Status == http.StatusSeeOther && r.Header.Get("Location") == "/ui", "got %d to %q, want 303 to /ui", r.Status, r.Header.Get("Location"))
		var cookie string
		for _, sc := range r.Header.Values("Set-Cookie") {
			if strings.HasPrefix(sc, "outpost_ui_session=") && !strings.HasPrefix(sc, "outpost_ui_session=;") {
				cookie = sc
			}
		}
		must(t, cookie != "", "no session cookie in %q", r.Header.Values("Set-Cookie"))
		for _, attr := range []string{"HttpOnly", "SameSite=Strict", "Path=/ui"} {
			contains(t, cookie, attr, "session cookie")
		}
		// Plain HTTP to a loopback address: not Secure (documented).
		notContains(t, cookie, "Secure", "session cookie over plain loopback HTTP")
		body := c.mustGet("/ui")
		contains(t, body, `data-test="principal" title="Logged in as">admin</span>`, "overview")
		contains(t, body, `data-test="role">admin</span>`, "overview")
		contains(t, body, `data-test="logout-button"`, "overview")
	})
	t.Run("bad token", func(t *testing.T) {
		c := newClient(t, env)
		r := c.login("opk_not-a-token")
		must(t, r.Status == http.StatusUnauthorized, "got %d, want 401", r.Status)
		contains(t, r.Body, `data-test="login-error" data-field="token"`, "login error")
		contains(t, r.Body, "not valid", "login error")
		must(t, c.get("/ui").Status == http.StatusSeeOther, "a refused login gave a session")
	})
	t.Run("revoked token", func(t *testing.T) {
		c := newClient(t, env)
		r := c.login(revoked.Token)
		must(t, r.Status == http.StatusUnauthorized, "got %d, want 401", r.Status)
		contains(t, r.Body, "revoked", "login error")
	})
	t.Run("login form without its csrf cookie", func(t *testing.T) {
		c := newClient(t, env)
		r := c.do("POST", "/ui/login", url.Values{"csrf": {"forged"}, "token": {env.AdminToken}}, nil)
		must(t, r.Status == http.StatusForbidden, "got %d, want 403", r.Status)
	})
	t.Run("cross-origin login", func(t *testing.T) {
		c := newClient(t, env)
		page := c.get("/ui/login")
		m := csrfRE.FindStringSubmatch(page.Body)
		r := c.do("POST", "/ui/login", url.Values{"csrf": {m[1]}, "token": {env.AdminToken}}, http.Header{"Origin": {"https://evil.example"}})
		must(t, r.Status == http.StatusForbidden, "got %d, want 403", r.Status)
	})
	t.Run("secure cookie behind a TLS proxy", func(t *testing.T) {
		c := newClient(t, env)
		c.Header.Set("X-Forwarded-Proto", "https")
		r := c.login(env.AdminToken)
		must(t, r.Status == http.StatusSeeOther, "got %d", r.Status)
		found := false
		for _, sc := range r.Header.Values("Set-Cookie") {
			if strings.HasPrefix(sc, "outpost_ui_session=") && strings.Contains(sc, "Secure") {
				found = true
			}
		}
		must(t, found, "session cookie not Secure behind a proxy that says https: %q", r.Header.Values("Set-Cookie"))
	})
	t.Run("not logged in", func(t *testing.T) {
		c := newClient(t, env)
		r := c.get("/ui/certificates?status=revoked")
		must(t, r.Status == http.StatusSeeOther, "got %d, want 303", r.Status)
		loc := r.Header.Get("Location")
		must(t, strings.HasPrefix(loc, "/ui/login?next="), "redirect to %q", loc)
		next, _ := url.QueryUnescape(strings.TrimPrefix(loc, "/ui/login?next="))
		must(t, next == "/ui/certificates?status=revoked", "next is %q", next)
		// A POST without a session changes nothing and goes to the login.
		r = c.do("POST", "/ui/cas", url.Values{"name": {"x"}, "common_name": {"x"}}, nil)
		must(t, r.Status == http.StatusSeeOther && strings.HasPrefix(r.Header.Get("Location"), "/ui/login"), "POST without session: %d %q", r.Status, r.Header.Get("Location"))
	})
	t.Run("next stays inside the dashboard", func(t *testing.T) {
		c := newClient(t, env)
		page := c.get("/ui/login?next=//evil.example/x")
		contains(t, page.Body, `name="next" value="/ui"`, "login page")
	})
}

func TestSessionEnds(t *testing.T) {
	env := start(t)
	t.Run("revoking the token ends the session", func(t *testing.T) {
		op := token(t, env, "op", "operator")
		c := newClient(t, env)
		c.mustLogin(op.Token)
		c.mustGet("/ui/cas")
		env.MustDo("DELETE", "/api/v1/tokens/"+op.TokenID, env.AdminToken, nil, nil, 204)
		r := c.get("/ui/cas")
		must(t, r.Status == http.StatusSeeOther && strings.HasPrefix(r.Header.Get("Location"), "/ui/login"), "after revocation: got %d %q, want 303 to login", r.Status, r.Header.Get("Location"))
	})
	t.Run("expired session", func(t *testing.T) {
		c := newClient(t, env)
		c.mustLogin(env.AdminToken)
		sql(t, env, `UPDATE ui_sessions SET expires_at = now() - interval '1 second'`)
		r := c.get("/ui")
		must(t, r.Status == http.StatusSeeOther && strings.HasPrefix(r.Header.Get("Location"), "/ui/login"), "expired: got %d %q", r.Status, r.Header.Get("Location"))
	})
	t.Run("sliding expiry", func(t *testing.T) {
		c := newClient(t, env)
		c.mustLogin(env.AdminToken)
		// An hour left: the next request moves it back to 12 h.
		sql(t, env, `UPDATE ui_sessions SET expires_at = now() + interval '1 hour' WHERE revoked_at IS NULL AND expires_at > now()`)
		c.mustGet("/ui/cas")
		var left float64
		ctxRow(t, env, `SELECT extract(epoch FROM max(expires_at) - now()) FROM ui_sessions WHERE revoked_at IS NULL`, &left)
		must(t, left > 11*3600, "session expiry did not slide: %v s left", left)
	})
	t.Run("logout", func(t *testing.T) {
		c := newClient(t, env)
		c.mustLogin(env.AdminToken)
		var before int
		ctxRow(t, env, `SELECT count(*) FROM ui_sessions`, &before)
		// Keep the cookie to replay it after logout.
		u, _ := url.Parse(env.URL + "/ui")
		cookies := c.http.Jar.Cookies(u)
		r := c.post("/ui/logout", nil)
		must(t, r.Status == http.StatusSeeOther && strings.HasPrefix(r.Header.Get("Location"), "/ui/login"), "logout: got %d %q", r.Status, r.Header.Get("Location"))
		var after int
		ctxRow(t, env, `SELECT count(*) FROM ui_sessions`, &after)
		must(t, after == before-1, "logout left the session: %d sessions before, %d after", before, after)
		replay := newClient(t, env)
		replay.http.Jar.SetCookies(u, cookies)
		r = replay.get("/ui")
		must(t, r.Status == http.StatusSeeOther, "the logged-out cookie still works: %d", r.Status)
	})
	t.Run("sessions are stored hashed", func(t *testing.T) {
		c := newClient(t, env)
		c.mustLogin(env.AdminToken)
		u, _ := url.Parse(env.URL + "/ui")
		var id string
		for _, ck := range c.http.Jar.Cookies(u) {
			if ck.Name == "outpost_ui_session" {
				id = ck.Value
			}
		}
		must(t, id != "", "no session cookie")
		var n int
		ctxRow(t, env, `SELECT count(*) FROM ui_sessions WHERE id_hash = convert_to($1, 'UTF8')`, &n, id)
		must(t, n == 0, "the session id is stored in clear")
	})
}

func TestCSRF(t *testing.T) {
	env := start(t)
	f := seedData(t, env)
	c := newClient(t, env)
	c.mustLogin(env.AdminToken)
	path := "/ui/certificates/" + f.cert.Serial + "/revoke"
	good := c.csrf()
	cases := []struct {
		name string
		form url.Values
		hdr  http.Header
	}{
		{"missing token", url.Values{"reason": {"keyCompromise"}}, http.Header{"Origin": {env.URL}}},
		{"wrong token", url.Values{"reason": {"keyCompromise"}, "csrf": {good[:len(good)-2] + "xx"}}, http.Header{"Origin": {env.URL}}},
		{"cross-origin Origin", url.Values{"reason": {"keyCompromise"}, "csrf": {good}}, http.Header{"Origin": {"https://evil.example"}}},
		{"null Origin", url.Values{"reason": {"keyCompromise"}, "csrf": {good}}, http.Header{"Origin": {"null"}}},
		{"cross-origin Referer", url.Values{"reason": {"keyCompromise"}, "csrf": {good}}, http.Header{"Referer": {"https://evil.example/page"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := c.do("POST", path, tc.form, tc.hdr)
			if r.Status != http.StatusForbidden {
				t.Fatalf("got %d, want 403", r.Status)
			}
			contains(t, r.Body, `data-test="error-page" data-status="403"`, "refusal")
			if got := certStatus(t, env, f.cert.Serial); got != "active" {
				t.Fatalf("certificate is %s after a refused request, want active", got)
			}
		})
	}
	t.Run("same origin with the token", func(t *testing.T) {
		r := c.do("POST", path, url.Values{"reason": {"keyCompromise"}, "csrf": {good}}, http.Header{"Referer": {env.URL + "/ui/certificates/" + f.cert.Serial}})
		must(t, r.Status == http.StatusSeeOther, "got %d, want 303:\n%s", r.Status, snippet(r.Body))
		must(t, certStatus(t, env, f.cert.Serial) == "revoked", "not revoked")
		body := c.mustGet(r.Header.Get("Location"))
		contains(t, body, `data-test="cert-status" data-status="revoked"`, "certificate page after revoking")
		contains(t, body, `data-test="flash"`, "certificate page after revoking")
		contains(t, body, "keyCompromise", "certificate page after revoking")
		notContains(t, body, `data-test="revoke-button"`, "revoked certificate")
	})
	t.Run("GET does not change anything", func(t *testing.T) {
		r := c.get("/ui/devices/" + f.device + "/decommission")
		must(t, r.Status == http.StatusMethodNotAllowed, "GET on an action: got %d, want 405", r.Status)
	})
}

func TestRoles(t *testing.T) {
	env := start(t)
	f := seedData(t, env)
	viewer := token(t, env, "watcher", "viewer")
	operator := token(t, env, "line-op", "operator")

	t.Run("viewer sees no mutating control", func(t *testing.T) {
		c := newClient(t, env)
		c.mustLogin(viewer.Token)
		pages := []string{"/ui", "/ui/cas", "/ui/cas/" + f.inter.ID, "/ui/dmss", "/ui/dmss/" + f.dms.DMS.ID, "/ui/devices", "/ui/devices/" + f.device,
			"/ui/certificates", "/ui/certificates/" + f.cert.Serial}
		for _, p := range pages {
			body := c.mustGet(p)
			// The only form a viewer gets is the logout button.
			if n := strings.Count(body, `method="post"`); n != 1 {
				t.Errorf("%s: %d POST forms for a viewer, want only logout", p, n)
			}
			for _, hook := range []string{"revoke-button", "ca-revoke-button", "ca-create-form", "dms-policy-form", "decommission-button", "dms-disable-button", "dms-new-link"} {
				notContains(t, body, `data-test="`+hook+`"`, p)
			}
			notContains(t, body, `data-test="nav-audit"`, p)
		}
		// Audit and subscriptions need the operator role, as in the API.
		r := c.get("/ui/audit")
		must(t, r.Status == http.StatusForbidden, "viewer on /ui/audit: %d, want 403", r.Status)
	})
	t.Run("viewer forced POST is refused", func(t *testing.T) {
		c := newClient(t, env)
		c.mustLogin(viewer.Token)
		for _, tc := range []struct {
			path string
			form url.Values
		}{
			{"/ui/certificates/" + f.cert.Serial + "/revoke", url.Values{"reason": {"keyCompromise"}}},
			{"/ui/devices/" + f.device + "/decommission", nil},
			{"/ui/dmss/" + f.dms.DMS.ID + "/disable", nil},
			{"/ui/cas", url.Values{"name": {"v"}, "common_name": {"v"}, "parent_id": {f.root.ID}}},
		} {
			r := c.post(tc.path, tc.form)
			if r.Status != http.StatusForbidden {
				t.Errorf("viewer POST %s: got %d, want 403", tc.path, r.Status)
				continue
			}
			contains(t, r.Body, "Your role (viewer) cannot do this", tc.path)
		}
		must(t, certStatus(t, env, f.cert.Serial) == "active", "a viewer revoked a certificate")
	})
	t.Run("operator cannot create a root CA", func(t *testing.T) {
		c := newClient(t, env)
		c.mustLogin(operator.Token)
		body := c.mustGet("/ui/cas")
		notContains(t, body, "a new root CA", "operator's CA form")
		notContains(t, body, `data-test="ca-import-form"`, "operator's CA page")
		r := c.post("/ui/cas", url.Values{"name": {"rogue-root"}, "common_name": {"Rogue Root"}})
		must(t, r.Status == http.StatusForbidden, "operator root CA: got %d, want 403", r.Status)
		contains(t, r.Body, "admin role", "refusal")
		contains(t, r.Body, `data-test="error-field">parent_id<`, "refusal")
		r = c.post("/ui/cas/import", url.Values{"name": {"x"}, "certificate_pem": {"x"}})
		must(t, r.Status == http.StatusForbidden, "operator import: got %d, want 403", r.Status)
		r = c.post("/ui/cas/"+f.inter.ID+"/revoke", url.Values{"reason": {"keyCompromise"}})
		must(t, r.Status == http.StatusForbidden, "operator CA revoke: got %d, want 403", r.Status)
		// An intermediate is fine.
		r = c.post("/ui/cas", url.Values{"name": {"line2"}, "common_name": {"Line 2 CA"}, "parent_id": {f.root.ID}})
		must(t, r.Status == http.StatusSeeOther, "operator intermediate: got %d:\n%s", r.Status, snippet(r.Body))
		page := c.mustGet(r.Header.Get("Location"))
		contains(t, page, "CA line2", "new CA page")
		contains(t, page, `data-test="flash"`, "new CA page")
		// Subscriptions: operators read, admins change.
		c.mustGet("/ui/subscriptions")
		r = c.post("/ui/subscriptions", url.Values{"name": {"x"}, "channel": {"email"}, "target": {"a@example.com"}})
		must(t, r.Status == http.StatusForbidden, "operator subscription: got %d, want 403", r.Status)
	})
}

func TestPagesRender(t *testing.T) {
	env := start(t)
	f := seedData(t, env)
	c := newClient(t, env)
	c.mustLogin(env.AdminToken)
	var sub apitypes.Page[apitypes.Subscription]
	env.MustDo("GET", "/api/v1/subscriptions", env.AdminToken, nil, &sub, 200)

	pages := []struct {
		path  string
		hooks []string
		texts []string
	}{
		{"/ui", []string{"cert-counts", "count-cert-active", "device-counts", "chart-expiries", "chart-enrollments", "dms-overview-table", "dms-row"}, []string{"gw-hall-3"}},
		{"/ui/cas", []string{"ca-tree", "ca-node", "ca-create-form", "ca-import-form"}, []string{"factory-root", "line1", "bootstrap-root", "dms-manager"}},
		{"/ui/cas/" + f.inter.ID, []string{"ca-detail", "ca-chain-download", "ca-crl-link", "ca-revoke-form", "ca-revoke-button", "ca-status"}, []string{"/crl/" + f.inter.ID + ".crl"}},
		{"/ui/dmss", []string{"dms-table", "dms-row", "dms-status", "dms-new-link"}, []string{"gw-hall-3"}},
		{"/ui/dmss/new", []string{"dms-create-form", "dms-create-submit"}, nil},
		{"/ui/dmss/" + f.dms.DMS.ID, []string{"dms-sync-state", "dms-policy-form", "dms-disable-button", "dms-queue-depth", "dms-agent-version", "dms-identity-expiry", "dms-edge-ca-expiry"}, []string{"line1"}},
		{"/ui/devices", []string{"device-filter", "device-table", "device-row", "device-status"}, []string{f.device}},
		{"/ui/devices?q=plc&status=pending_provisioning&dms_id=" + f.dms.DMS.ID, []string{"device-row"}, []string{f.device}},
		{"/ui/devices/" + f.device, []string{"device-detail", "device-slots", "slot-cert", "slot-active", "device-timeline", "decommission-button"}, []string{"certificate.issued", "line=1"}},
		{"/ui/certificates", []string{"cert-filter", "cert-table", "cert-row", "cert-status"}, []string{f.cert.Serial}},
		{"/ui/certificates?san=" + f.san, []string{"cert-row"}, []string{f.cert.Serial}},
		{"/ui/certificates?cn=plc&status=active&expires_after=2000-01-01&expires_before=2999-01-01&dms_id=" + f.dms.DMS.ID, []string{"cert-row"}, []string{f.cert.Serial}},
		{"/ui/certificates?serial=" + f.cert.Serial[:6] + "*", []string{"cert-row"}, []string{f.cert.Serial}},
		{"/ui/certificates/" + f.cert.Serial, []string{"cert-detail", "cert-subject", "cert-sans", "cert-key-usage", "cert-eku", "cert-key-algorithm", "cert-extensions", "revoke-form", "revoke-reason", "revoke-button", "download-pem", "download-der"},
			[]string{"DNS: " + f.san, "ECDSA P-256", "clientAuth", "digitalSignature", "Subject Alternative Name"}},
		{"/ui/audit", []string{"audit-chain-status", "audit-table", "audit-row"}, []string{`data-status="ok"`, "certificate.issue", "ui.login"}},
		{"/ui/subscriptions", []string{"subscription-table", "subscription-row", "subscription-create-form", "subscription-delete-button"}, []string{"ops-hook"}},
	}
	for _, p := range pages {
		t.Run(strings.TrimPrefix(p.path, "/ui"), func(t *testing.T) {
			body := c.mustGet(p.path)
			for _, h := range p.hooks {
				contains(t, body, `data-test="`+h+`"`, p.path)
			}
			for _, s := range p.texts {
				contains(t, body, s, p.path)
			}
			// Every page: the nav, who is logged in, and logout.
			for _, h := range []string{"nav", "principal", "role", "logout-button"} {
				contains(t, body, `data-test="`+h+`"`, p.path)
			}
			contains(t, body, "<!doctype html>", p.path)
			contains(t, body, `<main id="main"`, p.path)
		})
	}
	t.Run("downloads", func(t *testing.T) {
		r := c.get("/ui/certificates/" + f.cert.Serial + "/pem")
		must(t, r.Status == 200 && strings.HasPrefix(r.Body, "-----BEGIN CERTIFICATE-----"), "PEM download: %d %q", r.Status, snippet(r.Body))
		r = c.get("/ui/certificates/" + f.cert.Serial + "/der")
		must(t, r.Status == 200 && r.Header.Get("Content-Type") == "application/pkix-cert" && r.Body[0] == 0x30, "DER download: %d %s", r.Status, r.Header.Get("Content-Type"))
		r = c.get("/ui/cas/" + f.inter.ID + "/chain.pem")
		must(t, r.Status == 200 && strings.Count(r.Body, "BEGIN CERTIFICATE") == 2, "chain: %d, %d certificates", r.Status, strings.Count(r.Body, "BEGIN CERTIFICATE"))
		r = c.get("/ui/static/app.css")
		must(t, r.Status == 200 && strings.Contains(r.Header.Get("Content-Type"), "text/css"), "css: %d %s", r.Status, r.Header.Get("Content-Type"))
	})
	t.Run("security headers", func(t *testing.T) {
		r := c.get("/ui")
		for k, want := range map[string]string{"Content-Security-Policy": "script-src 'self'", "X-Frame-Options": "DENY", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
			if !strings.Contains(r.Header.Get(k), want) {
				t.Errorf("%s: %q, want it to contain %q", k, r.Header.Get(k), want)
			}
		}
		notContains(t, r.Body, "<script>", "inline script")
	})
	t.Run("not found", func(t *testing.T) {
		for _, p := range []string{"/ui/certificates/abcdef", "/ui/devices/no-such-device", "/ui/cas/" + f.dms.DMS.ID, "/ui/nothing-here"} {
			r := c.get(p)
			if r.Status != http.StatusNotFound {
				t.Errorf("GET %s: got %d, want 404", p, r.Status)
			}
			contains(t, r.Body, `data-test="error-page"`, p)
		}
	})
}

func TestActions(t *testing.T) {
	env := start(t)
	f := seedData(t, env)
	c := newClient(t, env)
	c.mustLogin(env.AdminToken)

	t.Run("create a root and an intermediate", func(t *testing.T) {
		r := c.post("/ui/cas", url.Values{"name": {"ui-root"}, "common_name": {"UI Root"}})
		must(t, r.Status == http.StatusSeeOther, "root: %d\n%s", r.Status, snippet(r.Body))
		rootID := strings.TrimPrefix(r.Header.Get("Location"), "/ui/cas/")
		rootID = strings.SplitN(rootID, "?", 2)[0]
		r = c.post("/ui/cas", url.Values{"name": {"ui-inter"}, "common_name": {"UI Intermediate"}, "parent_id": {rootID}, "validity_days": {"365"}, "key_algorithm": {"ecdsa-p384"}})
		must(t, r.Status == http.StatusSeeOther, "intermediate: %d\n%s", r.Status, snippet(r.Body))
		body := c.mustGet("/ui/cas")
		contains(t, body, `data-ca-name="ui-inter"`, "tree")
		// The intermediate is in the tree below the root.
		i, j := strings.Index(body, `data-ca-name="ui-root"`), strings.Index(body, `data-ca-name="ui-inter"`)
		must(t, i >= 0 && j > i, "tree order: root at %d, intermediate at %d", i, j)
	})
	t.Run("import a CA with its key", func(t *testing.T) {
		ext := testpki.NewT(t).Root("External Root")
		r := c.post("/ui/cas/import", url.Values{"name": {"external"}, "certificate_pem": {string(ext.CertPEM())}, "key_pem": {string(ext.KeyPEM())}})
		must(t, r.Status == http.StatusSeeOther, "import: %d\n%s", r.Status, snippet(r.Body))
		body := c.mustGet(strings.SplitN(r.Header.Get("Location"), "?", 2)[0])
		contains(t, body, "External Root", "imported CA")
		contains(t, body, "in the control plane's key store", "imported CA key")
	})
	t.Run("create a DMS and read its token once", func(t *testing.T) {
		r := c.post("/ui/dmss", url.Values{"name": {"gw-ui"}, "mode": {"local"}, "local_quota": {"500"}, "authorized_cas": {"line1"},
			"labels": {"sensors line1 device\nmeters line1 profile=device device_auth=basic_secret"}, "edge_name_constraints": {"hall4.example\n10.4.0.0/16"}, "jit_registration": {"on"}, "token_ttl_hours": {"48"}})
		must(t, r.Status == http.StatusCreated, "create DMS: %d\n%s", r.Status, snippet(r.Body))
		m := regexp.MustCompile(`data-test="dms-bootstrap-token">(obt_[A-Za-z0-9_-]+)<`).FindStringSubmatch(r.Body)
		must(t, m != nil, "no bootstrap token on the result page:\n%s", snippet(r.Body))
		must(t, strings.Contains(r.Header.Get("Cache-Control"), "no-store"), "token page is cacheable: %q", r.Header.Get("Cache-Control"))
		loc := r.Header.Get("Location")
		body := c.mustGet(loc)
		notContains(t, body, m[1], "DMS page")
		contains(t, body, `data-test="dms-policy-mode">local<`, "DMS page")
		contains(t, body, "hall4.example", "DMS page")
		contains(t, body, "<code>sensors</code>", "DMS page")
		contains(t, body, "device auth basic_secret", "DMS page")
		contains(t, body, "meters line1 profile=device device_auth=basic_secret", "DMS policy form")
		notContains(t, c.mustGet("/ui/dmss"), m[1], "DMS list")
		// The token works, once, with the API.
		var boot apitypes.DMSBootstrapResponse
		csr, _, err := testpki.CSR("gw")
		must(t, err == nil, "%v", err)
		env.MustDo("POST", "/api/v1/dms/bootstrap", "", apitypes.DMSBootstrapRequest{Token: m[1], CSRPEM: pemCSR(csr.Raw)}, &boot, 200)

		// Edit the policy: queued, one more CA.
		r = c.post(loc, url.Values{"mode": {"queued"}, "authorized_cas": {"line1\n" + f.root.ID}, "reenroll_window_days": {"30"}})
		must(t, r.Status == http.StatusSeeOther, "update: %d\n%s", r.Status, snippet(r.Body))
		body = c.mustGet(strings.SplitN(r.Header.Get("Location"), "?", 2)[0])
		contains(t, body, `data-test="dms-policy-mode">queued<`, "updated DMS")
		contains(t, body, "factory-root", "updated DMS authorized CAs")
		contains(t, body, "30 days", "updated DMS")
		// Disable.
		r = c.post(loc+"/disable", nil)
		must(t, r.Status == http.StatusSeeOther, "disable: %d\n%s", r.Status, snippet(r.Body))
		body = c.mustGet(loc)
		contains(t, body, `data-test="dms-status" data-status="disabled"`, "disabled DMS")
		notContains(t, body, `data-test="dms-disable-button"`, "disabled DMS")
	})
	t.Run("decommission a device", func(t *testing.T) {
		r := c.post("/ui/devices/"+f.device+"/decommission", nil)
		must(t, r.Status == http.StatusSeeOther, "decommission: %d\n%s", r.Status, snippet(r.Body))
		body := c.mustGet("/ui/devices/" + f.device)
		contains(t, body, `data-test="device-status" data-status="decommissioned"`, "device page")
		contains(t, body, "device.decommissioned", "device timeline")
		must(t, certStatus(t, env, f.cert.Serial) == "revoked", "the device's certificate is not revoked")
	})
	t.Run("subscriptions", func(t *testing.T) {
		r := c.post("/ui/subscriptions", url.Values{"name": {"sec-team"}, "channel": {"webhook"}, "target": {"https://hooks.example/sec"}, "event_kinds": {"certificate.revoked, dms.*"}})
		must(t, r.Status == http.StatusCreated, "create: %d\n%s", r.Status, snippet(r.Body))
		contains(t, r.Body, `data-test="subscription-secret">whsec_`, "created subscription")
		m := regexp.MustCompile(`data-subscription-id="([0-9a-f-]+)"`).FindStringSubmatch(r.Body)
		must(t, m != nil, "no subscription id")
		body := c.mustGet("/ui/subscriptions")
		contains(t, body, "sec-team", "list")
		notContains(t, body, "whsec_", "list")
		r = c.post("/ui/subscriptions/"+m[1]+"/delete", nil)
		must(t, r.Status == http.StatusSeeOther, "delete: %d\n%s", r.Status, snippet(r.Body))
		notContains(t, c.mustGet("/ui/subscriptions"), "sec-team", "list after delete")
	})
	t.Run("revoke a CA", func(t *testing.T) {
		r := c.post("/ui/cas/"+f.inter.ID+"/revoke", url.Values{"reason": {"cACompromise"}})
		must(t, r.Status == http.StatusSeeOther, "revoke CA: %d\n%s", r.Status, snippet(r.Body))
		body := c.mustGet("/ui/cas/" + f.inter.ID)
		contains(t, body, `data-test="ca-status" data-status="revoked"`, "revoked CA")
		contains(t, body, "cACompromise", "revoked CA")
	})
}

func pemCSR(der []byte) string {
	return "-----BEGIN CERTIFICATE REQUEST-----\n" + b64Lines(der) + "-----END CERTIFICATE REQUEST-----\n"
}

func TestBadInput(t *testing.T) {
	env := start(t)
	f := seedData(t, env)
	c := newClient(t, env)
	c.mustLogin(env.AdminToken)
	cases := []struct {
		name, method, path string
		form               url.Values
		status             int
		field              string
	}{
		{"CA without a name", "POST", "/ui/cas", url.Values{"common_name": {"x"}}, 400, "name"},
		{"CA without a common name", "POST", "/ui/cas", url.Values{"name": {"x"}}, 400, "common_name"},
		{"CA with a bad parent", "POST", "/ui/cas", url.Values{"name": {"x"}, "common_name": {"x"}, "parent_id": {"not-a-uuid"}}, 400, "parent_id"},
		{"CA with bad validity", "POST", "/ui/cas", url.Values{"name": {"x"}, "common_name": {"x"}, "validity_days": {"ten"}}, 400, "validity_days"},
		{"CA with an unknown key algorithm", "POST", "/ui/cas", url.Values{"name": {"x"}, "common_name": {"x"}, "key_algorithm": {"dsa-1024"}}, 400, "key_algorithm"},
		{"duplicate CA name", "POST", "/ui/cas", url.Values{"name": {"line1"}, "common_name": {"x"}, "parent_id": {f.root.ID}}, 409, ""},
		{"import without a certificate", "POST", "/ui/cas/import", url.Values{"name": {"x"}}, 400, "certificate_pem"},
		{"import of garbage", "POST", "/ui/cas/import", url.Values{"name": {"x"}, "certificate_pem": {"hello"}}, 400, "certificate_pem"},
		{"import with a bad key", "POST", "/ui/cas/import", url.Values{"name": {"x"}, "certificate_pem": {f.root.CertPEM}, "key_pem": {"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}}, 400, "key_pem"},
		{"DMS with an unknown mode", "POST", "/ui/dmss", url.Values{"name": {"x"}, "mode": {"sideways"}}, 400, "policy.mode"},
		{"DMS with a bad quota", "POST", "/ui/dmss", url.Values{"name": {"x"}, "local_quota": {"-5"}}, 400, "local_quota"},
		{"DMS with an unknown CA", "POST", "/ui/dmss", url.Values{"name": {"x"}, "authorized_cas": {"no-such-ca"}}, 400, "authorized_cas"},
		{"DMS with a bad label line", "POST", "/ui/dmss", url.Values{"name": {"x"}, "authorized_cas": {"line1"}, "labels": {"only-a-name"}}, 400, "labels"},
		{"DMS with a bad label option", "POST", "/ui/dmss", url.Values{"name": {"x"}, "authorized_cas": {"line1"}, "labels": {"a line1 colour=blue"}}, 400, "labels"},
		{"DMS label with an unknown device auth", "POST", "/ui/dmss", url.Values{"name": {"x"}, "authorized_cas": {"line1"}, "labels": {"a line1 device_auth=telepathy"}}, 400, "policy.labels[0].device_auth"},
		{"DMS label CA not authorized", "POST", "/ui/dmss", url.Values{"name": {"x"}, "authorized_cas": {"line1"}, "labels": {"a factory-root"}}, 400, "policy.labels[0].ca_id"},
		{"DMS local mode without quota", "POST", "/ui/dmss", url.Values{"name": {"x"}, "mode": {"local"}, "authorized_cas": {"line1"}}, 400, "policy.local_quota"},
		{"DMS bootstrap CA not PEM", "POST", "/ui/dmss", url.Values{"name": {"x"}, "bootstrap_ca_pems": {"not pem"}}, 400, "bootstrap_ca_pems"},
		{"DMS webhook over http", "POST", "/ui/dmss", url.Values{"name": {"x"}, "device_auth": {"webhook"}, "webhook_url": {"http://x.example"}}, 400, "policy.webhook_url"},
		{"revoke with an unknown reason", "POST", "/ui/certificates/" + f.cert.Serial + "/revoke", url.Values{"reason": {"boredom"}}, 400, "reason"},
		{"subscription with a bad target", "POST", "/ui/subscriptions", url.Values{"name": {"x"}, "channel": {"email"}, "target": {"not an address"}}, 400, "target"},
		{"subscription with a bad channel", "POST", "/ui/subscriptions", url.Values{"name": {"x"}, "channel": {"pigeon"}, "target": {"a@example.com"}}, 400, "channel"},
		{"certificate search by bad status", "GET", "/ui/certificates?status=sleepy", nil, 400, "status"},
		{"certificate search by bad date", "GET", "/ui/certificates?expires_after=tomorrow", nil, 400, "expires_after"},
		{"certificate search by bad serial", "GET", "/ui/certificates?serial=xyz", nil, 400, "serial"},
		{"certificate search by bad DMS", "GET", "/ui/certificates?dms_id=gw", nil, 400, "dms_id"},
		{"certificate search with a forged cursor", "GET", "/ui/certificates?cursor=AAAA", nil, 400, "cursor"},
		{"device search by bad status", "GET", "/ui/devices?status=happy", nil, 400, "status"},
		{"audit with a bad cursor", "GET", "/ui/audit?cursor=-1", nil, 400, "cursor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r response
			if tc.method == "GET" {
				r = c.get(tc.path)
			} else {
				r = c.post(tc.path, tc.form)
			}
			if r.Status != tc.status {
				t.Fatalf("got %d, want %d:\n%s", r.Status, tc.status, snippet(r.Body))
			}
			contains(t, r.Body, `data-test="error-page" data-status="`+strconv.Itoa(tc.status)+`"`, tc.name)
			if tc.field != "" {
				contains(t, r.Body, `data-test="error-field">`+tc.field+`<`, tc.name)
			}
			notContains(t, r.Body, "goroutine", tc.name)
			notContains(t, r.Body, "pgx", tc.name)
		})
	}
	t.Run("form larger than 1 MiB", func(t *testing.T) {
		r := c.post("/ui/cas/import", url.Values{"name": {"big"}, "certificate_pem": {strings.Repeat("A", 2<<20)}})
		must(t, r.Status == http.StatusRequestEntityTooLarge, "got %d, want 413", r.Status)
	})
}

func TestCharts(t *testing.T) {
	env := start(t)
	f := seedData(t, env)
	issue(t, env, f.inter.ID, f.device, f.san)
	// Expiring soon: make two certificates expire in 3 and 40 days.
	sql(t, env, `UPDATE certificates SET not_after = date_trunc('day', now()) + interval '3 days 6 hours' WHERE serial = $1`, f.cert.Serial)
	c := newClient(t, env)
	c.mustLogin(env.AdminToken)
	body := c.mustGet("/ui")

	svg := regexp.MustCompile(`(?s)<svg class="chart"[^>]*data-test="chart-enrollments-svg"[^>]*>.*?</svg>`).FindString(body)
	must(t, svg != "", "no enrollments chart")
	var issued int
	ctxRow(t, env, `SELECT count(*) FROM certificates WHERE created_at > now() - interval '89 days'`, &issued)
	contains(t, svg, `data-total="`+strconv.Itoa(issued)+`"`, "enrollments chart")
	must(t, bars(svg) == 1, "the enrollments chart draws %d bars, want 1 (one day with certificates):\n%s", bars(svg), snippet(svg))

	svg = regexp.MustCompile(`(?s)<svg class="chart"[^>]*data-test="chart-expiries-svg"[^>]*>.*?</svg>`).FindString(body)
	must(t, svg != "", "no expiries chart")
	contains(t, svg, `data-points="1"`, "expiries chart: one day with expiries (the others expire in years)")
	must(t, bars(svg) == 1, "expiries chart: %d bars, want 1", bars(svg))
	contains(t, svg, "<text", "axis labels")
	contains(t, body, `data-test="chart-expiries-table"`, "data table")
	// Counts by status.
	contains(t, body, `data-test="count-cert-active">`, "counts")
	m := regexp.MustCompile(`data-test="cert-total">([0-9,]+)<`).FindStringSubmatch(body)
	var total int
	ctxRow(t, env, `SELECT count(*) FROM certificates`, &total)
	must(t, m != nil && strings.ReplaceAll(m[1], ",", "") == strconv.Itoa(total), "certificate total %v, want %d", m, total)
}

var barRE = regexp.MustCompile(`<path d="M([0-9.]+),([0-9.]+)L[0-9.]+,([0-9.]+)L[^"]*" style="fill:#4[fF]7[cC][aA][cC]`)

// bars counts the bars of a chart with a height: days with data.
func bars(svg string) int {
	n := 0
	for _, m := range barRE.FindAllStringSubmatch(svg, -1) {
		if m[2] != m[3] {
			n++
		}
	}
	return n
}

func TestOverviewFollowsChanges(t *testing.T) {
	env := start(t)
	f := seedData(t, env)
	c := newClient(t, env)
	c.mustLogin(env.AdminToken)
	revoked := regexp.MustCompile(`data-test="count-cert-revoked">([0-9,]+)<`)
	count := func(body string) string {
		m := revoked.FindStringSubmatch(body)
		must(t, m != nil, "no revoked count on the overview")
		return m[1]
	}
	must(t, count(c.mustGet("/ui")) == "0", "revoked before any revocation")
	// A change made in the dashboard shows on the next view.
	r := c.post("/ui/certificates/"+f.cert.Serial+"/revoke", url.Values{"reason": {"superseded"}})
	must(t, r.Status == http.StatusSeeOther, "revoke: %d", r.Status)
	must(t, count(c.mustGet("/ui")) == "1", "the overview did not follow a revocation made in the dashboard")
	// One made elsewhere (the API) shows within statsFresh, or at once
	// with "Refresh now".
	other := issue(t, env, f.inter.ID, f.device, f.san)
	env.MustDo("POST", "/api/v1/certificates/"+other.Serial+"/revoke", env.AdminToken, apitypes.RevokeRequest{Reason: "superseded"}, nil, 200)
	body := c.mustGet("/ui?fresh=1")
	must(t, count(body) == "2", "refresh now: revoked count %s, want 2", count(body))
	contains(t, body, `data-test="overview-as-of"`, "overview")
}

func TestAuditChainStatus(t *testing.T) {
	env := start(t)
	seedData(t, env)
	c := newClient(t, env)
	c.mustLogin(env.AdminToken)
	body := c.mustGet("/ui/audit")
	contains(t, body, `data-test="audit-chain-status" data-status="ok"`, "intact chain")
	// Tamper with a row behind the trigger's back.
	sql(t, env, `ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update`)
	sql(t, env, `UPDATE audit_log SET actor = 'mallory' WHERE seq = 2`)
	sql(t, env, `ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update`)
	body = c.mustGet("/ui/audit?verify=1")
	contains(t, body, `data-test="audit-chain-status" data-status="broken" data-first-bad-seq="2"`, "broken chain")
	contains(t, body, "BROKEN", "broken chain")
}

func TestPagination(t *testing.T) {
	env := start(t)
	f := seedData(t, env)
	for i := range 55 {
		env.MustDo("POST", "/api/v1/devices", env.AdminToken, apitypes.RegisterDeviceRequest{ID: "sensor-" + strconv.Itoa(1000+i), DMSID: f.dms.DMS.ID}, nil, 201)
	}
	c := newClient(t, env)
	c.mustLogin(env.AdminToken)
	body := c.mustGet("/ui/devices?q=sensor-")
	must(t, strings.Count(body, `data-test="device-row"`) == 50, "first page: %d rows, want 50", strings.Count(body, `data-test="device-row"`))
	m := regexp.MustCompile(`href="([^"]+)" data-test="next-page"`).FindStringSubmatch(body)
	must(t, m != nil, "no next page link")
	next := strings.ReplaceAll(m[1], "&amp;", "&")
	body = c.mustGet(next)
	must(t, strings.Count(body, `data-test="device-row"`) == 5, "second page: %d rows, want 5", strings.Count(body, `data-test="device-row"`))
	contains(t, body, `data-device-id="sensor-1054"`, "second page")
	notContains(t, body, `data-test="next-page"`, "last page")
	contains(t, body, `data-test="first-page"`, "second page")
}
