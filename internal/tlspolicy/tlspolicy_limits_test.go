package tlspolicy_test

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/outpost-pki/outpost/internal/testpki"
	"github.com/outpost-pki/outpost/internal/tlspolicy"
)

// legacyClients are the clients every Outpost listener must refuse:
// TLS 1.1, and TLS 1.2 offering only CBC suites or only RSA key
// exchange. The listener tests of the control plane (cpserver), the
// broker and the agent's EST server (este2e) dial with the same ones.
var legacyClients = map[string]*tls.Config{
	"TLS 1.1":                  {MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11},
	"TLS 1.2 CBC only":         {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256}},
	"TLS 1.2 RSA key exchange": {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_RSA_WITH_AES_128_CBC_SHA}},
}

// TestServerPolicy: a listener configured with Server (an ECDSA and an
// RSA certificate, so that every suite has a certificate it could use)
// refuses the legacy clients, accepts TLS 1.2 with each policy suite, and
// negotiates TLS 1.3 with a default client. The same listener without
// the policy is the control: it accepts CBC suites.
func TestServerPolicy(t *testing.T) {
	certs := serverCerts(t)
	policy := serve(t, tlspolicy.Server(&tls.Config{Certificates: certs}))
	plain := serve(t, &tls.Config{Certificates: certs, MinVersion: tls.VersionTLS12})

	for name, cfg := range legacyClients {
		t.Run(name, func(t *testing.T) {
			if st, err := handshake(policy, cfg); err == nil {
				t.Fatalf("handshake succeeded (version %x, %s), want it refused", st.Version, tls.CipherSuiteName(st.CipherSuite))
			}
			if st, err := handshake(plain, cfg); err == nil {
				t.Logf("control: without the policy the handshake succeeds (%s)", tls.CipherSuiteName(st.CipherSuite))
			}
		})
	}
	for _, id := range tlspolicy.CipherSuites() {
		t.Run("TLS 1.2 "+tls.CipherSuiteName(id), func(t *testing.T) {
			st, err := handshake(policy, &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{id}})
			if err != nil || st.Version != tls.VersionTLS12 || st.CipherSuite != id {
				t.Fatalf("got %v (version %x, %s), want TLS 1.2 with %s", err, st.Version, tls.CipherSuiteName(st.CipherSuite), tls.CipherSuiteName(id))
			}
		})
		for _, s := range tls.InsecureCipherSuites() {
			if s.ID == id {
				t.Errorf("%s is in the policy but crypto/tls calls it insecure", s.Name)
			}
		}
	}
	if st, err := handshake(policy, &tls.Config{}); err != nil || st.Version != tls.VersionTLS13 {
		t.Errorf("default client: %v (version %x), want TLS 1.3", err, st.Version)
	}
	if c := tlspolicy.Server(&tls.Config{MinVersion: tls.VersionTLS13}); c.MinVersion != tls.VersionTLS13 {
		t.Errorf("Server lowered MinVersion to %x", c.MinVersion)
	}
}

// TestClientPolicy: a client configured with Client refuses a TLS 1.2
// server that offers only ECDHE with CBC, or only RSA key exchange, where
// Go's default client (the control) accepts the CBC one; it connects to a
// server with a policy suite and negotiates TLS 1.3 where offered.
func TestClientPolicy(t *testing.T) {
	certs := serverCerts(t)
	client := tlspolicy.Client(&tls.Config{})
	for _, c := range []struct {
		name   string
		suites []uint16
		want   uint16 // 0: refused
	}{
		{"server with ECDHE-CBC only", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}, 0},
		{"server with RSA key exchange only", []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}, 0},
		{"server with a policy suite", []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}, tls.VersionTLS12},
		{"TLS 1.3 server", nil, tls.VersionTLS13},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := &tls.Config{Certificates: certs, CipherSuites: c.suites}
			if c.suites != nil {
				srv.MaxVersion = tls.VersionTLS12
			}
			addr := serve(t, srv)
			st, err := handshake(addr, client)
			switch {
			case c.want == 0 && err == nil:
				t.Fatalf("handshake succeeded with %s, want it refused", tls.CipherSuiteName(st.CipherSuite))
			case c.want != 0 && (err != nil || st.Version != c.want):
				t.Fatalf("got %v (version %x), want version %x", err, st.Version, c.want)
			}
			if c.name == "server with ECDHE-CBC only" {
				if _, err := handshake(addr, &tls.Config{MinVersion: tls.VersionTLS12}); err != nil {
					t.Errorf("control: Go's default client should accept CBC, got %v", err)
				}
			}
		})
	}
}

// serverCerts are an ECDSA and an RSA certificate for localhost, so that
// every suite has a certificate it could use.
func serverCerts(t *testing.T) []tls.Certificate {
	ca := testpki.NewT(t).Root("tlspolicy test root")
	return []tls.Certificate{
		ca.Leaf("localhost", testpki.DNSNames("localhost")).TLSCertificate(),
		ca.Leaf("localhost", testpki.DNSNames("localhost"), testpki.KeyAlgorithm(testpki.RSA2048)).TLSCertificate(),
	}
}

// serve accepts TLS connections with cfg and completes their handshakes
// until the test ends.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func handshake(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	cfg = cfg.Clone()
	cfg.InsecureSkipVerify = true // only the negotiation is under test
	conn, err := tls.DialWithDialer(&net.Dialer{}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}
