package bench

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"

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

// backend opens a key store of one kind for a benchmark.
type backend struct {
	name string
	open func(tb testing.TB) keystore.Store
}

var (
	simOnce sync.Once
	sim     transport.TPMCloser
	simErr  error
)

type nopCloser struct{ transport.TPM }

func (nopCloser) Close() error { return nil }

func backends() []backend {
	return []backend{
		{"file", func(tb testing.TB) keystore.Store {
			s, err := filekeys.Open(filekeys.Config{Dir: tb.TempDir(), Passphrase: "bench", Iterations: 10_000})
			if err != nil {
				tb.Fatal(err)
			}
			return s
		}},
		{"pkcs11-softhsm2", func(tb testing.TB) keystore.Store {
			h := testbed.NewSoftHSM(tb)
			s, err := pkcs11keys.Open(pkcs11keys.Config{Module: h.Module, TokenLabel: h.Label, PIN: secret.Secret(h.PIN)})
			if err != nil {
				tb.Fatal(err)
			}
			return s
		}},
		{"tpm-swtpm", func(tb testing.TB) keystore.Store {
			t := testbed.NewSwtpm(tb)
			s, err := tpmkeys.Open(tpmkeys.Config{Open: tpmkeys.DialSwtpm(t.Addr()), Dir: tb.TempDir()})
			if err != nil {
				tb.Fatal(err)
			}
			return s
		}},
		{"tpm-simulator", func(tb testing.TB) keystore.Store {
			simOnce.Do(func() { sim, simErr = simulator.OpenSimulator() })
			if simErr != nil {
				tb.Fatal(simErr)
			}
			s, err := tpmkeys.Open(tpmkeys.Config{
				Open: func() (transport.TPMCloser, error) { return nopCloser{sim}, nil },
				Dir:  tb.TempDir(),
			})
			if err != nil {
				tb.Fatal(err)
			}
			return s
		}},
	}
}

const alg = keystore.ECDSAP256

func caKey(tb testing.TB, be backend) crypto.Signer {
	s := be.open(tb)
	tb.Cleanup(func() { s.Close() })
	k, err := s.Generate(context.Background(), "bench-ca", alg)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// newIssuer makes a root CA whose key is in the backend.
func newIssuer(tb testing.TB, be backend, now time.Time) *issuer.Issuer {
	k := caKey(tb, be)
	ca, err := issuer.CreateRoot(k, issuer.CAOptions{
		Subject:    pkix.Name{CommonName: "Outpost Bench CA " + be.name},
		Now:        now,
		Validity:   24 * time.Hour,
		MaxPathLen: -1,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &issuer.Issuer{Cert: ca, Signer: k, Now: func() time.Time { return now }}
}

// BenchmarkSign measures the raw signature rate of each backend: one
// ECDSA P-256 signature over a SHA-256 digest per operation.
func BenchmarkSign(b *testing.B) {
	for _, be := range backends() {
		b.Run(be.name+"-"+string(alg), func(b *testing.B) {
			k := caKey(b, be)
			d := sha256.Sum256([]byte("outpost"))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := k.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// csrPool returns n distinct P-256 CSRs (DER) for issuance benchmarks.
func csrPool(tb testing.TB, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		csr, _, err := testpki.CSR(fmt.Sprintf("device-%d.line1.bench.example", i),
			testpki.DNSNames(fmt.Sprintf("device-%d.line1.bench.example", i)))
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = csr.Raw
	}
	return out
}

func benchProfile() *issuer.Profile {
	p := issuer.DefaultDeviceProfile()
	p.SANs = issuer.SANPolicy{DNS: []string{"**.bench.example"}}
	return p
}

// BenchmarkIssue measures a whole issuance with the CA key in each
// backend: parse and validate a DER CSR (signature check included), then
// build and sign the certificate.
func BenchmarkIssue(b *testing.B) {
	now := time.Now()
	for _, be := range backends() {
		b.Run(be.name+"-"+string(alg), func(b *testing.B) {
			iss := newIssuer(b, be, now)
			prof := benchProfile()
			csrs := csrPool(b, 64)
			policy := csrcheck.DefaultPolicy()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				csr, err := csrcheck.Parse(csrs[i%len(csrs)], policy)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := iss.Issue(csr, prof, issuer.Request{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestIssuanceEveryBackend issues and verifies certificates the way the
// benchmark does, so a broken benchmark setup fails CI rather than the
// next `make bench`.
func TestIssuanceEveryBackend(t *testing.T) {
	now := time.Now()
	csrs := csrPool(t, 4)
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			iss := newIssuer(t, be, now)
			roots := x509.NewCertPool()
			roots.AddCert(iss.Cert)
			for _, der := range csrs {
				csr, err := csrcheck.Parse(der, csrcheck.DefaultPolicy())
				if err != nil {
					t.Fatal(err)
				}
				cert, err := iss.Issue(csr, benchProfile(), issuer.Request{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
					t.Errorf("certificate signed by the %s key does not verify: %v", be.name, err)
				}
			}
		})
	}
}
