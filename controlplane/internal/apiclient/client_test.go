package apiclient

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

const testToken = "opt_secret-token"

func newTestClient(t *testing.T, h http.HandlerFunc, opts ...Option) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, testToken, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func TestPathEscaping(t *testing.T) {
	var mu sync.Mutex
	var got []string
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.EscapedPath())
		mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{})
	})
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"ca with slash", func() error { _, err := c.GetCA(ctx, "a/b c"); return err }, "GET /api/v1/cas/a%2Fb%20c"},
		{"ca chain with query chars", func() error { _, err := c.CAChainPEM(ctx, "x?y#z"); return err }, "GET /api/v1/cas/x%3Fy%23z/chain"},
		{"cert revoke", func() error {
			_, err := c.RevokeCertificate(ctx, "0a1b", apitypes.RevokeRequest{Reason: "superseded"})
			return err
		}, "POST /api/v1/certificates/0a1b/revoke"},
		{"device percent", func() error { _, err := c.GetDevice(ctx, "dev%41"); return err }, "GET /api/v1/devices/dev%2541"},
		{"dms patch", func() error { _, err := c.UpdateDMS(ctx, "d/1", apitypes.UpdateDMSRequest{}); return err }, "PATCH /api/v1/dmss/d%2F1"},
		{"token delete", func() error { return c.RevokeToken(ctx, "t 1") }, "DELETE /api/v1/tokens/t%201"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			if err := tt.call(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("got %v, want [%s]", got, tt.want)
			}
		})
	}

	for _, id := range []string{"", ".", ".."} {
		mu.Lock()
		got = nil
		mu.Unlock()
		if _, err := c.GetCA(ctx, id); err == nil {
			t.Errorf("GetCA(%q): got no error, want one", id)
		}
		mu.Lock()
		if len(got) != 0 {
			t.Errorf("GetCA(%q) sent %v, want no request", id, got)
		}
		mu.Unlock()
	}
}

func TestAuthHeader(t *testing.T) {
	type seen struct{ auth, ua, ctype string }
	var last seen
	var mu sync.Mutex
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		last = seen{r.Header.Get("Authorization"), r.Header.Get("User-Agent"), r.Header.Get("Content-Type")}
		mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{})
	}, WithUserAgent("outpostctl/test"))
	ctx := context.Background()

	if _, err := c.WhoAmI(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if want := "Bearer " + testToken; last.auth != want {
		t.Errorf("whoami Authorization: got %q, want %q", last.auth, want)
	}
	if last.ua != "outpostctl/test" {
		t.Errorf("User-Agent: got %q, want %q", last.ua, "outpostctl/test")
	}
	mu.Unlock()

	if _, err := c.CreateToken(ctx, apitypes.CreateTokenRequest{Principal: "p", Role: "viewer"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if last.ctype != "application/json" {
		t.Errorf("POST Content-Type: got %q, want application/json", last.ctype)
	}
	mu.Unlock()

	if _, err := c.BootstrapDMS(ctx, apitypes.DMSBootstrapRequest{Token: "bt", CSRPEM: "x"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if last.auth != "" {
		t.Errorf("bootstrap Authorization: got %q, want none", last.auth)
	}
	mu.Unlock()

	if _, err := New("https://cp.example", "bad\ntoken"); err == nil {
		t.Error("token with a newline: got no error, want one")
	} else if strings.Contains(err.Error(), "bad") {
		t.Errorf("error %q echoes the token", err)
	}
}

func TestProblemDecoding(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		ctype, body string
		want        string
		wantProblem apitypes.Problem
	}{
		{
			name: "problem json", status: 403, ctype: "application/problem+json",
			body:        `{"type":"about:blank","title":"Forbidden","status":403,"detail":"this route needs the admin role"}`,
			want:        "403 Forbidden: this route needs the admin role",
			wantProblem: apitypes.Problem{Type: "about:blank", Title: "Forbidden", Status: 403, Detail: "this route needs the admin role"},
		},
		{
			name: "problem with field", status: 422, ctype: "application/problem+json; charset=utf-8",
			body:        `{"title":"Invalid request","status":422,"detail":"name is required","field":"name"}`,
			want:        "422 Invalid request: name is required",
			wantProblem: apitypes.Problem{Title: "Invalid request", Status: 422, Detail: "name is required", Field: "name"},
		},
		{
			name: "plain text", status: 502, ctype: "text/plain", body: "upstream down\n",
			want:        "502 Bad Gateway: upstream down",
			wantProblem: apitypes.Problem{Title: "Bad Gateway", Status: 502, Detail: "upstream down"},
		},
		{
			name: "html page", status: 503, ctype: "text/html", body: "<html><body>oops</body></html>",
			want:        "503 Service Unavailable",
			wantProblem: apitypes.Problem{Title: "Service Unavailable", Status: 503},
		},
		{
			name: "broken json", status: 500, ctype: "application/problem+json", body: `{"title":`,
			want:        `500 Internal Server Error: {"title":`,
			wantProblem: apitypes.Problem{Title: "Internal Server Error", Status: 500, Detail: `{"title":`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ctype)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := c.ListCAs(context.Background(), "", 0)
			var apiErr *Error
			if !errors.As(fmt.Errorf("wrapped: %w", err), &apiErr) {
				t.Fatalf("got %v (%T), want an *Error", err, err)
			}
			if apiErr.Status != tt.status || apiErr.Problem != tt.wantProblem {
				t.Errorf("got %d %+v, want %d %+v", apiErr.Status, apiErr.Problem, tt.status, tt.wantProblem)
			}
			if err.Error() != tt.want {
				t.Errorf("got %q, want %q", err.Error(), tt.want)
			}
			if StatusCode(err) != tt.status {
				t.Errorf("StatusCode: got %d, want %d", StatusCode(err), tt.status)
			}
		})
	}
	if IsConflict(&Error{Status: 409}) != true || IsNotFound(errors.New("x")) {
		t.Error("IsConflict/IsNotFound disagree with the status")
	}
}

// pagedServer serves n certificates, size per page, with cursors that are
// the index of the next item.
func pagedServer(t *testing.T, n, size int, requests *[]string) http.HandlerFunc {
	var mu sync.Mutex
	return func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		*requests = append(*requests, r.URL.RawQuery)
		mu.Unlock()
		start := 0
		if c := r.URL.Query().Get("cursor"); c != "" {
			var err error
			if start, err = strconv.Atoi(c); err != nil {
				t.Errorf("bad cursor %q", c)
			}
		}
		var page apitypes.Page[apitypes.Certificate]
		for i := start; i < n && i < start+size; i++ {
			page.Items = append(page.Items, apitypes.Certificate{Serial: fmt.Sprintf("%02x", i)})
		}
		if start+size < n {
			page.NextCursor = strconv.Itoa(start + size)
		}
		writeJSON(w, http.StatusOK, page)
	}
}

func TestPaginationWalk(t *testing.T) {
	var requests []string
	c := newTestClient(t, pagedServer(t, 5, 2, &requests), WithPageSize(2))
	q := CertificateQuery{Status: "active"}
	var serials []string
	err := c.AllCertificates(context.Background(), q, func(cert apitypes.Certificate) error {
		serials = append(serials, cert.Serial)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(serials, ","), "00,01,02,03,04"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	wantReq := []string{"limit=2&status=active", "cursor=2&limit=2&status=active", "cursor=4&limit=2&status=active"}
	if fmt.Sprint(requests) != fmt.Sprint(wantReq) {
		t.Errorf("got requests %v, want %v", requests, wantReq)
	}

	stop := errors.New("stop")
	requests = nil
	n := 0
	err = c.AllCertificates(context.Background(), q, func(apitypes.Certificate) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || len(requests) != 2 {
		t.Errorf("got %v after %d requests, want the callback's error after 2", err, len(requests))
	}
}

func TestPaginationRepeatedCursor(t *testing.T) {
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, apitypes.Page[apitypes.AuditEntry]{Items: []apitypes.AuditEntry{{Seq: 1}}, NextCursor: "same"})
	})
	n := 0
	err := c.AllAudit(context.Background(), func(apitypes.AuditEntry) error { n++; return nil })
	if err == nil || !strings.Contains(err.Error(), "repeated cursor") {
		t.Errorf("got %v, want a repeated cursor error", err)
	}
	if n != 2 {
		t.Errorf("got %d items, want 2 before the loop was noticed", n)
	}
}

func TestBodyCap(t *testing.T) {
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		// Valid JSON all the way: only the cap can reject it.
		io.WriteString(w, `{"items":[]`)
		pad := strings.Repeat(" ", 1<<20)
		for i := 0; i < MaxResponseSize>>20; i++ {
			if _, err := io.WriteString(w, pad); err != nil {
				return
			}
		}
		io.WriteString(w, `}`)
	})
	_, err := c.ListCAs(context.Background(), "", 0)
	if !errors.Is(err, ErrResponseTooLarge) {
		t.Errorf("got %v, want ErrResponseTooLarge", err)
	}
}

func TestRawBodies(t *testing.T) {
	const pemText = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	der := []byte{0x30, 0x82, 0x00, 0x01}
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/certificates/0a/pem":
			w.Header().Set("Content-Type", "application/x-pem-file")
			io.WriteString(w, pemText)
		case "/api/v1/certificates/0a/der":
			if !strings.HasPrefix(r.Header.Get("Accept"), "application/pkix-cert") {
				t.Errorf("der Accept: got %q", r.Header.Get("Accept"))
			}
			w.Header().Set("Content-Type", "application/pkix-cert")
			w.Write(der)
		case "/api/v1/tokens/t1":
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	})
	ctx := context.Background()
	if got, err := c.CertificatePEM(ctx, "0a"); err != nil || string(got) != pemText {
		t.Errorf("pem: got %q, %v", got, err)
	}
	if got, err := c.CertificateDER(ctx, "0a"); err != nil || string(got) != string(der) {
		t.Errorf("der: got %x, %v", got, err)
	}
	if err := c.RevokeToken(ctx, "t1"); err != nil {
		t.Errorf("revoke token: %v", err)
	}
	if _, err := c.CertificatePEM(ctx, "ff"); !IsNotFound(err) {
		t.Errorf("unknown serial: got %v, want 404", err)
	}
}

func TestQueryParameters(t *testing.T) {
	var got string
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.RawQuery
		writeJSON(w, http.StatusOK, apitypes.Page[apitypes.Certificate]{})
	})
	q := CertificateQuery{
		Serial: "0a", CommonName: "gw-", SAN: "a.example", Status: "active",
		ExpiresAfter:  time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		ExpiresBefore: time.Date(2026, 2, 1, 1, 0, 0, 0, time.FixedZone("CET", 3600)),
		DMSID:         "d1", DeviceID: "dev 1", IssuerID: "ca1",
	}
	if _, err := c.SearchCertificates(context.Background(), q, "cur", 10); err != nil {
		t.Fatal(err)
	}
	want := "cn=gw-&cursor=cur&device_id=dev+1&dms_id=d1&expires_after=2026-01-01T00%3A00%3A00Z&expires_before=2026-02-01T00%3A00%3A00Z&issuer_id=ca1&limit=10&san=a.example&serial=0a&status=active"
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestBaseURL(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "https://cp.example:8443", want: "https://cp.example:8443"},
		{in: "https://cp.example:8443/", want: "https://cp.example:8443"},
		{in: "https://cp.example/api/v1/", want: "https://cp.example"},
		{in: "https://proxy.example/outpost", want: "https://proxy.example/outpost"},
		{in: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		{in: "", wantErr: true},
		{in: "cp.example:8443", wantErr: true},
		{in: "ftp://cp.example", wantErr: true},
		{in: "https://user:pw@cp.example", wantErr: true},
		{in: "https://cp.example?x=1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			c, err := New(tt.in, "")
			if tt.wantErr {
				if err == nil {
					t.Errorf("got %q, want an error", c.BaseURL())
				} else if strings.Contains(err.Error(), "pw") {
					t.Errorf("error %q shows the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.BaseURL() != tt.want {
				t.Errorf("got %q, want %q", c.BaseURL(), tt.want)
			}
		})
	}
}

func TestWithCACertFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, apitypes.WhoAmI{Principal: apitypes.Principal{Name: "alice", Role: "admin"}})
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	c, err := New(srv.URL, testToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WhoAmI(ctx); err == nil {
		t.Error("without the CA file: got no error, want an unknown authority")
	}

	for _, opts := range [][]Option{
		{WithCACertFile(caFile)},
		{WithHTTPClient(&http.Client{Timeout: time.Minute}), WithCACertFile(caFile)},
	} {
		c, err := New(srv.URL, testToken, opts...)
		if err != nil {
			t.Fatal(err)
		}
		who, err := c.WhoAmI(ctx)
		if err != nil || who.Principal.Name != "alice" {
			t.Errorf("with the CA file: got %+v, %v", who, err)
		}
	}

	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not a certificate"), 0o644)
	if _, err := New(srv.URL, testToken, WithCACertFile(empty)); err == nil {
		t.Error("CA file without certificates: got no error, want one")
	}
}
