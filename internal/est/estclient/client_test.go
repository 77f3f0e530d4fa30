package estclient

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/est"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// newCSR returns a fresh P-256 CSR for commonName and its key.
func newCSR(t *testing.T, commonName string) (*x509.CertificateRequest, crypto.Signer) {
	t.Helper()
	csr, key, err := testpki.CSR(commonName, testpki.DNSNames(commonName))
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
}

// httpError returns err as *HTTPError, failing the test if it is not one.
func httpError(t *testing.T, err error) *HTTPError {
	t.Helper()
	var he *HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("got error %v (%T), want *HTTPError", err, err)
	}
	return he
}

func TestCACerts(t *testing.T) {
	s := newTestServer(t)
	for _, label := range []string{"", "binary"} {
		t.Run("label "+label, func(t *testing.T) {
			certs, err := s.client(label).CACerts(t.Context())
			if err != nil {
				t.Fatalf("CACerts: %v", err)
			}
			want := []*x509.Certificate{s.issuing.Cert, s.root.Cert}
			if len(certs) != len(want) {
				t.Fatalf("got %d certificates, want %d", len(certs), len(want))
			}
			for i := range want {
				if !certs[i].Equal(want[i]) {
					t.Errorf("certificate %d: got %q, want %q", i, certs[i].Subject, want[i].Subject)
				}
			}
		})
	}
	t.Run("oversize answer", func(t *testing.T) {
		_, err := s.client("huge").CACerts(t.Context())
		if err == nil || !strings.Contains(err.Error(), "limit") {
			t.Errorf("got %v, want an error about the size limit", err)
		}
	})
	last := s.requests()[0]
	if last.method != http.MethodGet || last.path != "/.well-known/est/cacerts" || last.hasAuth {
		t.Errorf("got %+v, want an unauthenticated GET of /.well-known/est/cacerts", last)
	}
}

func TestCSRAttrs(t *testing.T) {
	s := newTestServer(t)
	attrs, err := s.client("").CSRAttrs(t.Context())
	if err != nil {
		t.Fatalf("CSRAttrs: %v", err)
	}
	want := est.DefaultCSRAttrs()
	if len(attrs) != len(want) {
		t.Fatalf("got %d attributes, want %d", len(attrs), len(want))
	}
	for i := range want {
		if !attrs[i].OID.Equal(want[i].OID) || len(attrs[i].Values) != len(want[i].Values) {
			t.Errorf("entry %d: got %v with %d values, want %v with %d", i,
				attrs[i].OID, len(attrs[i].Values), want[i].OID, len(want[i].Values))
		}
	}
	if got := attrs[1].Values[0].FullBytes; !bytes.Equal(got, want[1].Values[0].FullBytes) {
		t.Errorf("got ecPublicKey value %x, want %x", got, want[1].Values[0].FullBytes)
	}
	for _, label := range []string{"none", "missing"} {
		t.Run(label, func(t *testing.T) {
			attrs, err := s.client(label).CSRAttrs(t.Context())
			if attrs != nil || err != nil {
				t.Errorf("got %v, %v, want nil, nil", attrs, err)
			}
		})
	}
}

func TestSimpleEnroll(t *testing.T) {
	s := newTestServer(t)
	for _, label := range []string{"", "cafirst"} {
		t.Run("label "+label, func(t *testing.T) {
			csr, key := newCSR(t, "device-7.outpost.test")
			cert, err := s.client(label).SimpleEnroll(t.Context(), csr.Raw)
			if err != nil {
				t.Fatalf("SimpleEnroll: %v", err)
			}
			if cert.Subject.CommonName != "device-7.outpost.test" || cert.IsCA {
				t.Errorf("got %q (CA %v), want the device certificate", cert.Subject, cert.IsCA)
			}
			if !key.Public().(*ecdsa.PublicKey).Equal(cert.PublicKey) {
				t.Errorf("certificate is not for the csr's key")
			}
			if err := cert.CheckSignatureFrom(s.issuing.Cert); err != nil {
				t.Errorf("certificate not signed by the issuing CA: %v", err)
			}
		})
	}
	req := s.requests()[0]
	if req.method != http.MethodPost || req.path != "/.well-known/est/simpleenroll" ||
		req.contentType != "application/pkcs10" || req.cte != "base64" {
		t.Errorf("got %+v, want POST /.well-known/est/simpleenroll with application/pkcs10 in base64", req)
	}
}

func TestSimpleReenroll(t *testing.T) {
	s := newTestServer(t)
	csr, _ := newCSR(t, "device-8.outpost.test")

	t.Run("without client certificate", func(t *testing.T) {
		_, err := s.client("").SimpleReenroll(t.Context(), csr.Raw)
		he := httpError(t, err)
		if he.Status != http.StatusForbidden || he.Message != "client certificate required" {
			t.Errorf("got %d %q, want 403 %q", he.Status, he.Message, "client certificate required")
		}
	})
	t.Run("with client certificate", func(t *testing.T) {
		current := s.issuing.Leaf("device-8.outpost.test")
		c := s.client("")
		transport := c.HTTPClient.Transport.(*http.Transport).Clone()
		transport.TLSClientConfig.Certificates = []tls.Certificate{current.TLSCertificate()}
		c.HTTPClient = &http.Client{Transport: transport}
		cert, err := c.SimpleReenroll(t.Context(), csr.Raw)
		if err != nil {
			t.Fatalf("SimpleReenroll: %v", err)
		}
		if cert.Subject.CommonName != "device-8.outpost.test" {
			t.Errorf("got %q, want device-8.outpost.test", cert.Subject)
		}
		reqs := s.requests()
		last := reqs[len(reqs)-1]
		if last.path != "/.well-known/est/simplereenroll" || !last.clientCert {
			t.Errorf("got %+v, want simplereenroll with a client certificate", last)
		}
	})
}

func TestServerKeygen(t *testing.T) {
	s := newTestServer(t)
	csr, csrKey := newCSR(t, "device-9.outpost.test")
	cert, key, err := s.client("").ServerKeygen(t.Context(), csr.Raw)
	if err != nil {
		t.Fatalf("ServerKeygen: %v", err)
	}
	if cert.Subject.CommonName != "device-9.outpost.test" {
		t.Errorf("got %q, want device-9.outpost.test", cert.Subject)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		t.Fatalf("got key %T, want a crypto.Signer", key)
	}
	if !signer.Public().(*ecdsa.PublicKey).Equal(cert.PublicKey) {
		t.Errorf("key does not match the certificate")
	}
	if csrKey.Public().(*ecdsa.PublicKey).Equal(cert.PublicKey) {
		t.Errorf("certificate is for the csr's key, want a server-generated one")
	}

	t.Run("mismatched key", func(t *testing.T) {
		_, _, err := s.client("mismatch").ServerKeygen(t.Context(), csr.Raw)
		if err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Errorf("got %v, want a key mismatch error", err)
		}
	})
}

func TestRetry(t *testing.T) {
	s := newTestServer(t)
	csr, _ := newCSR(t, "device-10.outpost.test")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	t.Run("simpleenroll returns RetryError", func(t *testing.T) {
		s.mu.Lock()
		s.retryAfters = []string{"7"}
		s.mu.Unlock()
		_, err := s.client("queue").SimpleEnroll(t.Context(), csr.Raw)
		var re *RetryError
		if !errors.As(err, &re) {
			t.Fatalf("got %v (%T), want *RetryError", err, err)
		}
		if re.After != 7*time.Second || re.Message != "awaiting approval" {
			t.Errorf("got %v %q, want 7s %q", re.After, re.Message, "awaiting approval")
		}
	})

	t.Run("enroll honours retry-after within bounds", func(t *testing.T) {
		s.mu.Lock()
		s.retryAfters = []string{
			"7",       // as sent
			"",        // missing: at least 1s
			"0",       // at least 1s
			"999999",  // at most 1h
			"garbage", // unreadable: at least 1s
			now.Add(90 * time.Second).Format(http.TimeFormat), // an HTTP date
			now.Add(-time.Hour).Format(http.TimeFormat),       // in the past: at least 1s
		}
		s.mu.Unlock()
		var waits []time.Duration
		c := s.client("queue")
		c.now = func() time.Time { return now }
		c.sleep = func(ctx context.Context, d time.Duration) error {
			waits = append(waits, d)
			return ctx.Err()
		}
		cert, err := c.Enroll(t.Context(), csr.Raw)
		if err != nil {
			t.Fatalf("Enroll: %v", err)
		}
		if cert.Subject.CommonName != "device-10.outpost.test" {
			t.Errorf("got %q, want device-10.outpost.test", cert.Subject)
		}
		want := []time.Duration{7 * time.Second, time.Second, time.Second, time.Hour, time.Second, 90 * time.Second, time.Second}
		if !reflect.DeepEqual(waits, want) {
			t.Errorf("got waits %v, want %v", waits, want)
		}
	})

	t.Run("enroll really waits", func(t *testing.T) {
		s.mu.Lock()
		s.retryAfters = []string{"1"}
		s.mu.Unlock()
		cert, err := s.client("queue").Enroll(t.Context(), csr.Raw)
		if err != nil {
			t.Fatalf("Enroll: %v", err)
		}
		if cert.Subject.CommonName != "device-10.outpost.test" {
			t.Errorf("got %q, want device-10.outpost.test", cert.Subject)
		}
	})

	t.Run("enroll stops when the context ends", func(t *testing.T) {
		s.mu.Lock()
		s.retryAfters = []string{"5", "5", "5", "5"}
		s.mu.Unlock()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		attempts := 0
		c := s.client("queue")
		c.sleep = func(ctx context.Context, d time.Duration) error {
			if attempts++; attempts == 2 {
				cancel()
			}
			return ctx.Err()
		}
		_, err := c.Enroll(ctx, csr.Raw)
		var re *RetryError
		if !errors.Is(err, context.Canceled) || !errors.As(err, &re) {
			t.Fatalf("got %v, want an error wrapping context.Canceled and a RetryError", err)
		}
		if attempts != 2 {
			t.Errorf("got %d waits, want 2", attempts)
		}
	})

	t.Run("enroll passes other errors through", func(t *testing.T) {
		_, err := s.client("forbidden").Enroll(t.Context(), csr.Raw)
		if he := httpError(t, err); he.Status != http.StatusForbidden {
			t.Errorf("got %d, want 403", he.Status)
		}
	})
}

func TestErrors(t *testing.T) {
	s := newTestServer(t)
	csr, _ := newCSR(t, "device-11.outpost.test")
	seq := []byte{0x30, 0x03, 0x02, 0x01, 0x01} // a DER SEQUENCE, not a CSR
	tests := []struct {
		name       string
		label      string
		user, pass string
		csr        []byte
		wantStatus int
		wantMsg    string
	}{
		{"no credentials", "auth", "", "", csr.Raw, 401, "credentials required"},
		{"wrong password", "auth", testUser, "wrong", csr.Raw, 401, "invalid credentials"},
		{"forbidden", "forbidden", "", "", csr.Raw, 403, "csr subject does not match current certificate"},
		{"not der", "", "", "", []byte("not a csr"), 400, "request body is not a der-encoded csr"},
		{"not a csr", "", "", "", seq, 400, "invalid csr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := s.client(tt.label)
			c.Username, c.Password = tt.user, tt.pass
			_, err := c.SimpleEnroll(t.Context(), tt.csr)
			he := httpError(t, err)
			if he.Status != tt.wantStatus || he.Message != tt.wantMsg {
				t.Errorf("got %d %q, want %d %q", he.Status, he.Message, tt.wantStatus, tt.wantMsg)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not include the server's message", err)
			}
		})
	}
	t.Run("not found", func(t *testing.T) {
		c := s.client("a/b")
		_, err := c.CACerts(t.Context())
		if he := httpError(t, err); he.Status != http.StatusNotFound {
			t.Errorf("got %d, want 404", he.Status)
		}
	})
}

func TestBasicCredentialsSentUpFront(t *testing.T) {
	s := newTestServer(t)
	csr, _ := newCSR(t, "device-12.outpost.test")
	c := s.client("auth")
	c.Username, c.Password = testUser, testPassword
	for name, call := range map[string]func() error{
		"cacerts":      func() error { _, err := c.CACerts(t.Context()); return err },
		"csrattrs":     func() error { _, err := c.CSRAttrs(t.Context()); return err },
		"simpleenroll": func() error { _, err := c.SimpleEnroll(t.Context(), csr.Raw); return err },
		"serverkeygen": func() error { _, _, err := c.ServerKeygen(t.Context(), csr.Raw); return err },
	} {
		t.Run(name, func(t *testing.T) {
			before := len(s.requests())
			if err := call(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			reqs := s.requests()[before:]
			if len(reqs) != 1 {
				t.Fatalf("got %d requests, want 1 (credentials sent without waiting for a challenge)", len(reqs))
			}
			if !reqs[0].hasAuth || reqs[0].user != testUser || reqs[0].password != testPassword {
				t.Errorf("server saw credentials %q/%q (present %v), want %q/%q",
					reqs[0].user, reqs[0].password, reqs[0].hasAuth, testUser, testPassword)
			}
		})
	}
}

func TestBaseURL(t *testing.T) {
	s := newTestServer(t)
	t.Run("trailing slash", func(t *testing.T) {
		c := s.client("")
		c.BaseURL += "/"
		if _, err := c.CACerts(t.Context()); err != nil {
			t.Errorf("CACerts: %v", err)
		}
		if got := s.requests()[0].path; got != "/.well-known/est/cacerts" {
			t.Errorf("got path %q, want /.well-known/est/cacerts", got)
		}
	})
	for _, base := range []string{
		"http://example.test/.well-known/est",
		"https:///.well-known/est",
		"https://example.test/.well-known/est?x=1",
		"https://example.test/.well-known/est#frag",
		"://bad",
		"",
	} {
		t.Run(base, func(t *testing.T) {
			c := &Client{BaseURL: base}
			if _, err := c.CACerts(t.Context()); err == nil || !strings.Contains(err.Error(), "base url") {
				t.Errorf("got %v, want a base url error", err)
			}
		})
	}
	t.Run("empty csr", func(t *testing.T) {
		c := s.client("")
		if _, err := c.SimpleEnroll(t.Context(), nil); err == nil {
			t.Errorf("SimpleEnroll: got no error for an empty csr")
		}
		if _, _, err := c.ServerKeygen(t.Context(), nil); err == nil {
			t.Errorf("ServerKeygen: got no error for an empty csr")
		}
	})
}

func TestErrorStrings(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&HTTPError{Status: 403, Message: "not allowed"}, "est: server answered 403 Forbidden: not allowed"},
		{&HTTPError{Status: 400}, "est: server answered 400 Bad Request"},
		{&RetryError{After: 30 * time.Second, Message: "awaiting approval"}, "est: request accepted but not yet processed, retry after 30s: awaiting approval"},
		{&RetryError{}, "est: request accepted but not yet processed, retry after 0s"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestMessage(t *testing.T) {
	tests := []struct {
		body string
		want string
	}{
		{"invalid csr\n", "invalid csr"},
		{"  two\r\nlines\x00 ", "two lines"},
		{"bad \xff", "bad ?"},
		{strings.Repeat("x", 2000), strings.Repeat("x", maxMessage)},
		{strings.Repeat("é", 400), strings.Repeat("é", maxMessage/2)},
		{"", ""},
	}
	for _, tt := range tests {
		if got := message([]byte(tt.body)); got != tt.want {
			t.Errorf("message(%q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

func TestParseServerKeygenErrors(t *testing.T) {
	s := newTestServer(t)
	leaf := s.issuing.Leaf("device-13.outpost.test")
	key, err := x509.MarshalPKCS8PrivateKey(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	certs := string(certsOnlyBody(leaf.Cert.Raw))
	keyB64 := string(est.EncodeBase64(key))
	body := func(parts ...string) string {
		var b strings.Builder
		for _, p := range parts {
			b.WriteString("--b\r\n" + p + "\r\n")
		}
		b.WriteString("--b--\r\n")
		return b.String()
	}
	keyPart := "Content-Type: application/pkcs8\r\n\r\n" + keyB64
	certPart := "Content-Type: application/pkcs7-mime; smime-type=certs-only\r\n\r\n" + certs
	tests := []struct {
		name, contentType, body, want string
	}{
		{"ok", "multipart/mixed; boundary=b", body(certPart, keyPart), ""},
		{"not multipart", "application/pkcs7-mime", body(keyPart, certPart), "not multipart"},
		{"bad content type", "multipart/mixed; boundary", body(keyPart, certPart), "content type"},
		{"no key", "multipart/mixed; boundary=b", body(certPart), "no private key part"},
		{"no certs", "multipart/mixed; boundary=b", body(keyPart), "no certificate part"},
		{"two keys", "multipart/mixed; boundary=b", body(keyPart, keyPart, certPart), "more than one private key"},
		{"two cert parts", "multipart/mixed; boundary=b", body(keyPart, certPart, certPart), "more than one certificate"},
		{"encrypted key", "multipart/mixed; boundary=b", body("Content-Type: application/pkcs7-mime; smime-type=server-generated-key\r\n\r\nAAAA", certPart), "encrypted"},
		{"unexpected part", "multipart/mixed; boundary=b", body("Content-Type: text/plain\r\n\r\nhi", keyPart, certPart), "unexpected content type"},
		{"bad key", "multipart/mixed; boundary=b", body("Content-Type: application/pkcs8\r\n\r\nMAA=", certPart), "private key part"},
		{"bad certs", "multipart/mixed; boundary=b", body(keyPart, "Content-Type: application/pkcs7-mime\r\n\r\nMAA="), "certificate part"},
		{"truncated", "multipart/mixed; boundary=b", "--b\r\n" + keyPart, "part"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, k, err := parseServerKeygen(tt.contentType, []byte(tt.body))
			if tt.want == "" {
				if err != nil || cert == nil || k == nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
