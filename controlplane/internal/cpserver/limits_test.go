package cpserver_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/cpconfig"
	"github.com/outpost-pki/outpost/controlplane/internal/cpserver"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/internal/testpki"
	"github.com/outpost-pki/outpost/internal/tlspolicy/tlspolicytest"
	"github.com/outpost-pki/outpost/testbed"
)

// headerTimeout is the control plane listener's ReadHeaderTimeout (and,
// as the smallest of its timeouts, its TLS handshake timeout).
const headerTimeout = 10 * time.Second

// TestListenerLimits runs the control plane's listener (API, dashboard,
// OCSP, CRLs) as the binary does, with TLS (App.Serve), and checks:
//
//   - TLS 1.1 and TLS 1.2 clients offering only CBC suites or only RSA
//     key exchange are refused; TLS 1.2 with ECDHE-AEAD and TLS 1.3 work;
//   - a client certificate from a CA other than the DMS manager CA is
//     refused at the handshake (client certificates are verified only
//     against the configured anchor);
//   - request headers over MaxHeaderBytes (64 KiB) get 431;
//   - a slowloris client (one byte a second) is disconnected when the
//     header timeout has passed, in the TLS handshake and in the request
//     headers alike.
func TestListenerLimits(t *testing.T) {
	pg := testbed.NewPostgres(t)
	dir := t.TempDir()
	pki := testpki.NewT(t, testpki.WithClock(time.Now))
	serverCA := pki.Root("limits server CA")
	certFile, keyFile, err := serverCA.Leaf("127.0.0.1", testpki.IPAddresses(net.IPv4(127, 0, 0, 1)), testpki.ExtKeyUsage(x509.ExtKeyUsageServerAuth)).WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The configuration as the binary reads it (defaults applied).
	cfg, err := cpconfig.Parse(fmt.Appendf(nil, `version: 1
listen: 127.0.0.1:0
tls: {cert_file: %q, key_file: %q}
database: {url: %q}
keystore: {backend: file, file: {dir: %q, passphrase: {value: limits}}}
admin_token: {value: %q}
sync: {broker: {enabled: false}}
`, certFile, keyFile, pg.NewDatabase(t), filepath.Join(dir, "keys"), cptest.RandomToken()), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	app, err := cpserver.Build(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, func(addr string) { ready <- addr }) }()
	defer func() { cancel(); <-done }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the listener did not come up")
	}
	handshake := func(c *tls.Config) (tls.ConnectionState, error) {
		c = c.Clone()
		c.RootCAs, c.ServerName = serverCA.Pool(), "127.0.0.1"
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, c)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer conn.Close()
		// TLS 1.3 client certificates are checked after the client's
		// Finished: a request shows whether the server took it.
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"); err != nil {
			return tls.ConnectionState{}, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		resp.Body.Close()
		return conn.ConnectionState(), nil
	}

	t.Run("tls", func(t *testing.T) {
		foreign := testpki.NewT(t, testpki.WithClock(time.Now)).Root("not the DMS manager CA").
			Leaf("00000000-0000-0000-0000-000000000001", testpki.ExtKeyUsage(x509.ExtKeyUsageClientAuth)).TLSCertificate()
		// GetClientCertificate: Go clients send a certificate from
		// Certificates only when its issuer is one the server lists.
		tlspolicytest.Check(t, append(tlspolicytest.Clients(), tlspolicytest.Client{Name: "client certificate of another CA",
			Cfg: &tls.Config{GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }}}), handshake)
	})

	t.Run("headers over 64 KiB", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "https://"+addr+"/healthz", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 128<<10))
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverCA.Pool(), ServerName: "127.0.0.1"}}}
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
		for _, c := range []struct {
			name  string
			dial  func() (net.Conn, error)
			bytes string
		}{
			{"in the TLS handshake", func() (net.Conn, error) { return net.Dial("tcp", addr) },
				"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + string(make([]byte, 64))},
			{"in the request headers", func() (net.Conn, error) {
				return tls.Dial("tcp", addr, &tls.Config{RootCAs: serverCA.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
			}, "GET /api/v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
		} {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				start := time.Now()
				conn, err := c.dial()
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				elapsed := tlspolicytest.Slowloris(conn, []byte(c.bytes), time.Second, 3*headerTimeout, start)
				// An HTTP/1.1 server may answer 408 before closing; either
				// way the connection ends at the timeout.
				if elapsed < headerTimeout-500*time.Millisecond || elapsed > headerTimeout+2*time.Second {
					t.Errorf("disconnected after %v, want after the header timeout %v (+2 s)", elapsed, headerTimeout)
				}
			})
		}
	})
}
