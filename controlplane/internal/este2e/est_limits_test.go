package este2e

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/crl"
	"github.com/outpost-pki/outpost/internal/est"
	"github.com/outpost-pki/outpost/internal/testpki"
	"github.com/outpost-pki/outpost/internal/tlspolicy/tlspolicytest"
)

// The agent's listener limits (agent/internal/agent: est.go and run.go).
const (
	estHeaderTimeout   = 10 * time.Second // EST server ReadHeaderTimeout (and TLS handshake timeout)
	adminHeaderTimeout = 5 * time.Second  // admin endpoint ReadHeaderTimeout
)

// TestAgentListenerLimits: the agent's EST server refuses TLS 1.1 and TLS
// 1.2 clients offering only CBC suites or only RSA key exchange; takes
// TLS 1.2 with ECDHE-AEAD and TLS 1.3; refuses a re-enrollment with a
// client certificate from a CA the gateway does not trust (client
// certificates are verified only against its configured anchors: the
// bootstrap CAs, the authorized CAs' bundles, the edge CA); answers
// headers over 16 KiB with 431. A slowloris client (a byte a second) is
// disconnected at the header timeout: on the EST server in the TLS
// handshake and in the headers, on the admin endpoint in the headers.
func TestAgentListenerLimits(t *testing.T) {
	v := newEnv(t, apitypes.DMSPolicy{Mode: "local", DeviceAuth: "client_cert_or_secret", Profile: "device", LocalQuota: 100, ReenrollWindowDays: 3650})
	u, err := url.Parse(v.estURL)
	if err != nil {
		t.Fatal(err)
	}
	addr := u.Host
	handshake := func(c *tls.Config) (tls.ConnectionState, error) {
		c = c.Clone()
		c.RootCAs, c.ServerName = v.trust, "127.0.0.1"
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, c)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer conn.Close()
		return conn.ConnectionState(), nil
	}
	t.Run("tls", func(t *testing.T) {
		tlspolicytest.Check(t, tlspolicytest.Clients(), handshake)
	})
	t.Run("client certificate of an untrusted CA", func(t *testing.T) {
		key, csr := newCSR(t, "limits-foreign")
		cr, err := x509.ParseCertificateRequest(csr)
		if err != nil {
			t.Fatal(err)
		}
		foreign, err := testpki.NewT(t, testpki.WithClock(time.Now)).Root("untrusted device CA").SignCSR(cr)
		if err != nil {
			t.Fatal(err)
		}
		a := v.do(estReq{Path: "simplereenroll", ContentType: est.MediaTypePKCS10, Body: est.EncodeBase64(csr), Cert: tlsCert(key, foreign)})
		if a.Status != http.StatusForbidden || !strings.Contains(a.Body, "not issued by a CA of this gateway") {
			t.Errorf("got %v, want 403 naming the CA", a)
		}
	})
	t.Run("headers over 16 KiB", func(t *testing.T) {
		req, _ := http.NewRequest("GET", v.estURL+"/cacerts", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: v.trust, MinVersion: tls.VersionTLS12}}}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("got %d, want 431", resp.StatusCode)
		}
	})
	t.Run("slowloris", func(t *testing.T) {
		admin := strings.TrimPrefix(v.adminURL, "http://")
		for _, c := range []struct {
			name    string
			dial    func() (net.Conn, error)
			bytes   string
			timeout time.Duration
		}{
			{"EST: in the TLS handshake", func() (net.Conn, error) { return net.Dial("tcp", addr) },
				"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + string(make([]byte, 64)), estHeaderTimeout},
			{"EST: in the request headers", func() (net.Conn, error) {
				return tls.Dial("tcp", addr, &tls.Config{RootCAs: v.trust, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
			}, "GET /.well-known/est/cacerts HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + strings.Repeat("a", 64), estHeaderTimeout},
			{"admin: in the request headers", func() (net.Conn, error) { return net.Dial("tcp", admin) },
				"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + strings.Repeat("a", 64), adminHeaderTimeout},
		} {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				start := time.Now()
				conn, err := c.dial()
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				elapsed := tlspolicytest.Slowloris(conn, []byte(c.bytes), time.Second, 3*c.timeout, start)
				if elapsed < c.timeout-500*time.Millisecond || elapsed > c.timeout+2*time.Second {
					t.Errorf("disconnected after %v, want after the header timeout %v (+2 s)", elapsed, c.timeout)
				}
			})
		}
	})
}

// TestCRLGraceFailsClosed: in local mode the agent decides a
// re-enrollment with a certificate of an authorized CA by the CA's cached
// CRL while the CRL is fresh, still past its nextUpdate within
// est.crl_grace, and refuses it (fails closed) once nextUpdate plus the
// grace has passed with no newer CRL (the uplink is cut). The control
// plane makes full CRLs valid for 15 s here, the agent's grace is 5 s.
func TestCRLGraceFailsClosed(t *testing.T) {
	const validity, grace = 15 * time.Second, 5 * time.Second
	v := newEnvWith(t, apitypes.DMSPolicy{Mode: "local", DeviceAuth: "client_cert_or_secret", Profile: "device", LocalQuota: 100, ReenrollWindowDays: 3650},
		"  crl_grace: 5s\n")
	crls, ok := v.e.App.CRL.(*crl.Service)
	if !ok {
		t.Fatalf("the control plane's CRL service is a %T", v.e.App.CRL)
	}
	crls.Validity = validity // before the CA's first CRL: nothing reads it yet

	key, csr := newCSR(t, "grace-dev")
	cert := v.issueFromCA(v.caID, csr)
	_, other := newCSR(t, "grace-other")
	revoked := v.issueFromCA(v.caID, other)
	// The first revocation makes the CA's first full CRL (and a delta).
	v.e.MustDo("POST", "/api/v1/certificates/"+serialHex(revoked)+"/revoke", v.e.AdminToken, apitypes.RevokeRequest{Reason: "keyCompromise"}, nil, 200)
	resp, err := http.Get(crl.FullURL(v.e.URL, uuid.MustParse(v.caID)))
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	full, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("the devices CA's CRL: %v", err)
	}
	if got := full.NextUpdate.Sub(full.ThisUpdate); got != validity {
		t.Fatalf("the CRL is valid for %v, want %v", got, validity)
	}
	reenroll := func() estAnswer {
		_, csr := newCSR(t, "grace-dev")
		return v.do(estReq{Path: "simplereenroll", ContentType: est.MediaTypePKCS10, Body: est.EncodeBase64(csr), Cert: tlsCert(key, cert)})
	}
	var last estAnswer
	eventually(t, 20*time.Second, "the agent re-enrolls once the CRL arrived", func() bool { last = reenroll(); return last.Status == http.StatusOK },
		func() string { return "last answer: " + last.String() + "\n" + v.agent.Tail() })
	v.cutUplink()
	if time.Now().After(full.NextUpdate) {
		t.Fatalf("the test was too slow: the CRL's nextUpdate (%v) passed before the uplink was cut", full.NextUpdate)
	}

	time.Sleep(time.Until(full.NextUpdate.Add(time.Second)))
	if a := reenroll(); a.Status != http.StatusOK {
		t.Errorf("past nextUpdate, within the grace: got %v, want 200 (the cached CRL still decides)", a)
	}
	time.Sleep(time.Until(full.NextUpdate.Add(grace + 500*time.Millisecond)))
	if a := reenroll(); a.Status != http.StatusForbidden || !strings.Contains(a.Body, "revocation status of the current certificate is unknown") {
		t.Errorf("past nextUpdate plus the grace: got %v, want 403 (fail closed)", a)
	}
}
