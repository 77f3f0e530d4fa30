package peers

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"testing"
	"time"

	"github.com/cloudflare/cfssl/config"
	cfssllog "github.com/cloudflare/cfssl/log"
	cfsslsigner "github.com/cloudflare/cfssl/signer"
	"github.com/cloudflare/cfssl/signer/local"

	"github.com/outpost-pki/outpost/internal/csrcheck"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// The comparison: the same in-memory ECDSA P-256 CA key and certificate,
// the same PEM CSRs in, a PEM certificate out, 90-day client certificates.
const sub = "memory-ecdsa-p256"

func init() {
	// cfssl logs every signature at INFO; that would cost it time and
	// break the benchmark output lines apart.
	cfssllog.Level = cfssllog.LevelFatal
}

type fixture struct {
	caKey  crypto.Signer
	caCert *x509.Certificate
	csrs   [][]byte // PEM
	hosts  [][]string
}

func newFixture(tb testing.TB) *fixture {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := issuer.CreateRoot(key, issuer.CAOptions{
		Subject: pkix.Name{CommonName: "Peer Bench CA"}, Now: time.Now(), Validity: 24 * time.Hour, MaxPathLen: -1,
	})
	if err != nil {
		tb.Fatal(err)
	}
	f := &fixture{caKey: key, caCert: ca}
	for i := 0; i < 64; i++ {
		name := fmt.Sprintf("device-%d.line1.bench.example", i)
		csr, _, err := testpki.CSR(name, testpki.DNSNames(name))
		if err != nil {
			tb.Fatal(err)
		}
		f.csrs = append(f.csrs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
		f.hosts = append(f.hosts, []string{name})
	}
	return f
}

func (f *fixture) cfssl(tb testing.TB) *local.Signer {
	policy := &config.Signing{
		Profiles: map[string]*config.SigningProfile{},
		Default: &config.SigningProfile{
			Usage:        []string{"digital signature", "client auth"},
			Expiry:       90 * 24 * time.Hour,
			ExpiryString: "2160h",
		},
	}
	s, err := local.NewSigner(f.caKey, f.caCert, x509.ECDSAWithSHA256, policy)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func (f *fixture) outpost() (*issuer.Issuer, *issuer.Profile) {
	p := issuer.DefaultDeviceProfile()
	p.SANs = issuer.SANPolicy{DNS: []string{"**.bench.example"}}
	return &issuer.Issuer{Cert: f.caCert, Signer: f.caKey}, p
}

func (f *fixture) outpostIssue(iss *issuer.Issuer, p *issuer.Profile, i int) ([]byte, error) {
	csr, err := csrcheck.ParsePEMOrDER(f.csrs[i], csrcheck.DefaultPolicy())
	if err != nil {
		return nil, err
	}
	cert, err := iss.Issue(csr, p, issuer.Request{})
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), nil
}

// BenchmarkPeerIssue: cfssl's local signer (v1.6.5), the library behind
// `cfssl sign` and its API server.
func BenchmarkPeerIssue(b *testing.B) {
	b.Run("cfssl-"+sub, func(b *testing.B) {
		f := newFixture(b)
		s := f.cfssl(b)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			j := i % len(f.csrs)
			if _, err := s.Sign(cfsslsigner.SignRequest{Request: string(f.csrs[j]), Hosts: f.hosts[j]}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkOutpostIssue: Outpost's csrcheck + issuer on the same input.
func BenchmarkOutpostIssue(b *testing.B) {
	b.Run("cfssl-"+sub, func(b *testing.B) {
		f := newFixture(b)
		iss, p := f.outpost()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := f.outpostIssue(iss, p, i%len(f.csrs)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestBothIssue checks both sides produce a verifying certificate for the
// same CSR, so the benchmark compares equal work.
func TestBothIssue(t *testing.T) {
	f := newFixture(t)
	roots := x509.NewCertPool()
	roots.AddCert(f.caCert)
	iss, p := f.outpost()
	ours, err := f.outpostIssue(iss, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := f.cfssl(t).Sign(cfsslsigner.SignRequest{Request: string(f.csrs[0]), Hosts: f.hosts[0]})
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string][]byte{"outpost": ours, "cfssl": theirs} {
		block, _ := pem.Decode(p)
		if block == nil {
			t.Fatalf("%s: no PEM certificate", name)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s certificate does not verify: %v", name, err)
		}
		if len(cert.DNSNames) != 1 || cert.DNSNames[0] != f.hosts[0][0] {
			t.Errorf("%s: got SANs %v, want %v", name, cert.DNSNames, f.hosts[0])
		}
	}
}
