package issuer_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/csrcheck"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/keystore/filekeys"
	"github.com/outpost-pki/outpost/internal/keystore/pkcs11keys"
	"github.com/outpost-pki/outpost/internal/keystore/tpmkeys"
	"github.com/outpost-pki/outpost/internal/secret"
	"github.com/outpost-pki/outpost/internal/testpki"
	"github.com/outpost-pki/outpost/testbed"
)

// TestChainAcrossKeyBackends builds root (PKCS#11, SoftHSM2) -> issuing CA
// (encrypted file) -> edge CA (TPM, swtpm; name-constrained) -> leaf, and
// checks the chain with crypto/x509 and with `openssl verify`. A leaf whose
// SAN falls outside the edge CA's constraints must fail both. The chain
// uses the wall clock because openssl verifies against it.
func TestChainAcrossKeyBackends(t *testing.T) {
	ctx := context.Background()
	now := time.Now()

	hsm := testbed.NewSoftHSM(t)
	rootStore, err := pkcs11keys.Open(pkcs11keys.Config{Module: hsm.Module, TokenLabel: hsm.Label, PIN: secret.Secret(hsm.PIN)})
	if err != nil {
		t.Fatal(err)
	}
	defer rootStore.Close()
	fileStore, err := filekeys.Open(filekeys.Config{Dir: t.TempDir(), Passphrase: "chain-test", Iterations: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	defer fileStore.Close()
	tpm := testbed.NewSwtpm(t)
	tpmStore, err := tpmkeys.Open(tpmkeys.Config{Open: tpmkeys.DialSwtpm(tpm.Addr()), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer tpmStore.Close()

	rootKey, err := rootStore.Generate(ctx, "root", keystore.ECDSAP384)
	if err != nil {
		t.Fatal(err)
	}
	issKey, err := fileStore.Generate(ctx, "issuing", keystore.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	edgeKey, err := tpmStore.Generate(ctx, "edge", keystore.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}

	root, err := issuer.CreateRoot(rootKey, issuer.CAOptions{
		Subject: pkix.Name{CommonName: "Outpost Test Root (PKCS#11)"}, Now: now, Validity: 10 * 365 * 24 * time.Hour, MaxPathLen: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := issuer.CreateIntermediate(root, rootKey, issKey.Public(), issuer.CAOptions{
		Subject: pkix.Name{CommonName: "Outpost Test Issuing CA (file)"}, Now: now, Validity: 5 * 365 * 24 * time.Hour, MaxPathLen: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	edge, err := issuer.CreateEdgeCA(inter, issKey, edgeKey.Public(), issuer.EdgeCAOptions{
		CAOptions:           issuer.CAOptions{Subject: pkix.Name{CommonName: "Outpost Test Edge CA (TPM)"}, Now: now, Validity: 30 * 24 * time.Hour},
		PermittedDNSDomains: []string{"line1.factory.example"},
	})
	if err != nil {
		t.Fatal(err)
	}

	// The edge CA signs with its TPM key. The profile is deliberately
	// wider than the edge CA's constraints, so that the out-of-bounds leaf
	// is issued and the verifiers, not our profile, must refuse it.
	edgeIssuer := &issuer.Issuer{Cert: edge, Signer: edgeKey, Now: func() time.Time { return now }}
	prof := issuer.DefaultDeviceProfile()
	prof.SANs = issuer.SANPolicy{DNS: []string{"**.example"}}
	leaf := func(dns string) *x509.Certificate {
		csr, _, err := testpki.CSR(dns, testpki.DNSNames(dns))
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := csrcheck.Parse(csr.Raw, csrcheck.DefaultPolicy())
		if err != nil {
			t.Fatal(err)
		}
		cert, err := edgeIssuer.Issue(parsed, prof, issuer.Request{})
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	inside := leaf("sensor-7.line1.factory.example")
	outside := leaf("sensor-7.line2.factory.example")

	if edge.MaxPathLen != 0 || !edge.MaxPathLenZero {
		t.Errorf("edge CA path length %d (zero flag %v), want 0", edge.MaxPathLen, edge.MaxPathLenZero)
	}

	dir := t.TempDir()
	writePEM := func(name string, certs ...*x509.Certificate) string {
		var b []byte
		for _, c := range certs {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootFile := writePEM("root.pem", root)
	untrusted := writePEM("chain.pem", edge, inter)

	roots := x509.NewCertPool()
	roots.AddCert(root)
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	inters.AddCert(edge)
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}

	tests := []struct {
		name   string
		leaf   *x509.Certificate
		wantOK bool
	}{
		{"inside the name constraints", inside, true},
		{"outside the name constraints", outside, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chains, err := tt.leaf.Verify(opts)
			if tt.wantOK {
				if err != nil {
					t.Fatalf("crypto/x509: %v", err)
				}
				if got := len(chains[0]); got != 4 {
					t.Errorf("chain length %d, want 4 (leaf, edge, issuing, root)", got)
				}
			} else {
				var cie x509.CertificateInvalidError
				if err == nil {
					t.Error("crypto/x509 accepted a leaf outside the name constraints")
				} else if !errors.As(err, &cie) || cie.Reason != x509.CANotAuthorizedForThisName {
					t.Errorf("crypto/x509: got %v, want CANotAuthorizedForThisName", err)
				}
			}

			leafFile := writePEM(strings.ReplaceAll(tt.name, " ", "_")+".pem", tt.leaf)
			out, err := exec.Command("openssl", "verify", "-x509_strict", "-purpose", "sslclient",
				"-CAfile", rootFile, "-untrusted", untrusted, leafFile).CombinedOutput()
			if tt.wantOK && err != nil {
				t.Errorf("openssl verify failed: %v\n%s", err, out)
			}
			if !tt.wantOK {
				if err == nil {
					t.Errorf("openssl verify accepted a leaf outside the name constraints:\n%s", out)
				} else if !strings.Contains(string(out), "permitted subtree violation") {
					t.Errorf("openssl verify failed for another reason than the name constraints:\n%s", out)
				}
			}
		})
	}
}
