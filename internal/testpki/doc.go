// Package testpki builds throwaway certificate hierarchies for Outpost's tests.
//
// Every test that needs a root, an issuing CA, a TLS server certificate, an
// OCSP responder, a CSR or a CRL builds it at run time with this package
// instead of checking PEM files into testdata. Keys are generated fresh for
// each hierarchy, so no key material ever lives in the repository.
//
// This is test material. Private keys are handed out unencrypted (PKCS#8
// "PRIVATE KEY" PEM) and written to disk without protection beyond file
// mode 0600. Never use this package outside tests.
//
// # Clock
//
// By default a PKI's clock always returns [Epoch] (2026-01-01T00:00:00Z).
// Validity windows, CRL update times and anything derived from them (expiry,
// renewal points) are therefore identical on every run and every machine;
// tests verify with x509.VerifyOptions.CurrentTime or tls.Config.Time set to
// the same clock (see [PKI.Now]). Tests that talk to real processes which
// check certificates against the wall clock, such as a TLS broker, pass
// WithClock(time.Now).
//
// # Errors
//
// Issuing certificates from options a test wrote itself should not fail, so
// the issuing methods ([PKI.Root], [CA.Intermediate], [CA.Leaf],
// [CA.OCSPResponder]) and the PEM encoders return values only. When they do
// fail (bad option, key generation error, a supplied key that cannot be
// exported) they call t.Fatalf on the testing.TB given to [NewT], or panic
// when the PKI was made with [New]. Because t.Fatalf must run on the test's
// own goroutine, tests that issue from other goroutines should use [New].
// Operations whose failure a test may want to observe ([CA.SignCSR], [CSR],
// [CA.CRL], the WriteFiles methods) return errors.
//
// # Example
//
//	p := testpki.NewT(t)
//	root := p.Root("Outpost Test Root")
//	issuing := root.Intermediate("Outpost Test Issuing CA", testpki.PathLen(0))
//	srv := issuing.Leaf("broker", testpki.DNSNames("broker.test"))
//	_, err := srv.Cert.Verify(srv.VerifyOptions(x509.ExtKeyUsageServerAuth))
package testpki
