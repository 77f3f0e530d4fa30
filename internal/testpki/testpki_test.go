package testpki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// keyTypeOf reports the KeyType of a public key, 0 if unknown.
func keyTypeOf(pub crypto.PublicKey) KeyType {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return ECDSAP256
		case elliptic.P384():
			return ECDSAP384
		}
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return RSA2048
		case 3072:
			return RSA3072
		}
	case ed25519.PublicKey:
		return Ed25519
	}
	return 0
}

func TestChainVerifiesForEveryKeyType(t *testing.T) {
	for _, kt := range KeyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			p := NewT(t, WithKeyType(kt))
			root := p.Root("root")
			inter := root.Intermediate("inter")
			leaf := inter.Leaf("leaf", DNSNames("leaf.test"))

			for _, c := range []*x509.Certificate{root.Cert, inter.Cert, leaf.Cert} {
				if got := keyTypeOf(c.PublicKey); got != kt {
					t.Errorf("%s key type: got %v, want %v", c.Subject.CommonName, got, kt)
				}
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				opts := x509.VerifyOptions{
					Roots:         root.Pool(),
					Intermediates: x509.NewCertPool(),
					CurrentTime:   Epoch,
					KeyUsages:     []x509.ExtKeyUsage{usage},
					DNSName:       "leaf.test",
				}
				opts.Intermediates.AddCert(inter.Cert)
				chains, err := leaf.Cert.Verify(opts)
				if err != nil {
					t.Fatalf("verify with usage %v: %v", usage, err)
				}
				if got, want := len(chains[0]), 3; got != want {
					t.Errorf("chain length: got %d, want %d", got, want)
				}
			}
			// The leaf's own helper must agree.
			if _, err := leaf.Cert.Verify(leaf.VerifyOptions(x509.ExtKeyUsageClientAuth)); err != nil {
				t.Errorf("verify with VerifyOptions: %v", err)
			}

			wantKU := x509.KeyUsageDigitalSignature
			if kt == RSA2048 || kt == RSA3072 {
				wantKU |= x509.KeyUsageKeyEncipherment
			}
			if got := leaf.Cert.KeyUsage; got != wantKU {
				t.Errorf("leaf key usage: got %v, want %v", got, wantKU)
			}
			if got, want := root.Cert.KeyUsage, x509.KeyUsageCertSign|x509.KeyUsageCRLSign; got != want {
				t.Errorf("root key usage: got %v, want %v", got, want)
			}
		})
	}
}

func TestCertificateShape(t *testing.T) {
	p := NewT(t)
	root := p.Root("root")
	inter := root.Intermediate("inter")
	leaf := inter.Leaf("leaf")

	tests := []struct {
		name       string
		cn         string
		cert       *x509.Certificate
		parent     *x509.Certificate
		isCA       bool
		maxPathLen int
		validity   time.Duration
		wantEKU    []x509.ExtKeyUsage
	}{
		{name: "root", cn: "root", cert: root.Cert, parent: root.Cert, isCA: true, maxPathLen: -1, validity: rootValidity},
		{name: "intermediate", cn: "inter", cert: inter.Cert, parent: root.Cert, isCA: true, maxPathLen: -1, validity: intermediateValidity},
		{name: "leaf", cn: "leaf", cert: leaf.Cert, parent: inter.Cert, validity: leafValidity,
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cert
			if !c.BasicConstraintsValid {
				t.Errorf("BasicConstraintsValid: got false, want true")
			}
			if c.IsCA != tt.isCA {
				t.Errorf("IsCA: got %v, want %v", c.IsCA, tt.isCA)
			}
			if tt.isCA && (c.MaxPathLen != tt.maxPathLen || c.MaxPathLenZero) {
				t.Errorf("MaxPathLen, MaxPathLenZero: got %d, %v, want %d, false", c.MaxPathLen, c.MaxPathLenZero, tt.maxPathLen)
			}
			if got, want := c.NotBefore, Epoch.Add(-time.Hour); !got.Equal(want) {
				t.Errorf("NotBefore: got %v, want %v", got, want)
			}
			if got, want := c.NotAfter.Sub(c.NotBefore), tt.validity; got != want {
				t.Errorf("validity: got %v, want %v", got, want)
			}
			if !slices.Equal(c.ExtKeyUsage, tt.wantEKU) {
				t.Errorf("ExtKeyUsage: got %v, want %v", c.ExtKeyUsage, tt.wantEKU)
			}
			if err := c.CheckSignatureFrom(tt.parent); err != nil {
				t.Errorf("signature from %s: %v", tt.parent.Subject.CommonName, err)
			}
			if got, want := c.Subject.CommonName, tt.cn; got != want {
				t.Errorf("common name: got %q, want %q", got, want)
			}
			want, err := subjectKeyID(c.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c.SubjectKeyId, want) || len(c.SubjectKeyId) != 20 {
				t.Errorf("SubjectKeyId: got %x, want %x", c.SubjectKeyId, want)
			}
			if c != root.Cert && !bytes.Equal(c.AuthorityKeyId, tt.parent.SubjectKeyId) {
				t.Errorf("AuthorityKeyId: got %x, want %x", c.AuthorityKeyId, tt.parent.SubjectKeyId)
			}
		})
	}
}

func TestSubjectKeyIDIsTruncatedSHA256(t *testing.T) {
	// An independent computation: for P-256 the subjectPublicKey bits are
	// the uncompressed point, the tail of the SPKI DER.
	key, err := GenerateKey(ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	point, err := key.Public().(*ecdsa.PublicKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(point)
	got, err := subjectKeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if want := sum[:20]; !bytes.Equal(got, want) {
		t.Errorf("got %x, want %x", got, want)
	}
}

func TestClockDrivesValidity(t *testing.T) {
	later := time.Date(2031, time.June, 15, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		clock func() time.Time
		now   time.Time
	}{
		{name: "default epoch", clock: nil, now: Epoch},
		{name: "injected", clock: func() time.Time { return later }, now: later},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewT(t, WithClock(tt.clock))
			if got := p.Now(); !got.Equal(tt.now) {
				t.Fatalf("Now: got %v, want %v", got, tt.now)
			}
			leaf := p.Root("root").Intermediate("inter").Leaf("leaf")
			if got, want := leaf.Cert.NotBefore, tt.now.Add(-time.Hour); !got.Equal(want) {
				t.Errorf("NotBefore: got %v, want %v", got, want)
			}

			opts := leaf.VerifyOptions(x509.ExtKeyUsageClientAuth)
			if _, err := leaf.Cert.Verify(opts); err != nil {
				t.Fatalf("verify at %v: %v", opts.CurrentTime, err)
			}
			opts.CurrentTime = leaf.Cert.NotAfter.Add(time.Second)
			_, err := leaf.Cert.Verify(opts)
			var invalid x509.CertificateInvalidError
			if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
				t.Errorf("verify after NotAfter: got %v, want an Expired CertificateInvalidError", err)
			}
		})
	}
}

func TestSerialsUniqueAndIncreasing(t *testing.T) {
	p := NewT(t)
	root := p.Root("root")
	inter := root.Intermediate("inter")
	certs := []*x509.Certificate{root.Cert, inter.Cert}
	for range 5 {
		certs = append(certs, inter.Leaf("leaf").Cert)
	}
	csr, _, err := CSR("device")
	if err != nil {
		t.Fatal(err)
	}
	signed, err := inter.SignCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	certs = append(certs, signed, inter.OCSPResponder("ocsp").Cert)
	for i, c := range certs {
		if got, want := c.SerialNumber, big.NewInt(int64(i+1)); got.Cmp(want) != 0 {
			t.Errorf("serial of cert %d: got %v, want %v", i, got, want)
		}
	}

	// A second PKI has its own counter.
	if got, want := NewT(t).Root("other").Cert.SerialNumber, big.NewInt(1); got.Cmp(want) != 0 {
		t.Errorf("serial in new PKI: got %v, want %v", got, want)
	}
}

func TestSerialsConcurrent(t *testing.T) {
	p := New() // t.Fatalf must not run on other goroutines.
	root := p.Root("root")
	const workers, perWorker = 8, 10
	serials := make(chan int64, workers*perWorker)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				serials <- root.Leaf("leaf").Cert.SerialNumber.Int64()
			}
		})
	}
	wg.Wait()
	close(serials)
	var got []int64
	for s := range serials {
		got = append(got, s)
	}
	slices.Sort(got)
	for i, s := range got {
		// Serial 1 is the root.
		if want := int64(i + 2); s != want {
			t.Fatalf("sorted serial %d: got %d, want %d", i, s, want)
		}
	}
	if len(got) != workers*perWorker {
		t.Errorf("count: got %d, want %d", len(got), workers*perWorker)
	}
}

func TestValidityClipping(t *testing.T) {
	p := NewT(t)
	root := p.Root("root", Validity(2*365*24*time.Hour))
	short := root.Intermediate("short", Validity(30*24*time.Hour))
	explicit := Epoch.Add(10 * 365 * 24 * time.Hour)

	tests := []struct {
		name string
		cert *x509.Certificate
		want time.Time
	}{
		{name: "intermediate default clipped to root", cert: root.Intermediate("inter").Cert, want: root.Cert.NotAfter},
		{name: "leaf default clipped to issuer", cert: short.Leaf("leaf").Cert, want: short.Cert.NotAfter},
		{name: "leaf validity option clipped to issuer", cert: short.Leaf("leaf", Validity(60*24*time.Hour)).Cert, want: short.Cert.NotAfter},
		{name: "short leaf not clipped", cert: short.Leaf("leaf", Validity(time.Hour)).Cert, want: Epoch},
		{name: "explicit NotAfter honoured", cert: short.Leaf("leaf", NotAfter(explicit)).Cert, want: explicit},
		{name: "NotBefore shifts default", cert: root.Leaf("leaf", NotBefore(Epoch), Validity(time.Hour)).Cert, want: Epoch.Add(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.cert.NotAfter; !got.Equal(tt.want) {
				t.Errorf("NotAfter: got %v, want %v", got, tt.want)
			}
		})
	}
	if got, want := short.Cert.NotAfter, Epoch.Add(-time.Hour+30*24*time.Hour); !got.Equal(want) {
		t.Errorf("short intermediate NotAfter: got %v, want %v", got, want)
	}
}

func TestPathLen(t *testing.T) {
	p := NewT(t)
	root := p.Root("root")

	zero := root.Intermediate("zero", PathLen(0))
	if zero.Cert.MaxPathLen != 0 || !zero.Cert.MaxPathLenZero {
		t.Errorf("PathLen(0): got MaxPathLen %d, MaxPathLenZero %v, want 0, true", zero.Cert.MaxPathLen, zero.Cert.MaxPathLenZero)
	}
	one := root.Intermediate("one", PathLen(1))
	if one.Cert.MaxPathLen != 1 || one.Cert.MaxPathLenZero {
		t.Errorf("PathLen(1): got MaxPathLen %d, MaxPathLenZero %v, want 1, false", one.Cert.MaxPathLen, one.Cert.MaxPathLenZero)
	}

	tests := []struct {
		name    string
		leaf    *Leaf
		wantErr bool
	}{
		{name: "leaf under pathlen 0", leaf: zero.Leaf("leaf"), wantErr: false},
		{name: "sub-CA under pathlen 0", leaf: zero.Intermediate("sub").Leaf("leaf"), wantErr: true},
		{name: "sub-CA under pathlen 1", leaf: one.Intermediate("sub").Leaf("leaf"), wantErr: false},
		{name: "two sub-CAs under pathlen 1", leaf: one.Intermediate("sub").Intermediate("subsub").Leaf("leaf"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.leaf.Cert.Verify(tt.leaf.VerifyOptions())
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("verify error: got %v, want error %v", err, tt.wantErr)
			}
			var invalid x509.CertificateInvalidError
			if tt.wantErr && (!errors.As(err, &invalid) || invalid.Reason != x509.TooManyIntermediates) {
				t.Errorf("reason: got %v, want TooManyIntermediates", err)
			}
		})
	}
}

func TestPermittedDNSDomains(t *testing.T) {
	p := NewT(t)
	inter := p.Root("root").Intermediate("inter", PermittedDNSDomains("outpost.test"))
	if !inter.Cert.PermittedDNSDomainsCritical {
		t.Errorf("PermittedDNSDomainsCritical: got false, want true")
	}
	if got, want := inter.Cert.PermittedDNSDomains, []string{"outpost.test"}; !slices.Equal(got, want) {
		t.Errorf("PermittedDNSDomains: got %v, want %v", got, want)
	}

	tests := []struct {
		name    string
		dns     string
		wantErr bool
	}{
		{name: "inside", dns: "device.outpost.test", wantErr: false},
		{name: "apex", dns: "outpost.test", wantErr: false},
		{name: "outside", dns: "evil.example", wantErr: true},
		{name: "suffix trick", dns: "notoutpost.test", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf := inter.Leaf(tt.dns, DNSNames(tt.dns))
			_, err := leaf.Cert.Verify(leaf.VerifyOptions())
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("verify error: got %v, want error %v", err, tt.wantErr)
			}
			var invalid x509.CertificateInvalidError
			if tt.wantErr && (!errors.As(err, &invalid) || invalid.Reason != x509.CANotAuthorizedForThisName) {
				t.Errorf("reason: got %v, want CANotAuthorizedForThisName", err)
			}
		})
	}
}

func TestOCSPResponder(t *testing.T) {
	p := NewT(t)
	inter := p.Root("root").Intermediate("inter")
	resp := inter.OCSPResponder("ocsp", OCSPServer("http://ocsp.outpost.test"))

	if got, want := resp.Cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}; !slices.Equal(got, want) {
		t.Errorf("ExtKeyUsage: got %v, want %v", got, want)
	}
	if resp.Cert.IsCA {
		t.Errorf("IsCA: got true, want false")
	}
	var found bool
	for _, ext := range resp.Cert.Extensions {
		if !ext.Id.Equal(oidOCSPNoCheck) {
			continue
		}
		found = true
		if !bytes.Equal(ext.Value, []byte{0x05, 0x00}) {
			t.Errorf("nocheck value: got %x, want 0500", ext.Value)
		}
		if ext.Critical {
			t.Errorf("nocheck critical: got true, want false")
		}
	}
	if !found {
		t.Errorf("nocheck extension: got none, want one")
	}
	if got, want := resp.Cert.OCSPServer, []string{"http://ocsp.outpost.test"}; !slices.Equal(got, want) {
		t.Errorf("OCSPServer: got %v, want %v", got, want)
	}
	if _, err := resp.Cert.Verify(resp.VerifyOptions(x509.ExtKeyUsageOCSPSigning)); err != nil {
		t.Errorf("verify for OCSPSigning: %v", err)
	}
	if _, err := resp.Cert.Verify(resp.VerifyOptions(x509.ExtKeyUsageServerAuth)); err == nil {
		t.Errorf("verify for ServerAuth: got nil error, want one")
	}
}

func TestSignCSR(t *testing.T) {
	p := NewT(t)
	inter := p.Root("root").Intermediate("inter")
	subject := pkix.Name{CommonName: "device-42", Organization: []string{"Outpost"}, SerialNumber: "SN42"}
	csr, key, err := CSR("ignored",
		Subject(subject),
		DNSNames("device-42.outpost.test"),
		IPAddresses(net.ParseIP("192.0.2.7")),
		URIs("spiffe://outpost.test/device/42"),
		Emails("ops@outpost.test"),
		KeyAlgorithm(Ed25519),
	)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := key.(ed25519.PrivateKey); !ok {
		t.Fatalf("key type: got %T, want ed25519.PrivateKey", key)
	}

	t.Run("copies subject and SANs", func(t *testing.T) {
		cert, err := inter.SignCSR(csr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cert.RawSubject, csr.RawSubject) {
			t.Errorf("subject: got %v, want %v", cert.Subject, csr.Subject)
		}
		if got, want := cert.Subject.Organization, subject.Organization; !slices.Equal(got, want) {
			t.Errorf("organization: got %v, want %v", got, want)
		}
		if got, want := cert.DNSNames, []string{"device-42.outpost.test"}; !slices.Equal(got, want) {
			t.Errorf("DNSNames: got %v, want %v", got, want)
		}
		if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("192.0.2.7")) {
			t.Errorf("IPAddresses: got %v, want [192.0.2.7]", cert.IPAddresses)
		}
		if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://outpost.test/device/42" {
			t.Errorf("URIs: got %v, want [spiffe://outpost.test/device/42]", cert.URIs)
		}
		if got, want := cert.EmailAddresses, []string{"ops@outpost.test"}; !slices.Equal(got, want) {
			t.Errorf("EmailAddresses: got %v, want %v", got, want)
		}
		if !key.Public().(ed25519.PublicKey).Equal(cert.PublicKey) {
			t.Errorf("public key: got %v, want the CSR's", cert.PublicKey)
		}
		if err := cert.CheckSignatureFrom(inter.Cert); err != nil {
			t.Errorf("signature: %v", err)
		}
	})

	t.Run("options replace CSR values", func(t *testing.T) {
		cert, err := inter.SignCSR(csr, DNSNames("other.outpost.test"), Subject(pkix.Name{CommonName: "renamed"}))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := cert.DNSNames, []string{"other.outpost.test"}; !slices.Equal(got, want) {
			t.Errorf("DNSNames: got %v, want %v", got, want)
		}
		if got, want := cert.Subject.CommonName, "renamed"; got != want {
			t.Errorf("common name: got %q, want %q", got, want)
		}
		if got, want := len(cert.URIs), 1; got != want {
			t.Errorf("URIs kept: got %d, want %d", got, want)
		}
	})

	t.Run("rejects broken signature", func(t *testing.T) {
		broken := *csr
		broken.Signature = slices.Clone(csr.Signature)
		broken.Signature[0] ^= 0xff
		if _, err := inter.SignCSR(&broken); err == nil {
			t.Errorf("got nil error, want a signature error")
		}
	})

	t.Run("rejects CSR for another key", func(t *testing.T) {
		other, _, err := CSR("other")
		if err != nil {
			t.Fatal(err)
		}
		swapped := *csr
		swapped.PublicKey = other.PublicKey
		if _, err := inter.SignCSR(&swapped); err == nil {
			t.Errorf("got nil error, want a signature error")
		}
	})
}

func TestTLSHandshake(t *testing.T) {
	tests := []struct {
		name     string
		opts     []Option
		realTime bool
	}{
		{name: "fixed clock ECDSA", opts: nil},
		{name: "fixed clock RSA", opts: []Option{WithKeyType(RSA2048)}},
		{name: "fixed clock Ed25519", opts: []Option{WithKeyType(Ed25519)}},
		{name: "wall clock", opts: []Option{WithClock(time.Now)}, realTime: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewT(t, tt.opts...)
			root := p.Root("root")
			inter := root.Intermediate("inter")
			server := inter.Leaf("server", DNSNames("broker.outpost.test"))
			client := inter.Leaf("client", URIs("spiffe://outpost.test/device/1"))

			clock := p.Now
			if tt.realTime {
				clock = nil // crypto/tls uses time.Now.
			}
			serverConf := &tls.Config{
				Certificates: []tls.Certificate{server.TLSCertificate()},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    root.Pool(),
				Time:         clock,
			}
			clientConf := &tls.Config{
				Certificates: []tls.Certificate{client.TLSCertificate()},
				RootCAs:      root.Pool(),
				ServerName:   "broker.outpost.test",
				Time:         clock,
			}

			sc, cc := net.Pipe()
			defer sc.Close()
			defer cc.Close()
			deadline := time.Now().Add(30 * time.Second)
			_ = sc.SetDeadline(deadline)
			_ = cc.SetDeadline(deadline)

			type result struct {
				peer *x509.Certificate
				msg  string
				err  error
			}
			done := make(chan result, 1)
			go func() {
				srv := tls.Server(sc, serverConf)
				if err := srv.Handshake(); err != nil {
					done <- result{err: err}
					return
				}
				buf := make([]byte, 5)
				_, err := io.ReadFull(srv, buf)
				done <- result{peer: srv.ConnectionState().PeerCertificates[0], msg: string(buf), err: err}
				srv.Close()
			}()

			cli := tls.Client(cc, clientConf)
			if err := cli.Handshake(); err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			if _, err := cli.Write([]byte("hello")); err != nil {
				t.Fatalf("client write: %v", err)
			}
			res := <-done
			if res.err != nil {
				t.Fatalf("server: %v", res.err)
			}
			if got, want := res.msg, "hello"; got != want {
				t.Errorf("message: got %q, want %q", got, want)
			}
			if !res.peer.Equal(client.Cert) {
				t.Errorf("server saw client cert %v, want %v", res.peer.Subject, client.Cert.Subject)
			}
			state := cli.ConnectionState()
			if got, want := len(state.PeerCertificates), 2; got != want {
				t.Errorf("server sent %d certificates, want %d (leaf and intermediate)", got, want)
			}
			if got, want := len(state.VerifiedChains[0]), 3; got != want {
				t.Errorf("verified chain length: got %d, want %d", got, want)
			}
		})
	}
}

func TestTLSCertificateFields(t *testing.T) {
	p := NewT(t)
	inter := p.Root("root").Intermediate("inter")
	leaf := inter.Leaf("leaf")
	tc := leaf.TLSCertificate()
	if tc.Leaf != leaf.Cert {
		t.Errorf("Leaf: got %v, want the leaf certificate", tc.Leaf)
	}
	if got, want := len(tc.Certificate), 2; got != want {
		t.Fatalf("chain length: got %d, want %d", got, want)
	}
	if !bytes.Equal(tc.Certificate[1], inter.Cert.Raw) {
		t.Errorf("second certificate: got something else, want the intermediate")
	}
}

func TestCRL(t *testing.T) {
	p := NewT(t)
	root := p.Root("root")
	inter := root.Intermediate("inter")
	revokedLeaf := inter.Leaf("revoked")

	tests := []struct {
		name    string
		ca      *CA
		entries []x509.RevocationListEntry
		number  int64
	}{
		{name: "empty root CRL", ca: root, number: 1},
		{name: "intermediate with entry", ca: inter, number: 7, entries: []x509.RevocationListEntry{{
			SerialNumber:   revokedLeaf.Cert.SerialNumber,
			RevocationTime: Epoch.Add(-time.Minute),
			ReasonCode:     1, // keyCompromise
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			der, err := tt.ca.CRL(tt.entries, tt.number)
			if err != nil {
				t.Fatal(err)
			}
			crl, err := x509.ParseRevocationList(der)
			if err != nil {
				t.Fatalf("parsing: %v", err)
			}
			if err := crl.CheckSignatureFrom(tt.ca.Cert); err != nil {
				t.Errorf("signature from issuer: %v", err)
			}
			other := NewT(t).Root("other")
			if err := crl.CheckSignatureFrom(other.Cert); err == nil {
				t.Errorf("signature from another CA: got nil error, want one")
			}
			if !crl.ThisUpdate.Equal(Epoch) {
				t.Errorf("ThisUpdate: got %v, want %v", crl.ThisUpdate, Epoch)
			}
			if want := Epoch.Add(24 * time.Hour); !crl.NextUpdate.Equal(want) {
				t.Errorf("NextUpdate: got %v, want %v", crl.NextUpdate, want)
			}
			if got := crl.Number.Int64(); got != tt.number {
				t.Errorf("Number: got %d, want %d", got, tt.number)
			}
			if !bytes.Equal(crl.AuthorityKeyId, tt.ca.Cert.SubjectKeyId) {
				t.Errorf("AuthorityKeyId: got %x, want %x", crl.AuthorityKeyId, tt.ca.Cert.SubjectKeyId)
			}
			if got, want := len(crl.RevokedCertificateEntries), len(tt.entries); got != want {
				t.Fatalf("entries: got %d, want %d", got, want)
			}
			for i, e := range crl.RevokedCertificateEntries {
				if e.SerialNumber.Cmp(tt.entries[i].SerialNumber) != 0 || e.ReasonCode != tt.entries[i].ReasonCode {
					t.Errorf("entry %d: got serial %v reason %d, want %v reason %d", i, e.SerialNumber, e.ReasonCode, tt.entries[i].SerialNumber, tt.entries[i].ReasonCode)
				}
			}
		})
	}
}

func TestChainsAndPEM(t *testing.T) {
	p := NewT(t)
	root := p.Root("root")
	inter := root.Intermediate("inter")
	sub := inter.Intermediate("sub")
	leaf := sub.Leaf("leaf")

	subjects := func(certs []*x509.Certificate) []string {
		var s []string
		for _, c := range certs {
			s = append(s, c.Subject.CommonName)
		}
		return s
	}
	parsePEM := func(b []byte) []string {
		var s []string
		for {
			var block *pem.Block
			block, b = pem.Decode(b)
			if block == nil {
				return s
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			s = append(s, c.Subject.CommonName)
		}
	}

	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{name: "CA.Chain", got: subjects(sub.Chain()), want: []string{"sub", "inter", "root"}},
		{name: "CA.ChainPEM", got: parsePEM(sub.ChainPEM()), want: []string{"sub", "inter", "root"}},
		{name: "root CA.Chain", got: subjects(root.Chain()), want: []string{"root"}},
		{name: "CA.CertPEM", got: parsePEM(sub.CertPEM()), want: []string{"sub"}},
		{name: "Leaf.Chain", got: subjects(leaf.Chain()), want: []string{"leaf", "sub", "inter"}},
		{name: "Leaf.ChainPEM", got: parsePEM(leaf.ChainPEM()), want: []string{"leaf", "sub", "inter"}},
		{name: "Leaf.CertPEM", got: parsePEM(leaf.CertPEM()), want: []string{"leaf"}},
		{name: "CA.Root", got: []string{sub.Root().Cert.Subject.CommonName}, want: []string{"root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !slices.Equal(tt.got, tt.want) {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
	t.Run("CA.Pool", func(t *testing.T) {
		want := x509.NewCertPool()
		want.AddCert(root.Cert)
		if !sub.Pool().Equal(want) {
			t.Error("got a pool other than the hierarchy's root alone")
		}
	})

	for _, kp := range []struct {
		name string
		pem  []byte
		key  crypto.Signer
	}{
		{name: "CA.KeyPEM", pem: sub.KeyPEM(), key: sub.Key},
		{name: "Leaf.KeyPEM", pem: leaf.KeyPEM(), key: leaf.Key},
	} {
		t.Run(kp.name, func(t *testing.T) {
			block, _ := pem.Decode(kp.pem)
			if block == nil || block.Type != "PRIVATE KEY" {
				t.Fatalf("block: got %v, want a PRIVATE KEY block", block)
			}
			key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(kp.key.Public()) {
				t.Errorf("key: got a different key, want the certificate's")
			}
		})
	}
}

func TestWriteFiles(t *testing.T) {
	p := NewT(t)
	inter := p.Root("Outpost Root").Intermediate("Outpost Issuing CA")
	leaf := inter.Leaf("broker", DNSNames("broker.outpost.test"))
	dir := t.TempDir()

	tests := []struct {
		name      string
		write     func(string) (string, string, error)
		wantCerts int
		wantBase  string
	}{
		{name: "leaf", write: leaf.WriteFiles, wantCerts: 2, wantBase: "broker-3"},
		{name: "ca", write: inter.WriteFiles, wantCerts: 1, wantBase: "outpost-issuing-ca-2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certFile, keyFile, err := tt.write(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := certFile, filepath.Join(dir, tt.wantBase+".crt"); got != want {
				t.Errorf("cert file: got %q, want %q", got, want)
			}
			for _, f := range []struct {
				path string
				mode os.FileMode
			}{{certFile, 0o644}, {keyFile, 0o600}} {
				fi, err := os.Stat(f.path)
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode().Perm(); got != f.mode {
					t.Errorf("mode of %s: got %v, want %v", f.path, got, f.mode)
				}
			}
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatalf("loading pair: %v", err)
			}
			if got := len(pair.Certificate); got != tt.wantCerts {
				t.Errorf("certificates in file: got %d, want %d", got, tt.wantCerts)
			}
		})
	}

	t.Run("existing key file gets 0600", func(t *testing.T) {
		_, keyFile, err := leaf.WriteFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(keyFile, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := leaf.WriteFiles(dir); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
			t.Errorf("mode: got %v, want %v", got, want)
		}
	})
}

func TestOptions(t *testing.T) {
	p := NewT(t)
	root := p.Root("root")
	shared, err := GenerateKey(ECDSAP384)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Key reuses the key", func(t *testing.T) {
		a := root.Leaf("a", Key(shared))
		b := root.Intermediate("b", Key(shared))
		if a.Key != shared || b.Key != shared {
			t.Errorf("keys: got %v and %v, want the shared key", a.Key, b.Key)
		}
		if !shared.Public().(*ecdsa.PublicKey).Equal(a.Cert.PublicKey) {
			t.Errorf("leaf public key: got another key, want the shared one")
		}
	})
	t.Run("KeyAlgorithm overrides default", func(t *testing.T) {
		if got := keyTypeOf(root.Leaf("l", KeyAlgorithm(Ed25519)).Cert.PublicKey); got != Ed25519 {
			t.Errorf("got %v, want %v", got, Ed25519)
		}
	})
	t.Run("KeyUsage and ExtKeyUsage", func(t *testing.T) {
		c := root.Leaf("l", KeyUsage(x509.KeyUsageContentCommitment), ExtKeyUsage(x509.ExtKeyUsageCodeSigning)).Cert
		if c.KeyUsage != x509.KeyUsageContentCommitment {
			t.Errorf("KeyUsage: got %v, want %v", c.KeyUsage, x509.KeyUsageContentCommitment)
		}
		if want := []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}; !slices.Equal(c.ExtKeyUsage, want) {
			t.Errorf("ExtKeyUsage: got %v, want %v", c.ExtKeyUsage, want)
		}
		if c := root.Leaf("l", ExtKeyUsage()).Cert; len(c.ExtKeyUsage) != 0 {
			t.Errorf("empty ExtKeyUsage: got %v, want none", c.ExtKeyUsage)
		}
	})
	t.Run("Subject keeps common name argument", func(t *testing.T) {
		c := root.Leaf("cn", Subject(pkix.Name{Organization: []string{"Outpost"}})).Cert
		if c.Subject.CommonName != "cn" || !slices.Equal(c.Subject.Organization, []string{"Outpost"}) {
			t.Errorf("subject: got %v, want CN=cn,O=Outpost", c.Subject)
		}
	})
	t.Run("distribution points", func(t *testing.T) {
		c := root.Intermediate("i", CRLDistributionPoints("http://crl.outpost.test/root.crl"), OCSPServer("http://ocsp.outpost.test")).Cert
		if want := []string{"http://crl.outpost.test/root.crl"}; !slices.Equal(c.CRLDistributionPoints, want) {
			t.Errorf("CRLDistributionPoints: got %v, want %v", c.CRLDistributionPoints, want)
		}
		if want := []string{"http://ocsp.outpost.test"}; !slices.Equal(c.OCSPServer, want) {
			t.Errorf("OCSPServer: got %v, want %v", c.OCSPServer, want)
		}
	})
}

// fatalTB records Fatalf and stops the goroutine as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestInvalidOptionsFail(t *testing.T) {
	tests := []struct {
		name  string
		issue func(p *PKI)
		want  string
	}{
		{name: "bad uri", issue: func(p *PKI) { p.Root("r", URIs("://bad")) }, want: "parsing uri san"},
		{name: "path length on leaf", issue: func(p *PKI) { p.Root("r").Leaf("l", PathLen(0)) }, want: "path length applies only to ca"},
		{name: "name constraints on leaf", issue: func(p *PKI) { p.Root("r").Leaf("l", PermittedDNSDomains("x.test")) }, want: "name constraints apply only to ca"},
		{name: "negative validity", issue: func(p *PKI) { p.Root("r", Validity(-time.Hour)) }, want: "validity -1h0m0s is not positive"},
		{name: "NotAfter before NotBefore", issue: func(p *PKI) { p.Root("r", NotAfter(Epoch.Add(-2*time.Hour))) }, want: "is not later than not before"},
		{name: "unknown key type", issue: func(p *PKI) { p.Root("r", KeyAlgorithm(KeyType(99))) }, want: "unknown key type KeyType(99)"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/NewT", func(t *testing.T) {
			tb := &fatalTB{}
			done := make(chan struct{})
			go func() {
				defer close(done)
				tt.issue(NewT(tb))
			}()
			<-done
			if !strings.Contains(tb.msg, tt.want) {
				t.Errorf("Fatalf message: got %q, want it to contain %q", tb.msg, tt.want)
			}
		})
		t.Run(tt.name+"/New", func(t *testing.T) {
			defer func() {
				r := recover()
				err, ok := r.(error)
				if !ok || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("panic: got %v, want an error containing %q", r, tt.want)
				}
			}()
			tt.issue(New())
		})
	}
}

func TestCSRErrors(t *testing.T) {
	if _, _, err := CSR("x", URIs("://bad")); err == nil {
		t.Errorf("bad uri: got nil error, want one")
	}
	ca := NewT(t).Root("root")
	if _, err := ca.SignCSR(mustCSR(t), URIs("://bad")); err == nil {
		t.Errorf("SignCSR bad option: got nil error, want one")
	}
}

func mustCSR(t *testing.T) *x509.CertificateRequest {
	t.Helper()
	csr, _, err := CSR("device")
	if err != nil {
		t.Fatal(err)
	}
	return csr
}
