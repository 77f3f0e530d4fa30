package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"sync/atomic"
	"testing"
	"time"
)

// Epoch is the fixed time a PKI's clock returns unless [WithClock] says
// otherwise: 2026-01-01T00:00:00Z. Treat it as a constant.
var Epoch = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// Default validity periods and the backdating applied to NotBefore.
const (
	// skew is subtracted from the clock to get a default NotBefore, so that
	// peers whose clocks run a little behind still accept fresh certificates.
	skew = time.Hour

	rootValidity         = 10 * 365 * 24 * time.Hour
	intermediateValidity = 5 * 365 * 24 * time.Hour
	leafValidity         = 365 * 24 * time.Hour
	crlValidity          = 24 * time.Hour
)

// KeyType names a key algorithm and size. The zero value means "the PKI's
// default" (see [WithKeyType]).
type KeyType int

// Supported key types.
const (
	ECDSAP256 KeyType = iota + 1 // ECDSA on P-256; the default.
	ECDSAP384                    // ECDSA on P-384.
	RSA2048                      // RSA, 2048-bit modulus.
	RSA3072                      // RSA, 3072-bit modulus.
	Ed25519                      // Ed25519.
)

// KeyTypes lists every supported key type, for table tests that cover all
// of them.
var KeyTypes = []KeyType{ECDSAP256, ECDSAP384, RSA2048, RSA3072, Ed25519}

// String returns the constant's name, e.g. "ECDSAP256".
func (k KeyType) String() string {
	switch k {
	case ECDSAP256:
		return "ECDSAP256"
	case ECDSAP384:
		return "ECDSAP384"
	case RSA2048:
		return "RSA2048"
	case RSA3072:
		return "RSA3072"
	case Ed25519:
		return "Ed25519"
	}
	return fmt.Sprintf("KeyType(%d)", int(k))
}

// GenerateKey returns a fresh private key of type k. It is exported so tests
// can make a key up front and pass it to several certificates or CSRs with
// [Key].
func GenerateKey(k KeyType) (crypto.Signer, error) {
	switch k {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case Ed25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("unknown key type %v", k)
}

// PKI is a factory for test certificate hierarchies that share a clock, a
// default key type and a serial number counter. Its methods are safe for
// concurrent use (but see the package doc about t.Fatalf and goroutines).
type PKI struct {
	clock   func() time.Time
	keyType KeyType
	tb      testing.TB
	serial  atomic.Int64
}

// Option configures a PKI.
type Option func(*PKI)

// WithClock sets the clock used for NotBefore, default NotAfter and CRL
// update times. The default always returns [Epoch]; pass time.Now when the
// certificates meet code that checks them against the wall clock.
func WithClock(now func() time.Time) Option {
	return func(p *PKI) {
		if now != nil {
			p.clock = now
		}
	}
}

// WithKeyType sets the key type generated for certificates and CAs that do
// not ask for another with [KeyAlgorithm] or [Key]. The default is
// [ECDSAP256].
func WithKeyType(k KeyType) Option {
	return func(p *PKI) {
		if k != 0 {
			p.keyType = k
		}
	}
}

// New returns a PKI whose issuing methods panic on failure.
func New(opts ...Option) *PKI {
	p := &PKI{
		clock:   func() time.Time { return Epoch },
		keyType: ECDSAP256,
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// NewT returns a PKI whose issuing methods report failure with tb.Fatalf.
func NewT(tb testing.TB, opts ...Option) *PKI {
	p := New(opts...)
	p.tb = tb
	return p
}

// Now returns the PKI's clock reading. Use it for x509.VerifyOptions.CurrentTime
// and tls.Config.Time so verification agrees with issuance.
func (p *PKI) Now() time.Time {
	return p.clock()
}

// Root issues a self-signed root CA: IsCA with KeyUsage CertSign|CRLSign,
// valid for 10 years from the clock minus one hour unless options say
// otherwise.
func (p *PKI) Root(commonName string, opts ...CertOption) *CA {
	if p.tb != nil {
		p.tb.Helper()
	}
	ca, err := p.newCA(nil, commonName, rootValidity, opts)
	if err != nil {
		p.fail(fmt.Errorf("issuing root %q: %w", commonName, err))
		return nil
	}
	return ca
}

// fail reports err through the PKI's testing.TB, or panics when there is none.
// Callers must still return after it, for a TB whose Fatalf returns.
func (p *PKI) fail(err error) {
	if p.tb != nil {
		p.tb.Helper()
		p.tb.Fatalf("testpki: %v", err)
		return
	}
	panic(fmt.Errorf("testpki: %w", err))
}

// nextSerial returns the next serial number: 1, 2, 3, ... per PKI.
func (p *PKI) nextSerial() *big.Int {
	return big.NewInt(p.serial.Add(1))
}

// profile holds what differs between kinds of certificate.
type profile struct {
	isCA        bool
	validity    time.Duration
	keyUsage    x509.KeyUsage
	extKeyUsage []x509.ExtKeyUsage
	extra       []pkix.Extension
}

// issue fills in tmpl (which carries the subject and SANs) from prof and c,
// and signs it with parent, or self-signs it with self when parent is nil.
func (p *PKI) issue(parent *CA, tmpl *x509.Certificate, pub crypto.PublicKey, self crypto.Signer, prof profile, c *certConfig) (*x509.Certificate, error) {
	if !prof.isCA && c.pathLen != nil {
		return nil, errors.New("path length applies only to ca certificates")
	}
	if !prof.isCA && len(c.permittedDNS) > 0 {
		return nil, errors.New("name constraints apply only to ca certificates")
	}

	notBefore := c.notBefore
	if notBefore.IsZero() {
		notBefore = p.clock().Add(-skew)
	}
	notAfter := c.notAfter
	if notAfter.IsZero() {
		validity := prof.validity
		if c.validity != 0 {
			validity = c.validity
		}
		notAfter = notBefore.Add(validity)
		if parent != nil && notAfter.After(parent.Cert.NotAfter) {
			notAfter = parent.Cert.NotAfter
		}
	}
	// Certificates carry whole seconds; truncate so the template and the
	// parsed certificate agree.
	notBefore = notBefore.UTC().Truncate(time.Second)
	notAfter = notAfter.UTC().Truncate(time.Second)
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("not after %v is not later than not before %v", notAfter, notBefore)
	}

	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}

	tmpl.SerialNumber = p.nextSerial()
	tmpl.NotBefore = notBefore
	tmpl.NotAfter = notAfter
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = prof.isCA
	tmpl.SubjectKeyId = ski
	tmpl.KeyUsage = prof.keyUsage
	if c.keyUsage != nil {
		tmpl.KeyUsage = *c.keyUsage
	}
	tmpl.ExtKeyUsage = prof.extKeyUsage
	if c.extKeyUsageSet {
		tmpl.ExtKeyUsage = c.extKeyUsage
	}
	if prof.isCA {
		tmpl.MaxPathLen = -1
		if c.pathLen != nil {
			tmpl.MaxPathLen = *c.pathLen
			tmpl.MaxPathLenZero = *c.pathLen == 0
		}
	}
	if len(c.permittedDNS) > 0 {
		tmpl.PermittedDNSDomains = c.permittedDNS
		tmpl.PermittedDNSDomainsCritical = true
	}
	tmpl.CRLDistributionPoints = c.crlDPs
	tmpl.OCSPServer = c.ocspServers
	tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, prof.extra...)
	c.applyNames(tmpl)

	parentCert, signer := tmpl, self
	if parent != nil {
		parentCert, signer = parent.Cert, parent.Key
		tmpl.AuthorityKeyId = parent.Cert.SubjectKeyId
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("creating certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	return cert, nil
}

// subjectKeyID computes a key identifier with RFC 7093 section 2 method 1:
// the leftmost 160 bits of the SHA-256 hash of the subjectPublicKey BIT
// STRING value (excluding tag, length and unused-bits octet). This is what
// crypto/x509 itself generates since Go 1.25 and avoids SHA-1.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshaling public key: %w", err)
	}
	var spki struct {
		Algorithm        pkix.AlgorithmIdentifier
		SubjectPublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	sum := sha256.Sum256(spki.SubjectPublicKey.Bytes)
	return sum[:20], nil
}

// leafKeyUsage is the default KeyUsage for an end-entity key: RSA keys may
// also be used for key transport.
func leafKeyUsage(pub crypto.PublicKey) x509.KeyUsage {
	if _, ok := pub.(*rsa.PublicKey); ok {
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	return x509.KeyUsageDigitalSignature
}
