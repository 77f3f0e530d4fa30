package caservice

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// MaxPEMSize caps a PEM certificate accepted from a client.
const MaxPEMSize = 64 << 10

// ParseCertificatePEM parses exactly one PEM certificate (or raw DER).
func ParseCertificatePEM(b []byte) (*x509.Certificate, error) {
	if len(b) > MaxPEMSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxPEMSize)
	}
	block, rest := pem.Decode(b)
	if block == nil {
		if c, err := x509.ParseCertificate(b); err == nil {
			return c, nil
		}
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("PEM block is %q, want CERTIFICATE", block.Type)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("more than one PEM block: send one certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}
