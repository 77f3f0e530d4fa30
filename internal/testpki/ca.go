package testpki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"time"
)

// oidOCSPNoCheck is id-pkix-ocsp-nocheck (RFC 6960 section 4.2.2.2.1).
var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// asn1Null is the DER encoding of ASN.1 NULL, the nocheck extension's value.
var asn1Null = []byte{0x05, 0x00}

// CA is a certificate authority in a test hierarchy. Read its fields freely
// but do not modify them; its methods are safe for concurrent use.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// Key is the CA's private key.
	Key crypto.Signer
	// Parent is the issuing CA, nil for a root.
	Parent *CA

	pki *PKI
}

// newCA issues a CA certificate below parent, or a self-signed root when
// parent is nil.
func (p *PKI) newCA(parent *CA, commonName string, validity time.Duration, opts []CertOption) (*CA, error) {
	c, err := newCertConfig(opts)
	if err != nil {
		return nil, err
	}
	key, err := c.signer(p.keyType)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{Subject: c.name(commonName)}
	prof := profile{
		isCA:     true,
		validity: validity,
		keyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	cert, err := p.issue(parent, tmpl, key.Public(), key, prof, c)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Parent: parent, pki: p}, nil
}

// Intermediate issues a subordinate CA signed by ca: KeyUsage
// CertSign|CRLSign, path length unconstrained unless [PathLen] says
// otherwise, valid for 5 years clipped to ca's NotAfter.
func (ca *CA) Intermediate(commonName string, opts ...CertOption) *CA {
	p := ca.pki
	if p.tb != nil {
		p.tb.Helper()
	}
	sub, err := p.newCA(ca, commonName, intermediateValidity, opts)
	if err != nil {
		p.fail(fmt.Errorf("issuing intermediate %q: %w", commonName, err))
		return nil
	}
	return sub
}

// Leaf issues an end-entity certificate signed by ca: KeyUsage
// DigitalSignature (plus KeyEncipherment for RSA keys), ExtKeyUsage
// ServerAuth and ClientAuth, valid for 1 year clipped to ca's NotAfter. No
// SAN is added implicitly; pass [DNSNames] for TLS servers.
func (ca *CA) Leaf(commonName string, opts ...CertOption) *Leaf {
	p := ca.pki
	if p.tb != nil {
		p.tb.Helper()
	}
	l, err := ca.newLeaf(commonName, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, nil, opts)
	if err != nil {
		p.fail(fmt.Errorf("issuing leaf %q: %w", commonName, err))
		return nil
	}
	return l
}

// OCSPResponder issues a delegated OCSP responder certificate signed by ca:
// a leaf with ExtKeyUsage OCSPSigning and the non-critical
// id-pkix-ocsp-nocheck extension (1.3.6.1.5.5.7.48.1.5, value NULL).
func (ca *CA) OCSPResponder(commonName string, opts ...CertOption) *Leaf {
	p := ca.pki
	if p.tb != nil {
		p.tb.Helper()
	}
	noCheck := []pkix.Extension{{Id: oidOCSPNoCheck, Value: asn1Null}}
	l, err := ca.newLeaf(commonName, []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}, noCheck, opts)
	if err != nil {
		p.fail(fmt.Errorf("issuing ocsp responder %q: %w", commonName, err))
		return nil
	}
	return l
}

func (ca *CA) newLeaf(commonName string, eku []x509.ExtKeyUsage, extra []pkix.Extension, opts []CertOption) (*Leaf, error) {
	c, err := newCertConfig(opts)
	if err != nil {
		return nil, err
	}
	key, err := c.signer(ca.pki.keyType)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{Subject: c.name(commonName)}
	prof := profile{
		validity:    leafValidity,
		keyUsage:    leafKeyUsage(key.Public()),
		extKeyUsage: eku,
		extra:       extra,
	}
	cert, err := ca.pki.issue(ca, tmpl, key.Public(), nil, prof, c)
	if err != nil {
		return nil, err
	}
	return &Leaf{Cert: cert, Key: key, Issuer: ca}, nil
}

// SignCSR checks csr's signature and issues a leaf certificate for its key
// with the leaf defaults of [CA.Leaf]. The subject and the DNS, IP, URI and
// email SANs are copied from the CSR; options of the same kind replace them.
// Other extensions the CSR requests are ignored.
func (ca *CA) SignCSR(csr *x509.CertificateRequest, opts ...CertOption) (*x509.Certificate, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("checking csr signature: %w", err)
	}
	c, err := newCertConfig(opts)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		RawSubject:     csr.RawSubject,
		DNSNames:       csr.DNSNames,
		IPAddresses:    csr.IPAddresses,
		URIs:           csr.URIs,
		EmailAddresses: csr.EmailAddresses,
	}
	if c.subject != nil {
		tmpl.RawSubject = nil
		tmpl.Subject = c.name(csr.Subject.CommonName)
	}
	prof := profile{
		validity:    leafValidity,
		keyUsage:    leafKeyUsage(csr.PublicKey),
		extKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	cert, err := ca.pki.issue(ca, tmpl, csr.PublicKey, nil, prof, c)
	if err != nil {
		return nil, fmt.Errorf("signing csr: %w", err)
	}
	return cert, nil
}

// CRL returns a DER certificate revocation list signed by ca with the given
// entries and CRL number. ThisUpdate is the PKI's clock and NextUpdate 24
// hours later.
func (ca *CA) CRL(revoked []x509.RevocationListEntry, number int64) ([]byte, error) {
	now := ca.pki.clock().UTC().Truncate(time.Second)
	tmpl := &x509.RevocationList{
		Number:                    big.NewInt(number),
		ThisUpdate:                now,
		NextUpdate:                now.Add(crlValidity),
		RevokedCertificateEntries: revoked,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("creating crl: %w", err)
	}
	return der, nil
}

// Root returns the root of ca's hierarchy (ca itself for a root).
func (ca *CA) Root() *CA {
	r := ca
	for r.Parent != nil {
		r = r.Parent
	}
	return r
}

// Chain returns the CA certificates from ca up to and including the root.
func (ca *CA) Chain() []*x509.Certificate {
	var chain []*x509.Certificate
	for c := ca; c != nil; c = c.Parent {
		chain = append(chain, c.Cert)
	}
	return chain
}

// Pool returns a new pool holding only the root of ca's hierarchy, for
// x509.VerifyOptions.Roots, tls.Config.RootCAs or tls.Config.ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root().Cert)
	return pool
}

// CertPEM returns ca's certificate as PEM.
func (ca *CA) CertPEM() []byte {
	return certsPEM(ca.Cert)
}

// ChainPEM returns [CA.Chain] as concatenated PEM, ca first.
func (ca *CA) ChainPEM() []byte {
	return certsPEM(ca.Chain()...)
}

// KeyPEM returns ca's private key as unencrypted PKCS#8 PEM. It fails (see
// the package doc) if the key cannot be marshaled, e.g. an HSM key.
func (ca *CA) KeyPEM() []byte {
	p := ca.pki
	if p.tb != nil {
		p.tb.Helper()
	}
	b, err := keyPEM(ca.Key)
	if err != nil {
		p.fail(err)
		return nil
	}
	return b
}

// WriteFiles writes [CA.CertPEM] (mode 0644) and the unencrypted key (mode
// 0600) into dir, named after the common name and serial number, and
// returns their paths.
func (ca *CA) WriteFiles(dir string) (certFile, keyFile string, err error) {
	return writeFiles(dir, ca.Cert, ca.CertPEM(), ca.Key)
}
