package api

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// bodyRoutes returns the routes that take a JSON body, in table order. It
// reads the route table itself, so a new request type is fuzzed without
// touching this file. The handlers are never called: a zero Server is
// enough to list them.
func bodyRoutes() []Route {
	s := &Server{}
	var out []Route
	for _, r := range append(s.routeTable(), s.subscriptionRoutes()...) {
		if r.Request != nil {
			out = append(out, r)
		}
	}
	return out
}

// bindBody runs bind on a request carrying body, as the handlers do, and
// returns the decoded value (a pointer to a fresh value of r.Request's
// type), whether bind accepted it, and what it wrote.
func bindBody(r Route, contentType string, body []byte) (any, bool, *gin.Context, *httptest.ResponseRecorder) {
	w := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(w)
	c.Request = httptest.NewRequest(r.Method, r.Path, bytes.NewReader(body))
	if contentType != "" {
		c.Request.Header.Set("Content-Type", contentType)
	}
	v := reflect.New(reflect.TypeOf(r.Request)).Interface()
	return v, bind(c, v), c, w
}

// FuzzBind decodes fuzzed bodies into every request type of the API the
// way the handlers do (bind: size cap, one JSON value, unknown fields
// refused), then runs the checks the handlers make before the service
// (ids, policy conversion, revocation reason, certificate PEM). It checks
// that nothing panics; that a refused body gets a problem response with a
// 4xx status; that an accepted body is exactly one valid JSON value; that
// an accepted value re-encodes to JSON bind accepts again and that this
// round trip is stable (encode(decode(encode(v))) == encode(v)); and that
// day, hour and millisecond counts never wrap around into a different
// duration on their way to the service.
func FuzzBind(f *testing.F) {
	gin.SetMode(gin.TestMode)
	routes := bodyRoutes()
	if len(routes) == 0 {
		f.Fatal("no route takes a request body")
	}
	index := map[reflect.Type]uint8{}
	for i, r := range routes {
		index[reflect.TypeOf(r.Request)] = uint8(i)
	}
	for _, s := range fuzzBindSeeds(f) {
		i, ok := index[reflect.TypeOf(s.req)]
		if !ok {
			f.Fatalf("seed for %T, which no route takes", s.req)
		}
		f.Add(i, "application/json", []byte(s.body))
	}
	// Near misses, spread over the routes (a seed per route and body would
	// make hundreds, and gathering their baseline coverage takes most of a
	// short run): no Content-Type, parameters, a media type bind refuses,
	// trailing data, unknown fields, wrong types, odd strings and numbers.
	for i, body := range []string{``, `{}`, `null`, `[]`, `{}]`, `{}}`, `{} {}`, `{}x`, `{"x":1}`, `{"name":1}`,
		`{"name":"a"` + strings.Repeat(" ", 64) + `}`, `{"policy":{"labels":[{"name":"a","ca_id":"x"}]}}`,
		`{"name":"\ud800"}`, `{"name":"a","name":"b"}`, `{"validity_days":1e400}`, `{"ttl_hours":-1}`,
		`{"authorized_cas":null}`, `{"policy":null}`, `{"labels":{"a":null}}`} {
		f.Add(uint8(i%len(routes)), "application/json", []byte(body))
	}
	for i, ct := range []string{"", "application/json; charset=utf-8", "text/plain", "application/json;", "APPLICATION/JSON"} {
		f.Add(uint8(i%len(routes)), ct, []byte(`{}`))
	}

	f.Fuzz(func(t *testing.T, route uint8, contentType string, body []byte) {
		r := routes[int(route)%len(routes)]
		v, ok, c, w := bindBody(r, contentType, body)
		if !ok {
			checkProblem(t, c, w)
			return
		}
		if c.IsAborted() || w.Body.Len() != 0 {
			t.Fatalf("bind accepted the body but wrote %d %q", w.Code, w.Body.String())
		}
		if !json.Valid(bytes.TrimSpace(body)) {
			t.Fatalf("bind accepted %q, which is not one JSON value", body)
		}

		// Round trip: what the API accepts, re-encoded, is accepted again and
		// means the same. Empty slices and maps come back nil (omitempty),
		// so compare encodings, then values once normalized.
		enc, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%#v): %v", v, err)
		}
		v2, ok, c2, w2 := bindBody(r, "application/json", enc)
		if !ok {
			t.Fatalf("re-encoded body %s refused: %d %s (aborted %v)", enc, w2.Code, w2.Body.String(), c2.IsAborted())
		}
		enc2, err := json.Marshal(v2)
		if err != nil {
			t.Fatalf("json.Marshal(%#v): %v", v2, err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the value:\n got %s\nwant %s", enc2, enc)
		}
		v3, _, _, _ := bindBody(r, "application/json", enc2)
		if !reflect.DeepEqual(v2, v3) {
			t.Fatalf("decode(encode(v)) = %#v, want %#v", v3, v2)
		}

		preChecks(t, c, v)
	})
}

// checkProblem checks what bind wrote for a body it refused: an RFC 9457
// problem with a client error status.
func checkProblem(t *testing.T, c *gin.Context, w *httptest.ResponseRecorder) {
	t.Helper()
	if !c.IsAborted() {
		t.Fatal("bind refused the body without aborting")
	}
	switch w.Code {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
	default:
		t.Fatalf("bind refused the body with status %d, want 400, 413 or 415", w.Code)
	}
	var p apitypes.Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem response %q: %v", w.Body.String(), err)
	}
	if p.Status != w.Code || p.Detail == "" || !strings.HasPrefix(p.Type, problemBase) {
		t.Fatalf("problem %+v for status %d", p, w.Code)
	}
}

// preChecks runs on a decoded request what its handler checks before
// calling the service, and checks the conversions: nothing panics, a
// refusal is a problem response, and the durations the service would see
// are the ones the request gave.
func preChecks(t *testing.T, c *gin.Context, v any) {
	t.Helper()
	ok := true
	switch req := v.(type) {
	case *apitypes.CreateCARequest:
		_, ok = optUUID(c, "parent_id", req.ParentID)
	case *apitypes.ImportCARequest:
		_, _ = caservice.ParseCertificatePEM([]byte(req.CertificatePEM))
		pem.Decode([]byte(req.KeyPEM))
	case *apitypes.RevokeRequest:
		_, _ = caservice.ParseReason(req.Reason)
	case *apitypes.IssueRequest:
		_, ok = optUUID(c, "dms_id", req.DMSID)
	case *apitypes.ImportCertificateRequest:
		_, _ = caservice.ParseCertificatePEM([]byte(req.CertificatePEM))
		_, ok = optUUID(c, "dms_id", req.DMSID)
	case *apitypes.CreateDMSRequest:
		if _, ok = uuids(c, "authorized_cas", req.AuthorizedCAs); ok {
			checkUnits(t, "token_ttl_hours", req.TokenTTLHours, durationOf(req.TokenTTLHours, time.Hour), time.Hour)
			ok = checkPolicy(t, c, req.Policy)
		}
	case *apitypes.UpdateDMSRequest:
		if req.Policy != nil {
			ok = checkPolicy(t, c, req.Policy)
		}
		if ok && req.AuthorizedCAs != nil {
			_, ok = uuids(c, "authorized_cas", *req.AuthorizedCAs)
		}
	case *apitypes.CreateTokenRequest:
		checkUnits(t, "ttl_hours", req.TTLHours, durationOf(req.TTLHours, time.Hour), time.Hour)
	case *apitypes.CreateSubscriptionRequest:
		if _, ok = optUUID(c, "ca_id", req.CAID); ok {
			_, ok = optUUID(c, "dms_id", req.DMSID)
		}
	case *apitypes.DMSBootstrapRequest, *apitypes.RegisterDeviceRequest:
		// Checked by the service only (token, CSR, device id).
		if r, isReg := req.(*apitypes.RegisterDeviceRequest); isReg {
			_, ok = optUUID(c, "dms_id", r.DMSID)
		}
	default:
		t.Fatalf("no pre-checks for %T: add its handler's checks to preChecks", v)
	}
	if !ok {
		if !c.IsAborted() || c.Writer.Status() != http.StatusBadRequest {
			t.Fatalf("a handler check refused %T without a 400 problem (status %d)", v, c.Writer.Status())
		}
	}
}

// checkPolicy converts a request's policy as the handlers do and checks
// that its durations say what the request said.
func checkPolicy(t *testing.T, c *gin.Context, p *apitypes.DMSPolicy) bool {
	t.Helper()
	out, ok := policyFrom(c, p)
	if !ok || p == nil {
		return ok
	}
	checkUnits(t, "reenroll_window_days", p.ReenrollWindowDays, out.ReenrollWindow, 24*time.Hour)
	if p.EdgeCAValidityDays != 0 {
		checkUnits(t, "edge_ca_validity_days", p.EdgeCAValidityDays, out.EdgeCAValidity, 24*time.Hour)
	}
	if p.OnlineWaitMs != nil {
		checkUnits(t, "online_wait_ms", *p.OnlineWaitMs, out.OnlineWait, time.Millisecond)
	}
	return true
}

// checkUnits checks that d is n units, or, for a count too large for a
// Duration, the largest Duration of its sign (which every range check
// refuses): never a wrapped-around value.
func checkUnits(t *testing.T, field string, n int, d, unit time.Duration) {
	t.Helper()
	limit := int64(math.MaxInt64) / int64(unit)
	switch {
	case int64(n) > limit:
		if d != math.MaxInt64 {
			t.Fatalf("%s %d: got %v, want the largest duration", field, n, d)
		}
	case int64(n) < -limit:
		if d != math.MinInt64 {
			t.Fatalf("%s %d: got %v, want the smallest duration", field, n, d)
		}
	case d != time.Duration(n)*unit:
		t.Fatalf("%s %d: got %v, want %v", field, n, d, time.Duration(n)*unit)
	}
}

type bindSeed struct {
	req  any
	body string
}

// fuzzBindSeeds are valid and near-valid bodies for each request type, as
// the API documentation, outpostctl and the dashboard send them.
func fuzzBindSeeds(tb testing.TB) []bindSeed {
	pki := testpki.NewT(tb)
	root := pki.Root("Fuzz Root")
	leaf := root.Leaf("device-1")
	csr, _, err := testpki.CSR("device-1")
	if err != nil {
		tb.Fatal(err)
	}
	q := func(b []byte) string { s, _ := json.Marshal(string(b)); return string(s) }
	certPEM := q(leaf.CertPEM())
	csrPEM := q(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
	keyPEM := q(root.KeyPEM())
	const id = `"0b0c5f3e-8a1d-4f7e-9d43-6a7c1e2f3a4b"`
	policy := `{"mode":"local","device_auth":"webhook","profile":"device","reenroll_window_days":14,"local_quota":100,` +
		`"bootstrap_ca_pems":[` + certPEM + `],"labels":[{"name":"line-1","ca_id":` + id + `,"profile":"device","device_auth":"basic_secret"}],` +
		`"edge_ca_validity_days":30,"edge_name_constraints":["line1.example","10.1.0.0/16","@example.com","uri:example.com"],` +
		`"webhook_url":"https://auth.example/hook","online_wait_ms":5000,"jit_registration":false}`
	return []bindSeed{
		{apitypes.CreateCARequest{}, `{"name":"root","common_name":"Root CA","key_algorithm":"ecdsa-p256","validity_days":3650}`},
		{apitypes.CreateCARequest{}, `{"name":"issuing","parent_id":` + id + `,"common_name":"Issuing CA","max_path_len":0}`},
		{apitypes.CreateCARequest{}, `{"name":"x","parent_id":"not-a-uuid","common_name":"x","max_path_len":-1}`},
		{apitypes.ImportCARequest{}, `{"name":"imported","certificate_pem":` + q(root.CertPEM()) + `,"key_pem":` + keyPEM + `}`},
		{apitypes.ImportCARequest{}, `{"name":"imported","certificate_pem":` + q(root.CertPEM()) + `,"key_pem":"-----BEGIN ENCRYPTED PRIVATE KEY-----\n-----END ENCRYPTED PRIVATE KEY-----\n","key_passphrase":"x"}`},
		{apitypes.RevokeRequest{}, `{"reason":"keyCompromise"}`},
		{apitypes.RevokeRequest{}, `{"reason":"KEYCOMPROMISE"}`},
		{apitypes.RevokeRequest{}, `{"reason":""}`},
		{apitypes.IssueRequest{}, `{"ca_id":` + id + `,"csr_pem":` + csrPEM + `,"profile":"device","device_id":"device-1","dms_id":` + id + `}`},
		{apitypes.IssueRequest{}, `{"ca_id":` + id + `,"csr_pem":""}`},
		{apitypes.ImportCertificateRequest{}, `{"certificate_pem":` + certPEM + `,"device_id":"device-1","dms_id":` + id + `}`},
		{apitypes.CreateDMSRequest{}, `{"name":"line-1","policy":` + policy + `,"authorized_cas":[` + id + `],"token_ttl_hours":24}`},
		{apitypes.CreateDMSRequest{}, `{"name":"line-1"}`},
		{apitypes.CreateDMSRequest{}, `{"name":"line-1","authorized_cas":["nope"]}`},
		// Counts that overflow a time.Duration: 213504 days wrap to 25
		// minutes, 2562048 hours to a negative duration.
		{apitypes.CreateDMSRequest{}, `{"name":"w","policy":{"mode":"queued","reenroll_window_days":213504,"edge_ca_validity_days":213504,"online_wait_ms":9223372036855},"token_ttl_hours":2562048}`},
		{apitypes.UpdateDMSRequest{}, `{"policy":` + policy + `}`},
		{apitypes.UpdateDMSRequest{}, `{"authorized_cas":[]}`},
		{apitypes.UpdateDMSRequest{}, `{"policy":{"mode":"online","online_wait_ms":-1,"reenroll_window_days":-3}}`},
		{apitypes.DMSBootstrapRequest{}, `{"token":"obt_0123456789abcdef","csr_pem":` + csrPEM + `}`},
		{apitypes.RegisterDeviceRequest{}, `{"id":"device-1","dms_id":` + id + `,"labels":{"line":"1","site":"plant-a"}}`},
		{apitypes.RegisterDeviceRequest{}, `{"id":"device-1","labels":{}}`},
		{apitypes.CreateTokenRequest{}, `{"principal":"ci","role":"operator","description":"CI pipeline","ttl_hours":720}`},
		{apitypes.CreateTokenRequest{}, `{"principal":"ci","role":"admin","ttl_hours":2251799813685248}`},
		{apitypes.CreateSubscriptionRequest{}, `{"name":"ops","channel":"webhook","target":"https://hooks.example/outpost","secret":"s3cret",` +
			`"event_kinds":["certificate.revoked","dms.offline"],"ca_id":` + id + `,"dms_id":` + id + `,"device_id":"device-1"}`},
		{apitypes.CreateSubscriptionRequest{}, `{"name":"mail","channel":"email","target":"ops@example.com","event_kinds":[]}`},
	}
}

// TestFuzzBindSeedsCoverRoutes keeps FuzzBind's seeds in step with the
// route table: every request type has at least one accepted seed.
func TestFuzzBindSeedsCoverRoutes(t *testing.T) {
	gin.SetMode(gin.TestMode)
	seeded := map[reflect.Type]bool{}
	byType := map[reflect.Type]Route{}
	for _, r := range bodyRoutes() {
		byType[reflect.TypeOf(r.Request)] = r
	}
	for _, s := range fuzzBindSeeds(t) {
		r := byType[reflect.TypeOf(s.req)]
		if _, ok, _, w := bindBody(r, "application/json", []byte(s.body)); ok {
			seeded[reflect.TypeOf(s.req)] = true
		} else {
			t.Errorf("seed %T %.60s: refused: %s", s.req, s.body, w.Body.String())
		}
	}
	for ty := range byType {
		if !seeded[ty] {
			t.Errorf("no accepted FuzzBind seed for %v", ty)
		}
	}
}
