package testpki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
)

// Leaf is an end-entity certificate and its key. Read its fields freely but
// do not modify them.
type Leaf struct {
	// Cert is the end-entity certificate.
	Cert *x509.Certificate
	// Key is the certificate's private key.
	Key crypto.Signer
	// Issuer is the CA that signed Cert.
	Issuer *CA
}

// Chain returns the leaf certificate followed by its issuing CAs, excluding
// the root: what a TLS peer sends.
func (l *Leaf) Chain() []*x509.Certificate {
	chain := []*x509.Certificate{l.Cert}
	for c := l.Issuer; c != nil && c.Parent != nil; c = c.Parent {
		chain = append(chain, c.Cert)
	}
	return chain
}

// CertPEM returns the leaf certificate alone as PEM.
func (l *Leaf) CertPEM() []byte {
	return certsPEM(l.Cert)
}

// ChainPEM returns [Leaf.Chain] as concatenated PEM, leaf first.
func (l *Leaf) ChainPEM() []byte {
	return certsPEM(l.Chain()...)
}

// KeyPEM returns the private key as unencrypted PKCS#8 PEM. It fails (see
// the package doc) if the key cannot be marshaled, e.g. an HSM key.
func (l *Leaf) KeyPEM() []byte {
	p := l.Issuer.pki
	if p.tb != nil {
		p.tb.Helper()
	}
	b, err := keyPEM(l.Key)
	if err != nil {
		p.fail(err)
		return nil
	}
	return b
}

// TLSCertificate returns the leaf as a tls.Certificate with the
// intermediates in its chain and Leaf set.
func (l *Leaf) TLSCertificate() tls.Certificate {
	chain := l.Chain()
	der := make([][]byte, len(chain))
	for i, c := range chain {
		der[i] = c.Raw
	}
	return tls.Certificate{Certificate: der, PrivateKey: l.Key, Leaf: l.Cert}
}

// VerifyOptions returns options that verify the leaf against its own
// hierarchy at the PKI's clock: the root as the only trust anchor, the
// intermediates, and the given extended key usages (crypto/x509 defaults to
// ServerAuth when none are given).
func (l *Leaf) VerifyOptions(usages ...x509.ExtKeyUsage) x509.VerifyOptions {
	inter := x509.NewCertPool()
	for _, c := range l.Chain()[1:] {
		inter.AddCert(c)
	}
	return x509.VerifyOptions{
		Roots:         l.Issuer.Pool(),
		Intermediates: inter,
		CurrentTime:   l.Issuer.pki.clock(),
		KeyUsages:     usages,
	}
}

// WriteFiles writes [Leaf.ChainPEM] (mode 0644) and the unencrypted key
// (mode 0600) into dir, named after the common name and serial number, and
// returns their paths. The pair loads with tls.LoadX509KeyPair.
func (l *Leaf) WriteFiles(dir string) (certFile, keyFile string, err error) {
	return writeFiles(dir, l.Cert, l.ChainPEM(), l.Key)
}
