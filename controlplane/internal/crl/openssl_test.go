package crl

import (
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

// fetchCRL GETs a CRL through Handler and returns its DER.
func fetchCRL(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ContentType {
		t.Fatalf("GET %s: got %d %q: %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	return body
}

func writePEM(t *testing.T, path, typ string, ders ...[]byte) string {
	t.Helper()
	var b []byte
	for _, d := range ders {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpenSSLVerify checks the served CRLs with `openssl verify`: a good
// leaf passes, revoked ones fail, with -crl_check, -crl_check_all (the
// root's CRL too) and -use_deltas with a delta holding a revocation its
// base does not have.
func TestOpenSSLVerify(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required for this test: %v", err)
	}
	e := newEnv(t, nil)
	root, rootCert := e.createCA(t, "ossl-root", nil)
	inter, interCert := e.createCA(t, "ossl-issuing", &root.ID)

	// caservice puts PublicURL/crl/<ca-id>.crl into what it issues: the
	// contract with FullURL.
	good := e.issue(t, inter.ID, "good", "")
	early := e.issue(t, inter.ID, "revoked-early", "")
	late := e.issue(t, inter.ID, "revoked-late", "")
	if got := good.CRLDistributionPoints; len(got) != 1 || got[0] != FullURL(e.svc.BaseURL, inter.ID) {
		t.Fatalf("leaf crl distribution points: got %v, want [%s]", got, FullURL(e.svc.BaseURL, inter.ID))
	}

	e.revoke(t, early, 1)
	for _, ca := range []*registry.CA{root, inter} {
		if _, err := e.svc.GenerateFull(e.ctx, ca.ID); err != nil {
			t.Fatal(err)
		}
	}
	e.revoke(t, late, 1)
	if err := e.svc.OnRevoked(e.ctx, inter.ID); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	rootCRL := fetchCRL(t, e.url(root.ID, false))
	interCRL := fetchCRL(t, e.url(inter.ID, false))
	interDelta := fetchCRL(t, e.url(inter.ID, true))
	if s := entrySerials(mustParseCRL(t, interCRL)); s[hexSerial(late.SerialNumber)].SerialNumber != nil || s[hexSerial(early.SerialNumber)].SerialNumber == nil {
		t.Fatalf("base crl: want the early revocation and not the late one, got %v", s)
	}
	if s := entrySerials(mustParseCRL(t, interDelta)); s[hexSerial(late.SerialNumber)].SerialNumber == nil {
		t.Fatalf("delta crl: want the late revocation, got %v", s)
	}
	// Negative control: the same delta with the delta URL as its IDP,
	// which differs from the base's. OpenSSL does not apply it.
	dl := mustParseCRL(t, interDelta)
	signer, err := e.App.Keys.Load(e.ctx, *inter.KeyRef)
	if err != nil {
		t.Fatal(err)
	}
	wrongDelta, err := build(&template{
		issuer: interCert, signer: signer, number: dl.Number.Int64() + 100, thisUpdate: dl.ThisUpdate, nextUpdate: dl.NextUpdate,
		idpURL: DeltaURL(e.svc.BaseURL, inter.ID), baseNumber: mustParseCRL(t, interCRL).Number.Int64(), entries: dl.RevokedCertificateEntries,
	})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"chain-crls-wrong-delta": writePEM(t, filepath.Join(dir, "chain-crls-wrong-delta.pem"), "X509 CRL", rootCRL, interCRL, wrongDelta),
		"root":                   writePEM(t, filepath.Join(dir, "root.pem"), "CERTIFICATE", rootCert.Raw),
		"inter":                  writePEM(t, filepath.Join(dir, "inter.pem"), "CERTIFICATE", interCert.Raw),
		"good":                   writePEM(t, filepath.Join(dir, "good.pem"), "CERTIFICATE", good.Raw),
		"early":                  writePEM(t, filepath.Join(dir, "early.pem"), "CERTIFICATE", early.Raw),
		"late":                   writePEM(t, filepath.Join(dir, "late.pem"), "CERTIFICATE", late.Raw),
		// CRL sets
		"inter-crl":        writePEM(t, filepath.Join(dir, "inter-crl.pem"), "X509 CRL", interCRL),
		"chain-crls":       writePEM(t, filepath.Join(dir, "chain-crls.pem"), "X509 CRL", rootCRL, interCRL),
		"chain-crls-delta": writePEM(t, filepath.Join(dir, "chain-crls-delta.pem"), "X509 CRL", rootCRL, interCRL, interDelta),
	}

	// openssl's own view of the extensions.
	for _, tc := range []struct {
		crl  []byte
		want []string
	}{
		{interCRL, []string{"X509v3 Issuing Distribution Point: critical", "URI:" + FullURL(e.svc.BaseURL, inter.ID), "X509v3 Freshest CRL:", "URI:" + DeltaURL(e.svc.BaseURL, inter.ID), "X509v3 CRL Number:", "X509v3 Authority Key Identifier:"}},
		{interDelta, []string{"X509v3 Issuing Distribution Point: critical", "URI:" + FullURL(e.svc.BaseURL, inter.ID), "X509v3 Delta CRL Indicator: critical"}},
	} {
		path := writePEM(t, filepath.Join(dir, "text.pem"), "X509 CRL", tc.crl)
		out, err := exec.Command(openssl, "crl", "-in", path, "-noout", "-text").CombinedOutput()
		if err != nil {
			t.Fatalf("openssl crl: %v\n%s", err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("openssl crl -text: want %q in\n%s", w, out)
			}
		}
	}

	for _, tc := range []struct {
		name  string
		leaf  string
		crls  string
		flags []string
		ok    bool
		want  string // in the output
	}{
		{"crl_check good", "good", "inter-crl", []string{"-crl_check"}, true, "OK"},
		{"crl_check revoked", "early", "inter-crl", []string{"-crl_check"}, false, "certificate revoked"},
		{"crl_check_all good", "good", "chain-crls", []string{"-crl_check_all"}, true, "OK"},
		{"crl_check_all revoked", "early", "chain-crls", []string{"-crl_check_all"}, false, "certificate revoked"},
		{"crl_check_all without the root's crl", "good", "inter-crl", []string{"-crl_check_all"}, false, "unable to get certificate CRL"},
		{"base without the late revocation", "late", "chain-crls-delta", []string{"-crl_check_all"}, true, "OK"},
		{"use_deltas: delta has the late revocation", "late", "chain-crls-delta", []string{"-crl_check_all", "-use_deltas"}, false, "certificate revoked"},
		{"use_deltas good", "good", "chain-crls-delta", []string{"-crl_check_all", "-use_deltas"}, true, "OK"},
		{"use_deltas revoked in the base", "early", "chain-crls-delta", []string{"-crl_check_all", "-use_deltas"}, false, "certificate revoked"},
		{"a delta whose IDP differs from the base's is ignored", "late", "chain-crls-wrong-delta", []string{"-crl_check_all", "-use_deltas"}, true, "OK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"verify"}, tc.flags...)
			args = append(args, "-CAfile", files["root"], "-untrusted", files["inter"], "-CRLfile", files[tc.crls], files[tc.leaf])
			out, err := exec.Command(openssl, args...).CombinedOutput()
			if got := err == nil; got != tc.ok {
				t.Errorf("openssl %s: got success %v, want %v\n%s", strings.Join(args, " "), got, tc.ok, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("openssl verify: want %q in\n%s", tc.want, out)
			}
		})
	}
}
