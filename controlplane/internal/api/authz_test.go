package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/api"
	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
)

// bodies gives each mutating route a body that passes the authorization
// layer's view of the request (the handler may still refuse it for other
// reasons, which is not what this test is about).
var bodies = map[string]any{
	"POST /api/v1/cas":                         apitypes.CreateCARequest{Name: "m", ParentID: "00000000-0000-0000-0000-000000000001", CommonName: "m"},
	"POST /api/v1/cas/import":                  apitypes.ImportCARequest{Name: "m"},
	"POST /api/v1/cas/:id/revoke":              apitypes.RevokeRequest{},
	"POST /api/v1/certificates":                apitypes.IssueRequest{},
	"POST /api/v1/certificates/import":         apitypes.ImportCertificateRequest{},
	"POST /api/v1/certificates/:serial/revoke": apitypes.RevokeRequest{},
	"POST /api/v1/dmss":                        apitypes.CreateDMSRequest{},
	"PATCH /api/v1/dmss/:id":                   apitypes.UpdateDMSRequest{},
	"POST /api/v1/dms/bootstrap":               apitypes.DMSBootstrapRequest{},
	"POST /api/v1/devices":                     apitypes.RegisterDeviceRequest{},
	"POST /api/v1/tokens":                      apitypes.CreateTokenRequest{},
}

// TestAuthorizationMatrix calls every route in the route table as every
// kind of caller and checks allow or deny for each cell: no token, a
// malformed header, an unknown token, a revoked token, an expired token,
// and valid viewer, operator and admin tokens.
func TestAuthorizationMatrix(t *testing.T) {
	e := cptest.Start(t, nil)
	mk := func(name, role string, ttl int) apitypes.CreateTokenResponse {
		var tok apitypes.CreateTokenResponse
		e.MustDo("POST", "/api/v1/tokens", e.AdminToken, apitypes.CreateTokenRequest{Principal: name, Role: role, TTLHours: ttl}, &tok, 201)
		return tok
	}
	viewer, operator, admin := mk("v", "viewer", 0).Token, mk("o", "operator", 0).Token, mk("a", "admin", 0).Token
	revoked := mk("r", "admin", 0)
	e.MustDo("DELETE", "/api/v1/tokens/"+revoked.TokenID, e.AdminToken, nil, nil, 204)
	expiring := mk("x", "admin", 1).Token

	type caller struct {
		name   string
		header string // full Authorization header, "" for none
		role   api.Role
		valid  bool
	}
	callers := []caller{
		{"none", "", api.RolePublic, false},
		{"malformed", "Basic dXNlcjpwYXNz", api.RolePublic, false},
		{"unknown", "Bearer opk_not_a_real_token_at_all_000000", api.RolePublic, false},
		{"revoked", "Bearer " + revoked.Token, api.RolePublic, false},
		{"viewer", "Bearer " + viewer, api.RoleViewer, true},
		{"operator", "Bearer " + operator, api.RoleOperator, true},
		{"admin", "Bearer " + admin, api.RoleAdmin, true},
	}
	routes := e.App.API.Routes()
	if len(routes) < 25 {
		t.Fatalf("route table has %d routes", len(routes))
	}
	cells := 0
	for _, r := range routes {
		path := strings.NewReplacer(":id", "00000000-0000-0000-0000-000000000002", ":serial", "00ff", ":event_id", "1").Replace(r.Path)
		for _, c := range callers {
			key := r.Method + " " + r.Path
			var body any
			if b, ok := bodies[key]; ok {
				body = b
			} else if r.Method != "GET" && r.Method != "DELETE" {
				body = map[string]any{}
			}
			t.Run(key+" as "+c.name, func(t *testing.T) {
				status, ptype := doWithHeader(t, e, r.Method, path, c.header, body)
				denied := ptype == "https://outpost.dev/problems/unauthenticated" || ptype == "https://outpost.dev/problems/forbidden-role"
				allowed := r.Role == api.RolePublic || (c.valid && c.role >= r.Role)
				switch {
				case allowed && denied:
					t.Errorf("got %d (%s), want the route to let %s through", status, ptype, c.name)
				case !allowed && !c.valid && (status != 401 || !denied):
					t.Errorf("got %d (%s), want 401 for %s", status, ptype, c.name)
				case !allowed && c.valid && (status != 403 || !denied):
					t.Errorf("got %d (%s), want 403 for %s (route needs %s)", status, ptype, c.name, r.Role)
				}
			})
			cells++
		}
	}
	t.Logf("checked %d cells (%d routes x %d callers)", cells, len(routes), len(callers))

	// An expired token is refused.
	e.App.API.SetClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
	if got, _ := doWithHeader(t, e, "GET", "/api/v1/whoami", "Bearer "+expiring, nil); got != 401 {
		t.Errorf("expired token: got %d, want 401", got)
	}
	e.App.API.SetClock(time.Now)
	if got, _ := doWithHeader(t, e, "GET", "/api/v1/whoami", "Bearer "+expiring, nil); got != 200 {
		t.Errorf("valid token before expiry: got %d, want 200", got)
	}
}

// doWithHeader returns the status and, for problem responses, the problem
// type.
func doWithHeader(t *testing.T, e *cptest.Env, method, path, header string, body any) (int, string) {
	t.Helper()
	var rd *strings.Reader
	if body != nil {
		b, _ := jsonMarshal(body)
		rd = strings.NewReader(string(b))
	} else {
		rd = strings.NewReader("")
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if header != "" {
		req.Header.Set("Authorization", header)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p apitypes.Problem
	_ = jsonDecode(resp, &p)
	return resp.StatusCode, p.Type
}

// TestOpenAPICoversEveryRoute checks that each route the router serves
// is in the document served at /api/v1/openapi.json, with its method.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	e := cptest.Start(t, nil)
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	e.MustDo("GET", "/api/v1/openapi.json", "", nil, &doc, 200)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	n := 0
	for _, r := range e.App.API.GinRoutes() {
		if r.Path == "/healthz" || r.Path == "/readyz" {
			continue
		}
		p := strings.NewReplacer(":id", "{id}", ":serial", "{serial}", ":event_id", "{event_id}").Replace(r.Path)
		op, ok := doc.Paths[p][strings.ToLower(r.Method)]
		if !ok {
			t.Errorf("%s %s is served but missing from openapi.json", r.Method, r.Path)
			continue
		}
		if op["summary"] == "" || op["x-outpost-role"] == nil {
			t.Errorf("%s %s: no summary or role in openapi.json", r.Method, r.Path)
		}
		n++
	}
	if n < 25 {
		t.Errorf("only %d routes checked", n)
	}
}
