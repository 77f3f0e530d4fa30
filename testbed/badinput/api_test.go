package badinput

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// apiCase is one malformed API request and the problem it must get.
type apiCase struct {
	name   string
	method string
	path   string
	// auth is the Authorization header; "admin" stands for the admin
	// token, "" for none.
	auth  string
	ctype string // default application/json when there is a body
	body  string
	// want is the status; field the problem's field ("" when the
	// problem names no field); keyword a word its detail must hold.
	want    int
	field   string
	keyword string
}

// apiCases are the malformed API requests. caID is an intermediate CA
// (for requests that must fail on another field), dmsToken an already
// used DMS bootstrap token.
func apiCases(caID, usedToken, csrPEM string) []apiCase {
	const admin = "admin"
	okDMS := func(policy string) string {
		return `{"name":"bad-dms","authorized_cas":["` + caID + `"],"policy":` + policy + `}`
	}
	return []apiCase{
		{name: "truncated JSON", method: "POST", path: "/api/v1/dmss", auth: admin, body: `{"name":`, want: 400, keyword: "not valid JSON"},
		{name: "JSON array instead of object", method: "POST", path: "/api/v1/dmss", auth: admin, body: `[1,2,3]`, want: 400, keyword: "must be a JSON object"},
		{name: "unknown field", method: "POST", path: "/api/v1/dmss", auth: admin, body: `{"name":"x","colour":"red"}`, want: 400, field: "colour", keyword: "unknown field"},
		{name: "wrong type", method: "POST", path: "/api/v1/cas", auth: admin, body: `{"name":5,"common_name":"x"}`, want: 400, field: "name", keyword: "must be a string"},
		{name: "wrong type nested", method: "POST", path: "/api/v1/dmss", auth: admin, body: okDMS(`{"local_quota":"many"}`), want: 400, field: "policy.local_quota", keyword: "must be an integer"},
		{name: "empty body", method: "POST", path: "/api/v1/tokens", auth: admin, body: "", want: 400, keyword: "empty"},
		{name: "two JSON values", method: "POST", path: "/api/v1/tokens", auth: admin, body: `{"principal":"a","role":"viewer"}{"x":1}`, want: 400, keyword: "more than one"},
		{name: "body over 1 MiB", method: "POST", path: "/api/v1/dmss", auth: admin, body: `{"name":"` + strings.Repeat("n", 1<<20+10) + `"}`, want: 413, keyword: "larger than"},
		{name: "content type text/plain", method: "POST", path: "/api/v1/dmss", auth: admin, ctype: "text/plain", body: `{"name":"x"}`, want: 415, keyword: "application/json"},
		{name: "bad UUID in a CA path", method: "GET", path: "/api/v1/cas/not-a-uuid", auth: admin, want: 400, field: "id", keyword: "UUID"},
		{name: "bad UUID in a DMS path", method: "PATCH", path: "/api/v1/dmss/1234", auth: admin, body: `{}`, want: 400, field: "id", keyword: "UUID"},
		{name: "bad UUID in a token path", method: "DELETE", path: "/api/v1/tokens/%27%20OR%201=1--", auth: admin, want: 400, field: "id", keyword: "UUID"},
		{name: "unknown CA id", method: "GET", path: "/api/v1/cas/00000000-0000-4000-8000-000000000000", auth: admin, want: 404, keyword: "does not exist"},
		{name: "limit zero", method: "GET", path: "/api/v1/cas?limit=0", auth: admin, want: 400, field: "limit", keyword: "limit"},
		{name: "limit negative", method: "GET", path: "/api/v1/dmss?limit=-5", auth: admin, want: 400, field: "limit", keyword: "limit"},
		{name: "limit not a number", method: "GET", path: "/api/v1/certificates?limit=ten", auth: admin, want: 400, field: "limit", keyword: "limit"},
		{name: "limit over 500", method: "GET", path: "/api/v1/devices?limit=501", auth: admin, want: 400, field: "limit", keyword: "limit"},
		{name: "cursor not base64", method: "GET", path: "/api/v1/certificates?cursor=%21%21%21", auth: admin, want: 400, field: "cursor", keyword: "cursor"},
		{name: "cursor base64 of garbage", method: "GET", path: "/api/v1/cas?cursor=bm90IGpzb24", auth: admin, want: 400, field: "cursor", keyword: "cursor"},
		{name: "cursor over 512 bytes", method: "GET", path: "/api/v1/devices?cursor=" + strings.Repeat("e30", 200), auth: admin, want: 400, field: "cursor", keyword: "cursor"},
		{name: "audit cursor not a number", method: "GET", path: "/api/v1/audit?cursor=abc", auth: admin, want: 400, field: "cursor", keyword: "cursor"},
		{name: "date not RFC 3339", method: "GET", path: "/api/v1/certificates?expires_after=yesterday", auth: admin, want: 400, field: "expires_after", keyword: "RFC 3339"},
		{name: "date without a zone", method: "GET", path: "/api/v1/certificates?expires_before=2027-01-31T00:00:00", auth: admin, want: 400, field: "expires_before", keyword: "RFC 3339"},
		{name: "unknown certificate status", method: "GET", path: "/api/v1/certificates?status=bogus", auth: admin, want: 400, field: "status", keyword: "status must be"},
		{name: "unknown device status", method: "GET", path: "/api/v1/devices?status=bogus", auth: admin, want: 400, field: "status", keyword: "status must be"},
		{name: "bad UUID in a query", method: "GET", path: "/api/v1/certificates?issuer_id=zzz", auth: admin, want: 400, field: "issuer_id", keyword: "UUID"},
		{name: "NUL byte in a query", method: "GET", path: "/api/v1/devices?q=ab%00cd", auth: admin, want: 400, field: "q", keyword: "NUL"},
		{name: "NUL byte in a path", method: "GET", path: "/api/v1/devices/dev%00ice", auth: admin, want: 400, field: "id", keyword: "NUL"},
		{name: "invalid UTF-8 in a path", method: "GET", path: "/api/v1/certificates/%ff%fe", auth: admin, want: 400, field: "serial", keyword: "UTF-8"},
		{name: "no credentials", method: "GET", path: "/api/v1/cas", want: 401, keyword: "Bearer"},
		{name: "unknown token", method: "GET", path: "/api/v1/cas", auth: "Bearer opk_" + strings.Repeat("0", 43), want: 401, keyword: "not valid"},
		{name: "Basic scheme", method: "GET", path: "/api/v1/cas", auth: "Basic YWRtaW46YWRtaW4=", want: 401, keyword: "Bearer"},
		{name: "empty Bearer token", method: "GET", path: "/api/v1/cas", auth: "Bearer ", want: 401, keyword: "Bearer"},
		{name: "token over 256 bytes", method: "GET", path: "/api/v1/cas", auth: "Bearer " + strings.Repeat("t", 300), want: 401, keyword: "Bearer"},
		{name: "invalid mode", method: "POST", path: "/api/v1/dmss", auth: admin, body: okDMS(`{"mode":"turbo"}`), want: 400, field: "policy.mode", keyword: "mode"},
		{name: "invalid device_auth", method: "POST", path: "/api/v1/dmss", auth: admin, body: okDMS(`{"device_auth":"password123"}`), want: 400, field: "policy.device_auth", keyword: "device_auth"},
		{name: "reenroll window out of range", method: "POST", path: "/api/v1/dmss", auth: admin, body: okDMS(`{"reenroll_window_days":99999}`), want: 400, field: "policy.reenroll_window_days", keyword: "reenroll_window_days"},
		{name: "online wait out of range", method: "POST", path: "/api/v1/dmss", auth: admin, body: okDMS(`{"online_wait_ms":-1}`), want: 400, field: "policy.online_wait_ms", keyword: "online_wait_ms"},
		{name: "label with a slash", method: "POST", path: "/api/v1/dmss", auth: admin, body: okDMS(`{"labels":[{"name":"a/b","ca_id":"` + caID + `"}]}`), want: 400, field: "policy.labels[0].name", keyword: "name"},
		{name: "label CA not a UUID", method: "POST", path: "/api/v1/dmss", auth: admin, body: okDMS(`{"labels":[{"name":"ok","ca_id":"nope"}]}`), want: 400, field: "policy.labels[0].ca_id", keyword: "UUID"},
		{name: "authorized CA not a UUID", method: "POST", path: "/api/v1/dmss", auth: admin, body: `{"name":"x","authorized_cas":["nope"]}`, want: 400, field: "authorized_cas", keyword: "UUID"},
		{name: "local mode without quota", method: "POST", path: "/api/v1/dmss", auth: admin, body: okDMS(`{"mode":"local"}`), want: 400, field: "policy.local_quota", keyword: "local_quota"},
		{name: "webhook URL over plain HTTP", method: "POST", path: "/api/v1/dmss", auth: admin, body: okDMS(`{"device_auth":"webhook","webhook_url":"http://decide.example/"}`), want: 400, field: "policy.webhook_url", keyword: "https"},
		{name: "bootstrap CA PEM garbage", method: "POST", path: "/api/v1/dmss", auth: admin, body: okDMS(`{"bootstrap_ca_pems":["-----BEGIN CERTIFICATE-----\nZZZ\n-----END CERTIFICATE-----\n"]}`), want: 400, field: "policy.bootstrap_ca_pems", keyword: "PEM"},
		{name: "CA key type unknown", method: "POST", path: "/api/v1/cas", auth: admin, body: `{"name":"bad-ca-1","parent_id":"` + caID + `","common_name":"Bad","key_algorithm":"dsa-1024"}`, want: 400, field: "key_algorithm", keyword: "algorithm"},
		{name: "CA path length below -1", method: "POST", path: "/api/v1/cas", auth: admin, body: `{"name":"bad-ca-2","parent_id":"` + caID + `","common_name":"Bad","max_path_len":-7}`, want: 400, field: "max_path_len", keyword: "path length"},
		{name: "CA path length beyond its parent", method: "POST", path: "/api/v1/cas", auth: admin, body: `{"name":"bad-ca-3","parent_id":"` + caID + `","common_name":"Bad","max_path_len":5}`, want: 400, field: "max_path_len", keyword: "path"},
		{name: "CA validity negative", method: "POST", path: "/api/v1/cas", auth: admin, body: `{"name":"bad-ca-4","parent_id":"` + caID + `","common_name":"Bad","validity_days":-1}`, want: 400, field: "validity_days", keyword: "validity_days"},
		{name: "CA parent not a UUID", method: "POST", path: "/api/v1/cas", auth: admin, body: `{"name":"bad-ca-5","parent_id":"root","common_name":"Bad"}`, want: 400, field: "parent_id", keyword: "UUID"},
		{name: "issue with a garbage CSR", method: "POST", path: "/api/v1/certificates", auth: admin, body: `{"ca_id":"` + caID + `","csr_pem":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`, want: 400, field: "csr_pem", keyword: "csr"},
		{name: "issue without a CSR", method: "POST", path: "/api/v1/certificates", auth: admin, body: `{"ca_id":"` + caID + `"}`, want: 400, field: "csr_pem", keyword: "csr_pem"},
		{name: "import a garbage CA certificate", method: "POST", path: "/api/v1/cas/import", auth: admin, body: `{"name":"imp","certificate_pem":"hello"}`, want: 400, field: "certificate_pem", keyword: "certificate_pem"},
		{name: "revoke with an unknown reason", method: "POST", path: "/api/v1/certificates/0123abcd/revoke", auth: admin, body: `{"reason":"becauseISaidSo"}`, want: 400, field: "reason", keyword: "reason"},
		{name: "token with an unknown role", method: "POST", path: "/api/v1/tokens", auth: admin, body: `{"principal":"p1","role":"superuser"}`, want: 400, field: "role", keyword: "role"},
		{name: "token with a negative TTL", method: "POST", path: "/api/v1/tokens", auth: admin, body: `{"principal":"p1","role":"viewer","ttl_hours":-1}`, want: 400, field: "ttl_hours", keyword: "ttl_hours"},
		{name: "DMS bootstrap with an unknown token", method: "POST", path: "/api/v1/dms/bootstrap", body: `{"token":"not-a-token","csr_pem":"x"}`, want: 401, field: "token", keyword: "token"},
		{name: "DMS bootstrap with a used token", method: "POST", path: "/api/v1/dms/bootstrap", body: `{"token":"` + usedToken + `","csr_pem":` + jsonString(csrPEM) + `}`, want: 410, field: "token", keyword: "already used"},
		{name: "method not allowed", method: "DELETE", path: "/api/v1/cas", auth: admin, want: 405, keyword: "method"},
		{name: "unknown route", method: "GET", path: "/api/v1/nothing-here", auth: admin, want: 404, keyword: "no such route"},
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// runAPICase sends c and checks the problem answer.
func runAPICase(t *testing.T, b *bed, c apiCase) {
	t.Helper()
	var body io.Reader
	if c.body != "" || c.method == "POST" || c.method == "PATCH" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, b.s.API+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	switch c.auth {
	case "":
	case "admin":
		req.Header.Set("Authorization", "Bearer "+b.s.Token)
	default:
		req.Header.Set("Authorization", c.auth)
	}
	if body != nil {
		ct := c.ctype
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	hc := &http.Client{Timeout: 20 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	checkProblem(t, resp, raw, c.want, c.field, c.keyword)
}

// checkProblem checks an RFC 9457 problem answer.
func checkProblem(t *testing.T, resp *http.Response, raw []byte, want int, field, keyword string) {
	t.Helper()
	var p struct {
		Type, Title, Detail, Instance, Field string
		Status                               int
	}
	if resp.StatusCode != want {
		t.Fatalf("got %d %s, want %d (field %q, %q)", resp.StatusCode, bytes.TrimSpace(raw), want, field, keyword)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Errorf("got Content-Type %q, want application/problem+json", ct)
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatalf("the answer is not a problem: %v: %s", err, raw)
	}
	if p.Status != want || p.Type == "" || p.Title == "" || p.Detail == "" {
		t.Errorf("incomplete problem %s", raw)
	}
	if p.Field != field {
		t.Errorf("got field %q, want %q (%s)", p.Field, field, raw)
	}
	if !strings.Contains(strings.ToLower(p.Detail), strings.ToLower(keyword)) {
		t.Errorf("got detail %q, want it to name the problem (%q)", p.Detail, keyword)
	}
}
