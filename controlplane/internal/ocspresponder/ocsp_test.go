package ocspresponder_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/internal/testpki"
)

type fixture struct {
	e                   *cptest.Env
	dir                 string
	root, inter         *x509.Certificate
	interID, rootID     string
	good, revoked       *x509.Certificate
	rootFile, interFile string
	chainFile           string
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func parse(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func setup(t *testing.T) *fixture {
	t.Helper()
	e := cptest.Start(t, nil)
	f := &fixture{e: e, dir: t.TempDir()}
	var root, inter apitypes.CA
	e.MustDo("POST", "/api/v1/cas", e.AdminToken, apitypes.CreateCARequest{Name: "ocsp-root", CommonName: "OCSP Test Root"}, &root, 201)
	e.MustDo("POST", "/api/v1/cas", e.AdminToken, apitypes.CreateCARequest{Name: "ocsp-issuing", CommonName: "OCSP Test Issuing", ParentID: root.ID}, &inter, 201)
	f.root, f.inter, f.interID, f.rootID = parse(t, root.CertPEM), parse(t, inter.CertPEM), inter.ID, root.ID
	issue := func(cn string) *x509.Certificate {
		csr, _, err := testpki.CSR(cn)
		if err != nil {
			t.Fatal(err)
		}
		var c apitypes.Certificate
		e.MustDo("POST", "/api/v1/certificates", e.AdminToken, apitypes.IssueRequest{CAID: inter.ID,
			CSRPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))}, &c, 201)
		return parse(t, c.CertPEM)
	}
	f.good, f.revoked = issue("good-device"), issue("revoked-device")
	e.MustDo("POST", "/api/v1/certificates/"+f.revoked.SerialNumber.Text(16)+"/revoke", e.AdminToken, apitypes.RevokeRequest{Reason: "keyCompromise"}, nil, 200)
	if got := f.good.OCSPServer; len(got) != 1 || got[0] != e.URL+"/ocsp" {
		t.Fatalf("issued certificate OCSP URL %v, want %s/ocsp", got, e.URL)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(f.dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f.rootFile = write("root.pem", pemOf(f.root))
	f.interFile = write("inter.pem", pemOf(f.inter))
	f.chainFile = write("chain.pem", append(pemOf(f.inter), pemOf(f.root)...))
	write("good.pem", pemOf(f.good))
	write("revoked.pem", pemOf(f.revoked))
	return f
}

// opensslOCSP asks with the openssl client and returns its output.
func (f *fixture) opensslOCSP(t *testing.T, extra ...string) string {
	t.Helper()
	args := append([]string{"ocsp", "-issuer", f.interFile, "-url", f.e.URL + "/ocsp", "-CAfile", f.chainFile, "-resp_text"}, extra...)
	cmd := exec.Command("openssl", args...)
	cmd.Dir = f.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestOpenSSLClient(t *testing.T) {
	f := setup(t)
	tests := []struct {
		name  string
		args  []string
		wants []string
		nots  []string
	}{
		{"good with nonce", []string{"-cert", "good.pem"}, []string{"good.pem: good", "Response verify OK", "OCSP Nonce"}, []string{"WARNING: no nonce"}},
		{"good without nonce", []string{"-cert", "good.pem", "-no_nonce"}, []string{"good.pem: good", "Response verify OK"}, []string{"OCSP Nonce"}},
		{"revoked with nonce", []string{"-cert", "revoked.pem"}, []string{"revoked.pem: revoked", "Reason: keyCompromise", "Response verify OK"}, nil},
		{"revoked without nonce", []string{"-cert", "revoked.pem", "-no_nonce"}, []string{"revoked.pem: revoked", "Response verify OK"}, nil},
		{"unknown serial", []string{"-serial", "0x7fffffffffffffff1234"}, []string{": unknown", "Response verify OK"}, nil},
		{"sha256 certid", []string{"-sha256", "-cert", "good.pem", "-no_nonce"}, []string{"good.pem: good", "Response verify OK"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := f.opensslOCSP(t, tt.args...)
			for _, w := range tt.wants {
				if !strings.Contains(out, w) {
					t.Errorf("openssl output lacks %q:\n%s", w, out)
				}
			}
			for _, n := range tt.nots {
				if strings.Contains(out, n) {
					t.Errorf("openssl output has %q:\n%s", n, out)
				}
			}
		})
	}
}

func (f *fixture) request(t *testing.T, cert *x509.Certificate) []byte {
	t.Helper()
	req, err := ocsp.CreateRequest(cert, f.inter, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func (f *fixture) get(t *testing.T, req []byte, hdr map[string]string) *http.Response {
	t.Helper()
	u := f.e.URL + "/ocsp/" + url.PathEscape(base64.StdEncoding.EncodeToString(req))
	r, _ := http.NewRequest("GET", u, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func body(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGETAndCaching(t *testing.T) {
	f := setup(t)
	req := f.request(t, f.good)
	resp := f.get(t, req, nil)
	der := body(t, resp)
	if ct := resp.Header.Get("Content-Type"); ct != "application/ocsp-response" {
		t.Errorf("content type %q", ct)
	}
	r, err := ocsp.ParseResponseForCert(der, f.good, f.inter)
	if err != nil {
		t.Fatalf("parsing the GET response: %v", err)
	}
	if r.Status != ocsp.Good {
		t.Errorf("status %d, want good", r.Status)
	}
	if r.Certificate == nil || len(r.Certificate.ExtKeyUsage) != 1 || r.Certificate.ExtKeyUsage[0] != x509.ExtKeyUsageOCSPSigning {
		t.Errorf("response not signed by a delegated OCSP responder: %+v", r.Certificate)
	}
	cc := resp.Header.Get("Cache-Control")
	if !strings.Contains(cc, "max-age=") || !strings.Contains(cc, "public") {
		t.Errorf("Cache-Control %q", cc)
	}
	if resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" || resp.Header.Get("Expires") == "" {
		t.Errorf("missing caching headers: %v", resp.Header)
	}
	// Pre-signed: the same request gets the same bytes.
	again := body(t, f.get(t, req, nil))
	if !bytes.Equal(der, again) {
		t.Error("a repeated request without nonce was signed again instead of served pre-signed")
	}
	// POST gets the same pre-signed answer.
	pr, err := http.Post(f.e.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body(t, pr), der) {
		t.Error("POST and GET answers differ")
	}
	// Conditional GET.
	nm := f.get(t, req, map[string]string{"If-None-Match": resp.Header.Get("ETag")})
	body(t, nm)
	if nm.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: got %d, want 304", nm.StatusCode)
	}
	// base64url in the path (a common client mistake) is tolerated.
	u := f.e.URL + "/ocsp/" + base64.RawURLEncoding.EncodeToString(req)
	ur, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := ocsp.ParseResponseForCert(body(t, ur), f.good, f.inter); err != nil || r.Status != ocsp.Good {
		t.Errorf("base64url GET: %v", err)
	}
}

func TestErrorsNeverHTTP500(t *testing.T) {
	f := setup(t)
	other := testpki.New(testpki.WithClock(time.Now)).Root("Somebody Else")
	leaf := other.Leaf("x")
	foreign, err := ocsp.CreateRequest(leaf.Cert, other.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		send func() *http.Response
		want ocsp.ResponseStatus
	}{
		{"garbage POST", func() *http.Response {
			r, _ := http.Post(f.e.URL+"/ocsp", "application/ocsp-request", strings.NewReader("not ocsp"))
			return r
		}, ocsp.Malformed},
		{"empty POST", func() *http.Response {
			r, _ := http.Post(f.e.URL+"/ocsp", "application/ocsp-request", nil)
			return r
		}, ocsp.Malformed},
		{"bad base64 GET", func() *http.Response { r, _ := http.Get(f.e.URL + "/ocsp/!!notbase64!!"); return r }, ocsp.Malformed},
		{"truncated request", func() *http.Response {
			req := f.request(t, f.good)
			r, _ := http.Post(f.e.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(req[:len(req)-3]))
			return r
		}, ocsp.Malformed},
		{"CA we do not hold", func() *http.Response {
			r, _ := http.Post(f.e.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(foreign))
			return r
		}, ocsp.Unauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tt.send()
			if resp == nil {
				t.Fatal("no response")
			}
			b := body(t, resp)
			if resp.StatusCode != 200 && resp.StatusCode != 400 {
				t.Errorf("HTTP %d", resp.StatusCode)
			}
			_, err := ocsp.ParseResponse(b, nil)
			var re ocsp.ResponseError
			if !asResponseError(err, &re) || re.Status != tt.want {
				t.Errorf("got %v, want OCSP error status %v", err, tt.want)
			}
		})
	}
}

func asResponseError(err error, re *ocsp.ResponseError) bool {
	if e, ok := err.(ocsp.ResponseError); ok {
		*re = e
		return true
	}
	return false
}

// TestRevocationVisibleWithinSeconds: a certificate answered "good" (and
// cached) turns "revoked" in OCSP right after the revocation commits.
func TestRevocationVisibleWithinSeconds(t *testing.T) {
	f := setup(t)
	req := f.request(t, f.good)
	if r, err := ocsp.ParseResponseForCert(body(t, f.get(t, req, nil)), f.good, f.inter); err != nil || r.Status != ocsp.Good {
		t.Fatalf("before: %v", err)
	}
	start := time.Now()
	f.e.MustDo("POST", "/api/v1/certificates/"+f.good.SerialNumber.Text(16)+"/revoke", f.e.AdminToken, apitypes.RevokeRequest{Reason: "superseded"}, nil, 200)
	for {
		r, err := ocsp.ParseResponseForCert(body(t, f.get(t, req, nil)), f.good, f.inter)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == ocsp.Revoked {
			if r.RevocationReason != ocsp.Superseded {
				t.Errorf("reason %d, want superseded", r.RevocationReason)
			}
			t.Logf("revocation visible in OCSP after %v", time.Since(start))
			return
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("revocation not visible in OCSP within 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestOpenSSLOverGET: openssl builds the request and checks the answer;
// the request travels by GET (openssl's client only POSTs): standard
// base64, URL-encoded, as RFC 6960 A.1 says.
func TestOpenSSLOverGET(t *testing.T) {
	f := setup(t)
	tests := []struct {
		name   string
		target []string
		nonce  bool
		want   string
	}{
		{"good without nonce", []string{"-cert", "good.pem"}, false, "Cert Status: good"},
		{"good with nonce", []string{"-cert", "good.pem"}, true, "Cert Status: good"},
		{"revoked without nonce", []string{"-cert", "revoked.pem"}, false, "Cert Status: revoked"},
		{"revoked with nonce", []string{"-cert", "revoked.pem"}, true, "Cert Status: revoked"},
		{"unknown with nonce", []string{"-serial", "0x7fffffffffffffff1234"}, true, "Cert Status: unknown"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqFile := filepath.Join(f.dir, fmt.Sprintf("req%d.der", i))
			respFile := filepath.Join(f.dir, fmt.Sprintf("resp%d.der", i))
			args := append([]string{"ocsp", "-issuer", f.interFile}, tt.target...)
			if !tt.nonce {
				args = append(args, "-no_nonce")
			}
			args = append(args, "-reqout", reqFile)
			cmd := exec.Command("openssl", args...)
			cmd.Dir = f.dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("openssl %v: %v\n%s", args, err, out)
			}
			req, err := os.ReadFile(reqFile)
			if err != nil {
				t.Fatal(err)
			}
			der := body(t, f.get(t, req, nil))
			if err := os.WriteFile(respFile, der, 0o644); err != nil {
				t.Fatal(err)
			}
			// -reqin lets openssl compare the nonce of its own request with
			// the response's (naming the certificate again would make it
			// build a new request with a new nonce).
			check := []string{"ocsp", "-reqin", reqFile, "-respin", respFile, "-issuer", f.interFile, "-CAfile", f.chainFile, "-resp_text"}
			cmd = exec.Command("openssl", check...)
			cmd.Dir = f.dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("openssl %v: %v\n%s", check, err, out)
			}
			for _, w := range []string{tt.want, "Response verify OK"} {
				if !strings.Contains(string(out), w) {
					t.Errorf("openssl output lacks %q:\n%s", w, out)
				}
			}
			if tt.nonce && strings.Contains(string(out), "WARNING: no nonce") {
				t.Errorf("nonce not echoed over GET:\n%s", out)
			}
		})
	}
}
