package ui_test

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/internal/testpki"
	"github.com/outpost-pki/outpost/testbed"
)

// sharedPG is the PostgreSQL cluster the tests of this package share (one
// database each); benchmarks build their own large fixture.
var sharedPG *testbed.Postgres

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedPG != nil {
		_ = sharedPG.Close()
	}
	closeBench()
	os.Exit(code)
}

// start runs a control plane on a database of the shared cluster.
func start(t *testing.T) *cptest.Env {
	t.Helper()
	if sharedPG == nil {
		pg, err := testbed.StartPostgres(context.Background(), testbed.PostgresOptions{})
		if err != nil {
			t.Fatalf("starting postgres: %v", err)
		}
		sharedPG = pg
	}
	return cptest.Start(t, sharedPG)
}

// client is a browser stand-in: a cookie jar, redirects not followed (the
// tests look at them).
type client struct {
	t    *testing.T
	env  *cptest.Env
	http *http.Client
	// Header is added to every request.
	Header http.Header
}

func newClient(t *testing.T, env *cptest.Env) *client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, env: env, Header: http.Header{}, http: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type response struct {
	Status int
	Body   string
	Header http.Header
}

func (c *client) do(method, path string, form url.Values, hdr http.Header) response {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.env.URL+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range c.Header {
		req.Header[k] = v
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Body: string(b), Header: resp.Header}
}

func (c *client) get(path string) response { c.t.Helper(); return c.do("GET", path, nil, nil) }

// post sends a form as a browser would from the dashboard: with the
// session's CSRF token (unless the form sets csrf itself) and a
// same-origin Origin header.
func (c *client) post(path string, form url.Values) response {
	c.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", c.csrf())
	}
	return c.do("POST", path, form, http.Header{"Origin": {c.env.URL}})
}

// mustGet fetches a page and fails unless it is 200.
func (c *client) mustGet(path string) string {
	c.t.Helper()
	r := c.get(path)
	if r.Status != http.StatusOK {
		c.t.Fatalf("GET %s: got %d, want 200:\n%s", path, r.Status, snippet(r.Body))
	}
	return r.Body
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the session's CSRF token from a page (the logout form).
func (c *client) csrf() string {
	c.t.Helper()
	r := c.get("/ui/cas")
	m := csrfRE.FindStringSubmatch(r.Body)
	if m == nil {
		c.t.Fatalf("no CSRF token on /ui/cas (%d):\n%s", r.Status, snippet(r.Body))
	}
	return m[1]
}

// login logs in with token and returns the response to the login POST.
func (c *client) login(token string) response {
	c.t.Helper()
	page := c.get("/ui/login")
	if page.Status != http.StatusOK {
		c.t.Fatalf("GET /ui/login: %d", page.Status)
	}
	m := csrfRE.FindStringSubmatch(page.Body)
	if m == nil {
		c.t.Fatalf("login page has no csrf field:\n%s", snippet(page.Body))
	}
	return c.do("POST", "/ui/login", url.Values{"csrf": {m[1]}, "token": {token}, "next": {"/ui"}}, http.Header{"Origin": {c.env.URL}})
}

func (c *client) mustLogin(token string) {
	c.t.Helper()
	r := c.login(token)
	if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/ui" {
		c.t.Fatalf("login: got %d to %q, want 303 to /ui:\n%s", r.Status, r.Header.Get("Location"), snippet(r.Body))
	}
}

func snippet(s string) string {
	if len(s) > 3000 {
		return s[:3000] + "…"
	}
	return s
}

// token creates an API token for a new principal with role.
func token(t *testing.T, env *cptest.Env, principal, role string) apitypes.CreateTokenResponse {
	t.Helper()
	var tok apitypes.CreateTokenResponse
	env.MustDo("POST", "/api/v1/tokens", env.AdminToken, apitypes.CreateTokenRequest{Principal: principal, Role: role}, &tok, 201)
	return tok
}

// fixture is the data the page tests look at, made through the API.
type fixture struct {
	root, inter apitypes.CA
	dms         apitypes.CreateDMSResponse
	device      string
	cert        apitypes.Certificate
	san         string
}

func seedData(t *testing.T, env *cptest.Env) *fixture {
	t.Helper()
	adm := env.AdminToken
	f := &fixture{device: "plc-7", san: "plc-7.line1.example"}
	env.MustDo("POST", "/api/v1/cas", adm, apitypes.CreateCARequest{Name: "factory-root", CommonName: "Factory Root"}, &f.root, 201)
	env.MustDo("POST", "/api/v1/cas", adm, apitypes.CreateCARequest{Name: "line1", ParentID: f.root.ID, CommonName: "Line 1 CA"}, &f.inter, 201)
	env.MustDo("POST", "/api/v1/dmss", adm, apitypes.CreateDMSRequest{Name: "gw-hall-3", AuthorizedCAs: []string{f.inter.ID}}, &f.dms, 201)
	env.MustDo("POST", "/api/v1/devices", adm, apitypes.RegisterDeviceRequest{ID: f.device, DMSID: f.dms.DMS.ID, Labels: map[string]string{"line": "1"}}, nil, 201)
	csr, _, err := testpki.CSR(f.device, testpki.DNSNames(f.san))
	if err != nil {
		t.Fatal(err)
	}
	csrPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
	env.MustDo("POST", "/api/v1/certificates", adm, apitypes.IssueRequest{CAID: f.inter.ID, CSRPEM: csrPEM, DeviceID: f.device, DMSID: f.dms.DMS.ID}, &f.cert, 201)
	env.MustDo("POST", "/api/v1/subscriptions", adm, apitypes.CreateSubscriptionRequest{Name: "ops-hook", Channel: "webhook", Target: "https://hooks.example/outpost"}, nil, 201)
	return f
}

// issue issues one more certificate for a device from a CA.
func issue(t *testing.T, env *cptest.Env, caID, device, san string) apitypes.Certificate {
	t.Helper()
	csr, _, err := testpki.CSR(device, testpki.DNSNames(san))
	if err != nil {
		t.Fatal(err)
	}
	var c apitypes.Certificate
	env.MustDo("POST", "/api/v1/certificates", env.AdminToken, apitypes.IssueRequest{CAID: caID, CSRPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})), DeviceID: device}, &c, 201)
	return c
}

// sql runs a statement on the control plane's database.
func sql(t *testing.T, env *cptest.Env, stmt string, args ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, env.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, stmt, args...); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

func certStatus(t *testing.T, env *cptest.Env, serial string) string {
	t.Helper()
	var c apitypes.Certificate
	env.MustDo("GET", "/api/v1/certificates/"+serial, env.AdminToken, nil, &c, 200)
	return c.Status
}

func must(t *testing.T, cond bool, format string, args ...any) {
	t.Helper()
	if !cond {
		t.Fatalf(format, args...)
	}
}

func contains(t *testing.T, body, want, what string) {
	t.Helper()
	if !strings.Contains(body, want) {
		t.Errorf("%s: page does not contain %q:\n%s", what, want, snippet(body))
	}
}

func notContains(t *testing.T, body, unwanted, what string) {
	t.Helper()
	if strings.Contains(body, unwanted) {
		t.Errorf("%s: page contains %q", what, unwanted)
	}
}

// ctxRow reads one row from the control plane's database.
func ctxRow(t *testing.T, env *cptest.Env, query string, dst any, args ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, env.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, query, args...).Scan(dst); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func b64Lines(der []byte) string {
	s := base64.StdEncoding.EncodeToString(der)
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	b.WriteString(s + "\n")
	return b.String()
}
