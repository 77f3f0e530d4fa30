package issuer

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
)

// subjectPublicKeyInfo mirrors the ASN.1 SubjectPublicKeyInfo, to get at the
// subjectPublicKey BIT STRING.
type subjectPublicKeyInfo struct {
	Algorithm        pkix.AlgorithmIdentifier
	SubjectPublicKey asn1.BitString
}

// SubjectKeyID returns the key identifier of pub by RFC 7093 section 2
// method 1: the leftmost 160 bits of the SHA-256 hash of the
// subjectPublicKey BIT STRING value (without tag, length and unused-bits
// octet). It works for any public key x509 can marshal (*rsa.PublicKey,
// *ecdsa.PublicKey, ed25519.PublicKey), so for any crypto.Signer's Public().
// It is the SubjectKeyId this package puts in every certificate it makes.
func SubjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("computing subject key id: %w", err)
	}
	var spki subjectPublicKeyInfo
	rest, err := asn1.Unmarshal(der, &spki)
	if err != nil {
		return nil, fmt.Errorf("computing subject key id: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("computing subject key id: trailing data after public key")
	}
	h := sha256.Sum256(spki.SubjectPublicKey.Bytes)
	return h[:20], nil
}
