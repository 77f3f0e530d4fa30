package issuer

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"math/big"
	"net/netip"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/testpki"
)

var (
	now  = testpki.Epoch
	year = 365 * 24 * time.Hour
	day  = 24 * time.Hour
)

// opaqueSigner hides the concrete key type, as a TPM or PKCS#11 key would:
// the code under test sees only Public and Sign.
type opaqueSigner struct{ s crypto.Signer }

func (o opaqueSigner) Public() crypto.PublicKey { return o.s.Public() }
func (o opaqueSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.s.Sign(r, digest, opts)
}

var _ crypto.Signer = opaqueSigner{}

func newKey(tb testing.TB, k testpki.KeyType) crypto.Signer {
	tb.Helper()
	key, err := testpki.GenerateKey(k)
	if err != nil {
		tb.Fatalf("generating %v key: %v", k, err)
	}
	return opaqueSigner{key}
}

// hierarchy is root -> intermediate -> edge CA, built with this package.
type hierarchy struct {
	root, inter, edge          *x509.Certificate
	rootKey, interKey, edgeKey crypto.Signer
}

// edgeConstraints are the name constraints of the test edge CA; the test
// profile below stays inside them.
func edgeConstraints() EdgeCAOptions {
	return EdgeCAOptions{
		PermittedDNSDomains:     []string{"factory.example"},
		PermittedIPRanges:       []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd00:42::/32")},
		PermittedEmailAddresses: []string{"factory.example"},
		PermittedURIDomains:     []string{"factory.example"},
	}
}

func newHierarchy(tb testing.TB, edgeKeyType testpki.KeyType, edge func(*EdgeCAOptions)) *hierarchy {
	tb.Helper()
	h := &hierarchy{
		rootKey:  newKey(tb, testpki.ECDSAP384),
		interKey: newKey(tb, testpki.ECDSAP256),
		edgeKey:  newKey(tb, edgeKeyType),
	}
	var err error
	h.root, err = CreateRoot(h.rootKey, CAOptions{
		Subject: pkix.Name{CommonName: "Outpost Test Root", Organization: []string{"Outpost"}},
		Now:     now, Validity: 10 * year, MaxPathLen: -1,
	})
	if err != nil {
		tb.Fatalf("CreateRoot: %v", err)
	}
	h.inter, err = CreateIntermediate(h.root, h.rootKey, h.interKey.Public(), CAOptions{
		Subject: pkix.Name{CommonName: "Outpost Test Issuing CA"},
		Now:     now, Validity: 5 * year, MaxPathLen: 1,
		CRLDistributionPoints:  []string{"http://crl.outpost.test/root.crl"},
		IssuingCertificateURLs: []string{"http://ca.outpost.test/root.crt"},
	})
	if err != nil {
		tb.Fatalf("CreateIntermediate: %v", err)
	}
	eo := edgeConstraints()
	eo.CAOptions = CAOptions{Subject: pkix.Name{CommonName: "Gateway 7 Edge CA"}, Now: now, Validity: 30 * day}
	if edge != nil {
		edge(&eo)
	}
	h.edge, err = CreateEdgeCA(h.inter, h.interKey, h.edgeKey.Public(), eo)
	if err != nil {
		tb.Fatalf("CreateEdgeCA: %v", err)
	}
	return h
}

func (h *hierarchy) issuer() *Issuer {
	return &Issuer{Cert: h.edge, Signer: h.edgeKey, Now: func() time.Time { return now }}
}

func (h *hierarchy) verifyOptions(at time.Time) x509.VerifyOptions {
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(h.root)
	inters.AddCert(h.inter)
	inters.AddCert(h.edge)
	return x509.VerifyOptions{
		Roots: roots, Intermediates: inters, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
}

// testProfile is the device profile with a SAN policy inside the edge CA's
// constraints and AIA/CDP URLs.
func testProfile() *Profile {
	p := DefaultDeviceProfile()
	p.SANs = SANPolicy{
		DNS:      []string{"device-42.line1.factory.example", "*.line1.factory.example", "**.line2.factory.example"},
		IPRanges: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd00:42::/32")},
		URI:      []string{"spiffe://factory.example/device/*", "spiffe://factory.example/fleet/**"},
		Email:    []string{"factory.example", "*.factory.example"},
	}
	p.OCSPServers = []string{"http://ocsp.outpost.test/edge"}
	p.IssuingCertificateURLs = []string{"http://ca.outpost.test/edge.crt"}
	p.CRLDistributionPoints = []string{"http://crl.outpost.test/edge.crl"}
	return p
}

func newCSR(tb testing.TB, cn string, opts ...testpki.CertOption) *x509.CertificateRequest {
	tb.Helper()
	csr, _, err := testpki.CSR(cn, opts...)
	if err != nil {
		tb.Fatalf("testpki.CSR: %v", err)
	}
	return csr
}

// usageExtensions returns DER keyUsage and extKeyUsage extensions as
// crypto/x509 encodes them, for CSRs that request usages.
func usageExtensions(tb testing.TB, ku x509.KeyUsage, eku ...x509.ExtKeyUsage) []pkix.Extension {
	tb.Helper()
	key, err := testpki.GenerateKey(testpki.ECDSAP256)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: now, NotAfter: now.Add(day), KeyUsage: ku, ExtKeyUsage: eku}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	var out []pkix.Extension
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidKeyUsage) || e.Id.Equal(oidExtKeyUsage) {
			out = append(out, e)
		}
	}
	return out
}

// csrWithExtensions makes a CSR for cn requesting exts.
func csrWithExtensions(tb testing.TB, cn string, dns []string, exts []pkix.Extension) *x509.CertificateRequest {
	tb.Helper()
	key, err := testpki.GenerateKey(testpki.ECDSAP256)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn}, DNSNames: dns, ExtraExtensions: exts,
	}, key)
	if err != nil {
		tb.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		tb.Fatal(err)
	}
	return csr
}

func findExt(c *x509.Certificate, id asn1.ObjectIdentifier) (pkix.Extension, bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(id) {
			return e, true
		}
	}
	return pkix.Extension{}, false
}
