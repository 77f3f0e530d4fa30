package testpki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
)

// CSR returns a signed PKCS#10 certificate request for commonName and the
// key it was made with, for enrollment tests. [Subject], [DNSNames],
// [IPAddresses], [URIs], [Emails], [KeyAlgorithm] (default [ECDSAP256]) and
// [Key] apply; other options are ignored.
func CSR(commonName string, opts ...CertOption) (*x509.CertificateRequest, crypto.Signer, error) {
	c, err := newCertConfig(opts)
	if err != nil {
		return nil, nil, err
	}
	key, err := c.signer(ECDSAP256)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.CertificateRequest{
		Subject:        c.name(commonName),
		DNSNames:       c.dnsNames,
		IPAddresses:    c.ips,
		URIs:           c.uris,
		EmailAddresses: c.emails,
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating csr: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing csr: %w", err)
	}
	return csr, key, nil
}
