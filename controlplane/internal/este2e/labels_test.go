package este2e

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/est/estclient"
)

// TestLabelDeviceAuth: device authentication is per DMS and per label. The
// DMS takes one-time secrets by default, and its label "mtls" takes
// manufacturer (bootstrap) client certificates instead.
func TestLabelDeviceAuth(t *testing.T) {
	bootKey, bootCert, bootPEM := benchCA(t)
	policy := apitypes.DMSPolicy{Mode: "local", DeviceAuth: "basic_secret", Profile: "device", LocalQuota: 100, ReenrollWindowDays: 14, BootstrapCAPEMs: []string{string(bootPEM)}}
	v := newEnv(t, policy)
	policy.Labels = []apitypes.DMSLabel{{Name: "mtls", CAID: v.caID, DeviceAuth: "client_cert"}, {Name: "either", CAID: v.caID, DeviceAuth: "client_cert_or_secret"}}
	v.setPolicy(policy, []string{v.caID})
	dev := benchDevice(t, bootKey, bootCert, "press-4")
	ctx := context.Background()

	_, csr := newCSR(t, "press-4")
	cert, err := v.client("mtls", &dev).SimpleEnroll(ctx, csr)
	if err != nil {
		t.Fatalf("client-certificate enrollment under label mtls: %v", err)
	}
	if cert.Subject.CommonName != "press-4" {
		t.Errorf("certificate names %q", cert.Subject.CommonName)
	}
	// Without the label the DMS wants a one-time secret: the certificate
	// alone is refused with a Basic challenge.
	_, csr = newCSR(t, "press-4")
	_, err = v.client("", &dev).SimpleEnroll(ctx, csr)
	var he *estclient.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusUnauthorized || !strings.Contains(he.Message, "credentials") {
		t.Fatalf("default label with only a client certificate: %v, want 401 asking for credentials", err)
	}
	// And under mtls, secrets do not replace the certificate.
	creds := v.mint(2, "sec-")
	c := v.client("mtls", nil)
	for u, p := range creds {
		c.Username, c.Password = u, p
		_, csr = newCSR(t, u)
	}
	_, err = c.SimpleEnroll(ctx, csr)
	if !errors.As(err, &he) || he.Status != http.StatusUnauthorized || !strings.Contains(he.Message, "client certificate") {
		t.Fatalf("label mtls with a secret and no certificate: %v, want 401 asking for a client certificate", err)
	}
	// Label "either" takes a manufacturer certificate or a secret.
	_, csr = newCSR(t, "press-4")
	if _, err := v.client("either", &dev).SimpleEnroll(ctx, csr); err != nil {
		t.Fatalf("label either with a client certificate: %v", err)
	}
	c.BaseURL = v.estURL + "/either"
	_, csr = newCSR(t, c.Username)
	if _, err := c.SimpleEnroll(ctx, csr); err != nil {
		t.Fatalf("label either with a secret: %v", err)
	}
}
