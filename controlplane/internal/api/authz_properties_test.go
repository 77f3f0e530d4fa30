package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/api"
	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
)

// TestAuthorizationProperties asserts issue 11's authorization properties
// in one table, each at the boundary a caller reaches: the REST API (a
// bearer token, or a DMS identity over mutual TLS) and the dashboard (a
// session cookie and its CSRF token).
//
//   - a DMS acts only on its own things: its identity reaches whoami and
//     nothing else, not another DMS, and no token can carry the DMS role
//     (over sync: syncsvc TestSyncAuthorization);
//   - an operator cannot create a root CA (nor import one);
//   - a viewer cannot change anything;
//   - revoked tokens are refused, and end the sessions made with them;
//   - expired tokens and expired sessions are refused.
//
// The older, more detailed tests: TestAuthorizationMatrix (every route x
// every kind of caller, the expired token), TestDMSMutualTLSIdentity
// (dms_mtls_test.go), ui's TestRoles and TestSessionEnds. Each row here
// names the one it stands for.
func TestAuthorizationProperties(t *testing.T) {
	e := cptest.Start(t, nil)
	mk := func(name, role string, ttl int) apitypes.CreateTokenResponse {
		t.Helper()
		var tok apitypes.CreateTokenResponse
		e.MustDo("POST", "/api/v1/tokens", e.AdminToken, apitypes.CreateTokenRequest{Principal: name, Role: role, TTLHours: ttl}, &tok, 201)
		return tok
	}
	viewer, operator, admin := mk("p-viewer", "viewer", 0), mk("p-operator", "operator", 0), mk("p-admin", "admin", 0)
	revoked, expiring := mk("p-revoked", "admin", 0), mk("p-expiring", "admin", 1)

	var root, inter apitypes.CA
	e.MustDo("POST", "/api/v1/cas", admin.Token, apitypes.CreateCARequest{Name: "p-root", CommonName: "P Root"}, &root, 201)
	e.MustDo("POST", "/api/v1/cas", admin.Token, apitypes.CreateCARequest{Name: "p-inter", CommonName: "P Inter", ParentID: root.ID}, &inter, 201)
	dmsA, certA := bootstrapDMS(t, e, "p-gw-a", inter.ID)
	dmsB, _ := bootstrapDMS(t, e, "p-gw-b", inter.ID)
	var cert apitypes.Certificate
	e.MustDo("POST", "/api/v1/certificates", admin.Token, apitypes.IssueRequest{CAID: inter.ID, CSRPEM: csrPEM(t, "p-dev"), DMSID: dmsB}, &cert, 201)

	// The API behind mutual TLS, as cpserver serves it with tls configured.
	srv := httptest.NewUnstartedServer(e.App.API.Handler())
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: e.App.API.ClientCAs(), MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	asDMS := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{certA}, MinVersion: tls.VersionTLS12}}}
	dmsCall := func(method, path string, body any) int {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := jsonMarshal(body)
			rd = strings.NewReader(string(b))
		}
		req, _ := http.NewRequest(method, srv.URL+path, rd)
		req.Header.Set("Content-Type", "application/json")
		resp, err := asDMS.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	apiCall := func(tok, method, path string, body any) func() int {
		return func() int {
			t.Helper()
			status, _ := doWithHeader(t, e, method, path, "Bearer "+tok, body)
			return status
		}
	}

	// Dashboard sessions, logged in before anything is revoked.
	viewerUI := uiLogin(t, e, viewer.Token)
	operatorUI := uiLogin(t, e, operator.Token)
	revokedUI := uiLogin(t, e, revoked.Token)
	expiredUI := uiLogin(t, e, admin.Token)
	for name, s := range map[string]*uiSession{"viewer": viewerUI, "operator": operatorUI, "revoked": revokedUI, "expired": expiredUI} {
		if s.loginStatus != http.StatusSeeOther {
			t.Fatalf("dashboard login as %s: got %d, want 303", name, s.loginStatus)
		}
	}
	e.MustDo("DELETE", "/api/v1/tokens/"+revoked.TokenID, e.AdminToken, nil, nil, 204)

	type row struct {
		property, ref string
		do            func() int
		want          int
	}
	rows := []row{
		// A DMS acts only on its own things.
		{"dms: whoami with its identity (control)", "TestDMSMutualTLSIdentity", func() int { return dmsCall("GET", "/api/v1/whoami", nil) }, 200},
		{"dms: cannot read another DMS", "TestDMSMutualTLSIdentity", func() int { return dmsCall("GET", "/api/v1/dmss/"+dmsB, nil) }, 403},
		{"dms: cannot read itself through admin routes", "TestDMSMutualTLSIdentity", func() int { return dmsCall("GET", "/api/v1/dmss/"+dmsA, nil) }, 403},
		{"dms: cannot disable another DMS", "TestDMSMutualTLSIdentity", func() int { return dmsCall("POST", "/api/v1/dmss/"+dmsB+"/disable", nil) }, 403},
		{"dms: cannot change another DMS's policy or CAs", "TestDMSMutualTLSIdentity", func() int {
			return dmsCall("PATCH", "/api/v1/dmss/"+dmsB, apitypes.UpdateDMSRequest{AuthorizedCAs: &[]string{root.ID}})
		}, 403},
		{"dms: cannot issue from a CA", "TestDMSMutualTLSIdentity", func() int {
			return dmsCall("POST", "/api/v1/certificates", apitypes.IssueRequest{CAID: inter.ID, CSRPEM: csrPEM(t, "x"), DMSID: dmsA})
		}, 403},
		{"dms: cannot revoke another DMS's device certificate", "TestDMSMutualTLSIdentity", func() int {
			return dmsCall("POST", "/api/v1/certificates/"+cert.Serial+"/revoke", apitypes.RevokeRequest{})
		}, 403},
		{"dms: cannot register devices", "TestDMSMutualTLSIdentity", func() int {
			return dmsCall("POST", "/api/v1/devices", apitypes.RegisterDeviceRequest{ID: "p-dev-x", DMSID: dmsB})
		}, 403},
		{"dms: no token carries the DMS role", "TestAuthorizationMatrix", apiCall(e.AdminToken, "POST", "/api/v1/tokens", apitypes.CreateTokenRequest{Principal: "p-dms", Role: "dms"}), 400},

		// An operator cannot create a root CA.
		{"operator: root CA through the API", "TestAuthorizationMatrix", apiCall(operator.Token, "POST", "/api/v1/cas", apitypes.CreateCARequest{Name: "p-rogue", CommonName: "Rogue Root"}), 403},
		{"operator: CA import (a root with its key) through the API", "TestAuthorizationMatrix", apiCall(operator.Token, "POST", "/api/v1/cas/import", apitypes.ImportCARequest{Name: "p-rogue-import", CertificatePEM: root.CertPEM}), 403},
		{"operator: intermediate through the API (control)", "TestAuthorizationMatrix", apiCall(operator.Token, "POST", "/api/v1/cas", apitypes.CreateCARequest{Name: "p-op-inter", CommonName: "Op Inter", ParentID: root.ID}), 201},
		{"operator: root CA through the dashboard", "ui TestRoles", func() int {
			return operatorUI.post("/ui/cas", url.Values{"name": {"p-rogue-ui"}, "common_name": {"Rogue Root UI"}})
		}, 403},
		{"operator: CA import through the dashboard", "ui TestRoles", func() int {
			return operatorUI.post("/ui/cas/import", url.Values{"name": {"p-rogue-ui-import"}, "certificate_pem": {root.CertPEM}})
		}, 403},
		{"admin: root CA through the API (control)", "TestAuthorizationMatrix", apiCall(admin.Token, "POST", "/api/v1/cas", apitypes.CreateCARequest{Name: "p-admin-root", CommonName: "Admin Root"}), 201},

		// A viewer cannot change anything: the API routes are below.
		{"viewer: revoke through the dashboard", "ui TestRoles", func() int {
			return viewerUI.post("/ui/certificates/"+cert.Serial+"/revoke", url.Values{"reason": {"keyCompromise"}})
		}, 403},
		{"viewer: disable a DMS through the dashboard", "ui TestRoles", func() int { return viewerUI.post("/ui/dmss/"+dmsB+"/disable", nil) }, 403},
		{"viewer: intermediate CA through the dashboard", "ui TestRoles", func() int {
			return viewerUI.post("/ui/cas", url.Values{"name": {"p-v"}, "common_name": {"V"}, "parent_id": {root.ID}})
		}, 403},

		// Revoked tokens.
		{"revoked token: API", "TestAuthorizationMatrix", apiCall(revoked.Token, "GET", "/api/v1/whoami", nil), 401},
		{"revoked token: API mutation", "TestAuthorizationMatrix", apiCall(revoked.Token, "POST", "/api/v1/dmss/"+dmsB+"/disable", nil), 401},
		{"revoked token: dashboard login", "ui TestLogin", func() int { return uiLogin(t, e, revoked.Token).loginStatus }, 401},
		{"revoked token: its dashboard session ends", "ui TestSessionEnds", func() int { return revokedUI.get("/ui/cas") }, 303},
	}
	// A viewer token on every mutating API route.
	for _, r := range e.App.API.Routes() {
		if r.Method == "GET" || r.Role == api.RolePublic {
			continue
		}
		path := strings.NewReplacer(":id", dmsB, ":serial", cert.Serial, ":event_id", "1").Replace(r.Path)
		var body any = map[string]any{}
		if b, ok := bodies[r.Method+" "+r.Path]; ok {
			body = b
		}
		if r.Method == "DELETE" {
			body = nil
		}
		rows = append(rows, row{"viewer: " + r.Method + " " + r.Path, "TestAuthorizationMatrix", apiCall(viewer.Token, r.Method, path, body), 403})
	}
	t.Logf("%d rows", len(rows))
	for _, r := range rows {
		t.Run(r.property, func(t *testing.T) {
			if got := r.do(); got != r.want {
				t.Errorf("got %d, want %d (see %s)", got, r.want, r.ref)
			}
		})
	}
	var b apitypes.DMS
	e.MustDo("GET", "/api/v1/dmss/"+dmsB, e.AdminToken, nil, &b, 200)
	if b.Status != "active" {
		t.Errorf("DMS B is %s after the refused calls, want active", b.Status)
	}
	if st := func() string {
		var c apitypes.Certificate
		e.MustDo("GET", "/api/v1/certificates/"+cert.Serial, e.AdminToken, nil, &c, 200)
		return c.Status
	}(); st != "active" {
		t.Errorf("DMS B's device certificate is %s after the refused calls, want active", st)
	}

	// Expiry, last: these move the clocks.
	t.Run("expired token: API", func(t *testing.T) {
		e.App.API.SetClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
		defer e.App.API.SetClock(time.Now)
		if got, _ := doWithHeader(t, e, "GET", "/api/v1/whoami", "Bearer "+expiring.Token, nil); got != 401 {
			t.Errorf("got %d, want 401 (see TestAuthorizationMatrix)", got)
		}
	})
	t.Run("expired token: its DMS mutual TLS twin, an expired identity", func(t *testing.T) {
		e.App.API.SetClock(func() time.Time { return time.Now().AddDate(2, 0, 0) })
		defer e.App.API.SetClock(time.Now)
		if got := dmsCall("GET", "/api/v1/whoami", nil); got != 401 {
			t.Errorf("got %d, want 401", got)
		}
	})
	t.Run("expired session: dashboard", func(t *testing.T) {
		if got := expiredUI.get("/ui/cas"); got != 200 {
			t.Fatalf("before expiry: got %d, want 200", got)
		}
		e.App.UI.SetClock(func() time.Time { return time.Now().Add(13 * time.Hour) })
		defer e.App.UI.SetClock(time.Now)
		if got := expiredUI.get("/ui/cas"); got != 303 {
			t.Errorf("got %d, want 303 to the login page (see ui TestSessionEnds)", got)
		}
	})
}

// bootstrapDMS creates a DMS authorized for caID and bootstraps it; it
// returns the DMS id and its identity as a TLS client certificate.
func bootstrapDMS(t *testing.T, e *cptest.Env, name, caID string) (string, tls.Certificate) {
	t.Helper()
	var dms apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", e.AdminToken, apitypes.CreateDMSRequest{Name: name, AuthorizedCAs: []string{caID}}, &dms, 201)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	var boot apitypes.DMSBootstrapResponse
	e.MustDo("POST", "/api/v1/dms/bootstrap", "", apitypes.DMSBootstrapRequest{Token: dms.BootstrapToken,
		CSRPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, &boot, 200)
	return dms.DMS.ID, tls.Certificate{Certificate: [][]byte{parsePEM(t, boot.CertificatePEM).Raw}, PrivateKey: key}
}

// uiSession is a dashboard session: a cookie jar that does not follow
// redirects.
type uiSession struct {
	t           *testing.T
	e           *cptest.Env
	c           *http.Client
	loginStatus int
}

var uiCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// uiLogin logs in to the dashboard with token; loginStatus is the
// answer to the login form (303 when it worked).
func uiLogin(t *testing.T, e *cptest.Env, token string) *uiSession {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	s := &uiSession{t: t, e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	s.loginStatus = s.send("POST", "/ui/login", url.Values{"csrf": {s.csrf("/ui/login")}, "token": {token}, "next": {"/ui"}})
	return s
}

// csrf reads the CSRF token of a page's forms.
func (s *uiSession) csrf(page string) string {
	s.t.Helper()
	resp, err := s.c.Get(s.e.URL + page)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := uiCSRF.FindSubmatch(b)
	if m == nil {
		s.t.Fatalf("no CSRF token on %s (%d)", page, resp.StatusCode)
	}
	return string(m[1])
}

// get returns the status of a page.
func (s *uiSession) get(path string) int {
	s.t.Helper()
	resp, err := s.c.Get(s.e.URL + path)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// post sends a form from the dashboard (same origin, the session's CSRF
// token) and returns the status.
func (s *uiSession) post(path string, form url.Values) int {
	s.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf", s.csrf("/ui/cas"))
	return s.send("POST", path, form)
}

func (s *uiSession) send(method, path string, form url.Values) int {
	s.t.Helper()
	req, err := http.NewRequest(method, s.e.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", s.e.URL)
	resp, err := s.c.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
