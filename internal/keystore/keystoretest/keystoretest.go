// Package keystoretest is the conformance suite every keystore backend
// runs against the real thing (swtpm, the TPM simulator, SoftHSM2, the file
// store): generate, persist, reopen, sign, verify, and the documented
// errors.
package keystoretest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/keystore"
)

// Harness tells the suite how to reach a backend.
type Harness struct {
	// Open returns a new store instance over the same persistent state
	// each time it is called; the suite closes it (perhaps twice).
	Open func(t *testing.T) keystore.Store
	// Algorithms the backend must support.
	Algorithms []keystore.Algorithm
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	ctx := context.Background()
	open := h.Open
	// Every store is closed when its subtest ends, even on failure: some
	// TPMs (an swtpm socket) serve one connection at a time. Close must
	// therefore tolerate being called twice.
	h.Open = func(t *testing.T) keystore.Store {
		s := open(t)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}

	t.Run("generate sign verify reload", func(t *testing.T) {
		s := h.Open(t)
		pubs := map[string]crypto.PublicKey{}
		for _, alg := range h.Algorithms {
			name := "key-" + string(alg)
			signer, err := s.Generate(ctx, name, alg)
			if err != nil {
				t.Fatalf("generate %s: %v", alg, err)
			}
			got, err := keystore.AlgorithmOf(signer.Public())
			if err != nil || got != alg {
				t.Fatalf("generated key is %v (%v), want %s", got, err, alg)
			}
			CheckSigner(t, signer)
			pubs[name] = signer.Public()
		}
		if err := s.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}

		// A new instance over the same state finds every key.
		s2 := h.Open(t)
		defer s2.Close()
		for name, pub := range pubs {
			signer, err := s2.Load(ctx, name)
			if err != nil {
				t.Fatalf("load %s after reopen: %v", name, err)
			}
			if !publicEqual(signer.Public(), pub) {
				t.Errorf("%s: public key changed across reopen", name)
			}
			p, err := s2.Public(ctx, name)
			if err != nil || !publicEqual(p, pub) {
				t.Errorf("%s: Public() = %v, %v; want the generated key", name, p, err)
			}
			CheckSigner(t, signer)
		}
		list, err := s2.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, ki := range list {
			if _, ok := pubs[ki.Name]; ok {
				names = append(names, ki.Name)
				want, _ := keystore.AlgorithmOf(pubs[ki.Name])
				if ki.Algorithm != want || !publicEqual(ki.Public, pubs[ki.Name]) {
					t.Errorf("List: %s has algorithm %s, want %s (or another public key)", ki.Name, ki.Algorithm, want)
				}
			}
		}
		if len(names) != len(pubs) {
			t.Errorf("List returned %v, want all of %d generated keys", names, len(pubs))
		}
		for i := 1; i < len(list); i++ {
			if list[i-1].Name >= list[i].Name {
				t.Errorf("List not sorted by name: %q before %q", list[i-1].Name, list[i].Name)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		s := h.Open(t)
		defer s.Close()
		alg := h.Algorithms[0]
		if _, err := s.Generate(ctx, "dup", alg); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			err  error
			want error
		}{
			{"generate existing", second(s.Generate(ctx, "dup", alg)), keystore.ErrExists},
			{"load missing", second(s.Load(ctx, "missing")), keystore.ErrNotFound},
			{"public missing", second(s.Public(ctx, "missing")), keystore.ErrNotFound},
			{"delete missing", s.Delete(ctx, "missing"), keystore.ErrNotFound},
			{"bad name slash", second(s.Generate(ctx, "../etc/passwd", alg)), keystore.ErrInvalidName},
			{"bad name empty", second(s.Generate(ctx, "", alg)), keystore.ErrInvalidName},
			{"bad algorithm", second(s.Generate(ctx, "x", keystore.Algorithm("dsa-1024"))), keystore.ErrUnsupported},
		}
		for _, tt := range tests {
			if !errors.Is(tt.err, tt.want) {
				t.Errorf("%s: got %v, want %v", tt.name, tt.err, tt.want)
			}
		}
		// The refused Generate left the existing key intact.
		k, err := s.Load(ctx, "dup")
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.Public(ctx, "dup")
		if err != nil || !publicEqual(p, k.Public()) {
			t.Errorf("after a refused Generate, Public() no longer matches the key (%v)", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		s := h.Open(t)
		alg := h.Algorithms[0]
		if _, err := s.Generate(ctx, "doomed", alg); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "doomed"); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if _, err := s.Load(ctx, "doomed"); !errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("load after delete: got %v, want ErrNotFound", err)
		}
		s.Close()
		s2 := h.Open(t)
		defer s2.Close()
		if _, err := s2.Load(ctx, "doomed"); !errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("load after delete and reopen: got %v, want ErrNotFound", err)
		}
		// The name can be used again.
		if _, err := s2.Generate(ctx, "doomed", alg); err != nil {
			t.Errorf("generate after delete: %v", err)
		}
	})

	t.Run("concurrent signing", func(t *testing.T) {
		s := h.Open(t)
		defer s.Close()
		signer, err := s.Generate(ctx, "busy", h.Algorithms[0])
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < 5; i++ {
					if err := signVerify(signer, []byte(fmt.Sprintf("msg %d %d", g, i)), crypto.SHA256); err != nil {
						errs <- err
						return
					}
				}
			}(g)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func second[T any](_ T, err error) error { return err }

func publicEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if e, ok := a.(equaler); ok {
		return e.Equal(b)
	}
	return reflect.DeepEqual(a, b)
}

// CheckSigner signs with every hash the key type is used with and
// verifies, and uses the signer for a real X.509 certificate.
func CheckSigner(t *testing.T, signer crypto.Signer) {
	t.Helper()
	hashes := []crypto.Hash{crypto.SHA256}
	if k, ok := signer.Public().(*ecdsa.PublicKey); ok && k.Curve.Params().BitSize == 384 {
		hashes = []crypto.Hash{crypto.SHA384}
	}
	if _, ok := signer.Public().(*rsa.PublicKey); ok {
		hashes = []crypto.Hash{crypto.SHA256, crypto.SHA384}
	}
	for _, h := range hashes {
		if err := signVerify(signer, []byte("outpost keystore conformance"), h); err != nil {
			t.Error(err)
		}
	}
	if _, ok := signer.Public().(*rsa.PublicKey); ok {
		if err := signVerifyPSS(signer, []byte("pss")); err != nil {
			t.Error(err)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "keystore conformance"},
		NotBefore:             time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		t.Errorf("self-signed certificate with %T: %v", signer, err)
		return
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("certificate signature does not verify: %v", err)
	}
}

func digest(msg []byte, h crypto.Hash) []byte {
	switch h {
	case crypto.SHA384:
		d := sha512.Sum384(msg)
		return d[:]
	default:
		d := sha256.Sum256(msg)
		return d[:]
	}
}

func signVerify(signer crypto.Signer, msg []byte, h crypto.Hash) error {
	d := digest(msg, h)
	sig, err := signer.Sign(rand.Reader, d, h)
	if err != nil {
		return fmt.Errorf("sign (%v): %w", h, err)
	}
	switch pub := signer.Public().(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, d, sig) {
			return fmt.Errorf("ECDSA signature (%v) does not verify as ASN.1", h)
		}
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(pub, h, d, sig); err != nil {
			return fmt.Errorf("RSA PKCS#1 v1.5 signature (%v) does not verify: %w", h, err)
		}
	default:
		return fmt.Errorf("unexpected public key %T", pub)
	}
	return nil
}

func signVerifyPSS(signer crypto.Signer, msg []byte) error {
	d := digest(msg, crypto.SHA256)
	opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	sig, err := signer.Sign(rand.Reader, d, opts)
	if err != nil {
		return fmt.Errorf("sign PSS: %w", err)
	}
	if err := rsa.VerifyPSS(signer.Public().(*rsa.PublicKey), crypto.SHA256, d, sig, opts); err != nil {
		return fmt.Errorf("RSA-PSS signature does not verify: %w", err)
	}
	return nil
}
