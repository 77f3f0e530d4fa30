package scenarios

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/est/estclient"
	"github.com/outpost-pki/outpost/testbed/system"
)

// TestSkewedDeviceClocks enrolls devices whose clocks are wrong. A
// device's clock is the Time of its TLS configuration (an
// http.Transport per device), and the device checks the certificate it
// gets with x509 at that same time, against the chain from /cacerts:
//
//   - 4 minutes behind: enrolls, and its certificate is already valid at
//     its time (the issuers backdate NotBefore by issuer.DefaultBackdate,
//     5 minutes, and the EST server certificate and the CAs above were
//     issued the same way);
//   - 10 minutes ahead: enrolls, certificate valid;
//   - 3 hours behind: the TLS handshake fails (the EST server certificate
//     is not yet valid at its time) with an error saying so; nothing is
//     signed; after its clock is corrected it enrolls;
//   - 100 days ahead: the TLS handshake fails (the 90-day EST server
//     certificate has expired at its time); corrected, it enrolls.
//
// The registry then holds each accepted certificate exactly once.
//
// Not covered: a gateway (agent) or control plane whose own clock is
// off. Both are Go binaries, which read the clock through the vDSO and
// ignore libfaketime, Linux time namespaces do not move CLOCK_REALTIME,
// and the binaries have no clock override (a test-only hook in the
// product is not worth it), so skew between processes on one machine
// cannot be made cleanly here. What the code does about it: the agent
// signs with its own clock (NotBefore backdated 5 minutes, NotAfter
// clipped to the edge CA's), and the registry records the certificate as
// signed.
func TestSkewedDeviceClocks(t *testing.T) {
	s := system.StartT(t, system.Options{Secrets: 1})
	ctx := context.Background()
	devices := []struct {
		name     string
		skew     time.Duration
		tlsFails string // the handshake error at the skewed time, "" if it works
	}{
		{"4 minutes behind", -4 * time.Minute, ""},
		{"10 minutes ahead", 10 * time.Minute, ""},
		{"3 hours behind", -3 * time.Hour, "certificate has expired or is not yet valid"},
		{"100 days ahead", 100 * 24 * time.Hour, "certificate has expired or is not yet valid"},
	}
	creds, err := s.MintSecrets(ctx, len(devices), "clock-")
	if err != nil {
		t.Fatal(err)
	}
	accepted := map[string]*enrolled{}
	for i, d := range devices {
		t.Run(d.name, func(t *testing.T) {
			cr := creds[i]
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cr.Device}}, key)
			if err != nil {
				t.Fatal(err)
			}
			parsed, _ := x509.ParseCertificateRequest(csr)
			e := &enrolled{Device: cr.Device, SPKI: parsed.RawSubjectPublicKeyInfo}
			skew := d.skew
			clock := func() time.Time { return time.Now().Add(skew) }
			client := func() *estclient.Client {
				tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ESTCA, MinVersion: tls.VersionTLS12, Time: clock}}
				return &estclient.Client{BaseURL: s.ESTURL, Username: cr.Device, Password: cr.Secret, HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
			}

			e.Attempts++
			cert, err := client().SimpleEnroll(ctx, csr)
			if d.tlsFails != "" {
				var verr *tls.CertificateVerificationError
				if err == nil || !errors.As(err, &verr) || !strings.Contains(err.Error(), d.tlsFails) {
					t.Fatalf("enrolling at %v: got %v, want a TLS certificate verification error saying %q", d.skew, err, d.tlsFails)
				}
				t.Logf("at its time the device cannot trust the EST server: %v", err)
				skew = 0 // the device's clock is corrected (NTP, an operator)
				e.Attempts++
				cert, err = client().SimpleEnroll(ctx, csr)
			}
			if err != nil {
				t.Fatalf("enrolling: %v", err)
			}
			chain, err := client().CACerts(ctx)
			if err != nil {
				t.Fatalf("cacerts: %v", err)
			}
			inter := x509.NewCertPool()
			for _, c := range chain {
				inter.AddCert(c)
			}
			now := clock()
			if _, err := cert.Verify(x509.VerifyOptions{Roots: s.ESTCA, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("the certificate does not verify at the device's time %s: %v (NotBefore %s)", now.UTC().Format(time.RFC3339), err, cert.NotBefore.UTC().Format(time.RFC3339))
			}
			e.Cert = cert
			accepted[cr.Device] = e
		})
	}
	if len(accepted) != len(devices) {
		t.Fatalf("%d of %d devices enrolled", len(accepted), len(devices))
	}
	assertExactlyOnce(t, s, accepted)
}
