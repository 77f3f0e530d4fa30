package issuer

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
)

var (
	oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 15}
)

// extKeyUsageOIDs maps the extended key usages x509 knows to their OIDs.
var extKeyUsageOIDs = []struct {
	usage x509.ExtKeyUsage
	oid   asn1.ObjectIdentifier
}{
	{x509.ExtKeyUsageAny, asn1.ObjectIdentifier{2, 5, 29, 37, 0}},
	{x509.ExtKeyUsageServerAuth, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}},
	{x509.ExtKeyUsageClientAuth, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}},
	{x509.ExtKeyUsageCodeSigning, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 3}},
	{x509.ExtKeyUsageEmailProtection, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 4}},
	{x509.ExtKeyUsageIPSECEndSystem, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 5}},
	{x509.ExtKeyUsageIPSECTunnel, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 6}},
	{x509.ExtKeyUsageIPSECUser, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 7}},
	{x509.ExtKeyUsageTimeStamping, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 8}},
	{x509.ExtKeyUsageOCSPSigning, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 9}},
	{x509.ExtKeyUsageMicrosoftServerGatedCrypto, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 10, 3, 3}},
	{x509.ExtKeyUsageNetscapeServerGatedCrypto, asn1.ObjectIdentifier{2, 16, 840, 1, 113730, 4, 1}},
	{x509.ExtKeyUsageMicrosoftCommercialCodeSigning, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 1, 22}},
	{x509.ExtKeyUsageMicrosoftKernelCodeSigning, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 61, 1, 1}},
}

// knownExtKeyUsage reports whether u is one of the values x509 defines.
func knownExtKeyUsage(u x509.ExtKeyUsage) bool {
	for _, e := range extKeyUsageOIDs {
		if e.usage == u {
			return true
		}
	}
	return false
}

// leafKeyUsages are the key usage bits an end-entity profile may grant.
const leafKeyUsages = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
	x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageKeyAgreement |
	x509.KeyUsageEncipherOnly | x509.KeyUsageDecipherOnly

// keyUsagesFor returns the key usage bits that make sense for pub's
// algorithm among leaf usages: RSA signs and encrypts (RFC 4055); ECDSA keys
// sign and agree keys, never encipher (RFC 5480 section 3); Ed25519 keys only
// sign (RFC 8410 section 5).
func keyUsagesFor(pub any) x509.KeyUsage {
	switch pub.(type) {
	case *rsa.PublicKey:
		return x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment
	case *ecdsa.PublicKey:
		return x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyAgreement | x509.KeyUsageEncipherOnly | x509.KeyUsageDecipherOnly
	case ed25519.PublicKey:
		return x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
	}
	return 0
}

// fixKeyUsage drops encipherOnly and decipherOnly when keyAgreement is not
// set: they qualify keyAgreement and mean nothing alone (RFC 5280 4.2.1.3).
func fixKeyUsage(u x509.KeyUsage) x509.KeyUsage {
	if u&x509.KeyUsageKeyAgreement == 0 {
		u &^= x509.KeyUsageEncipherOnly | x509.KeyUsageDecipherOnly
	}
	return u
}

// findExtension returns the value of the CSR's requested extension id, and
// an error if it is requested more than once.
func findExtension(exts []pkix.Extension, id asn1.ObjectIdentifier) ([]byte, bool, error) {
	var val []byte
	found := false
	for _, e := range exts {
		if !e.Id.Equal(id) {
			continue
		}
		if found {
			return nil, false, fmt.Errorf("extension %v requested twice", id)
		}
		val, found = e.Value, true
	}
	return val, found, nil
}

// requestedKeyUsage parses a requested keyUsage extension value.
func requestedKeyUsage(der []byte) (x509.KeyUsage, error) {
	var bits asn1.BitString
	rest, err := asn1.Unmarshal(der, &bits)
	if err != nil {
		return 0, fmt.Errorf("parsing requested key usage: %w", err)
	}
	if len(rest) != 0 {
		return 0, errors.New("parsing requested key usage: trailing data")
	}
	var u x509.KeyUsage
	for i := 0; i < 9; i++ {
		if bits.At(i) != 0 {
			u |= 1 << uint(i)
		}
	}
	return u, nil
}

// requestedExtKeyUsage parses a requested extKeyUsage extension value.
// Usages x509 has no constant for are dropped: a profile cannot allow them.
func requestedExtKeyUsage(der []byte) ([]x509.ExtKeyUsage, error) {
	var oids []asn1.ObjectIdentifier
	rest, err := asn1.Unmarshal(der, &oids)
	if err != nil {
		return nil, fmt.Errorf("parsing requested extended key usage: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("parsing requested extended key usage: trailing data")
	}
	var out []x509.ExtKeyUsage
	for _, oid := range oids {
		for _, e := range extKeyUsageOIDs {
			if e.oid.Equal(oid) {
				out = append(out, e.usage)
			}
		}
	}
	return out, nil
}
