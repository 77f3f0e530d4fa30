package cpcmd_test

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/crl"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// TestRevocationReachesOCSPAndCRLs: with the control plane wired as the
// binary wires it, a revocation through the API shows in the served CRLs
// within 5 seconds (OCSP: ocspresponder's TestRevocationVisibleWithinSeconds),
// and openssl verify (CRL checks on the
// whole chain, with deltas) accepts a good certificate and rejects the
// revoked one.
func TestRevocationReachesOCSPAndCRLs(t *testing.T) {
	e := cptest.Start(t, nil)
	e.App.AttachCRL(&crl.Service{Reg: e.App.Svc.Reg, Keys: e.App.Keys}, crl.PathPrefix)
	admin := e.AdminToken
	var root, inter apitypes.CA
	e.MustDo("POST", "/api/v1/cas", admin, apitypes.CreateCARequest{Name: "r", CommonName: "E2E Root"}, &root, 201)
	e.MustDo("POST", "/api/v1/cas", admin, apitypes.CreateCARequest{Name: "i", CommonName: "E2E Issuing", ParentID: root.ID}, &inter, 201)
	issue := func(cn string) *x509.Certificate {
		csr, _, _ := testpki.CSR(cn)
		var c apitypes.Certificate
		e.MustDo("POST", "/api/v1/certificates", admin, apitypes.IssueRequest{CAID: inter.ID,
			CSRPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))}, &c, 201)
		b, _ := pem.Decode([]byte(c.CertPEM))
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	good, bad := issue("good"), issue("bad")
	if len(good.CRLDistributionPoints) != 1 || good.CRLDistributionPoints[0] != crl.FullURL(e.URL, mustUUID(t, inter.ID)) {
		t.Fatalf("certificate CDP %v", good.CRLDistributionPoints)
	}
	get := func(url string) []byte {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
		}
		return b
	}
	// Base CRLs before the revocation.
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	crlPEM := func(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}) }
	interCRL := get(crl.FullURL(e.URL, mustUUID(t, inter.ID)))
	rootCRL := get(crl.FullURL(e.URL, mustUUID(t, root.ID)))

	start := time.Now()
	e.MustDo("POST", "/api/v1/certificates/"+bad.SerialNumber.Text(16)+"/revoke", admin, apitypes.RevokeRequest{Reason: "keyCompromise"}, nil, 200)
	var delta []byte
	for {
		delta = get(crl.DeltaURL(e.URL, mustUUID(t, inter.ID)))
		rl, err := x509.ParseRevocationList(delta)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, ent := range rl.RevokedCertificateEntries {
			found = found || ent.SerialNumber.Cmp(bad.SerialNumber) == 0
		}
		if found {
			t.Logf("revocation in the served delta CRL after %v", time.Since(start))
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("revocation not in the served CRLs within 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	rootFile := write("root.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: mustCert(t, root.CertPEM).Raw}))
	interFile := write("inter.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: mustCert(t, inter.CertPEM).Raw}))
	crls := write("crls.pem", append(append(crlPEM(interCRL), crlPEM(rootCRL)...), crlPEM(delta)...))
	verify := func(leaf *x509.Certificate) (string, error) {
		f := write("leaf.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))
		out, err := exec.Command("openssl", "verify", "-crl_check_all", "-use_deltas", "-CAfile", rootFile, "-untrusted", interFile, "-CRLfile", crls, f).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(good); err != nil {
		t.Errorf("openssl verify of the good certificate: %v\n%s", err, out)
	}
	// The base CRL predates the revocation: only the delta knows.
	if out, err := verify(bad); err == nil || !strings.Contains(out, "certificate revoked") {
		t.Errorf("openssl verify of the revoked certificate (via the delta): %v\n%s", err, out)
	}
}

func mustUUID(t *testing.T, s string) uuid.UUID {
	t.Helper()
	u, err := uuid.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func mustCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(p))
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
