package ui

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// certInfo is a certificate decoded for people.
type certInfo struct {
	OK                 bool // false: the stored DER is not a certificate
	Subject            string
	Issuer             string
	Serial             string
	NotBefore          time.Time
	NotAfter           time.Time
	DNSNames           []string
	IPs                []string
	URIs               []string
	Emails             []string
	KeyUsage           []string
	ExtKeyUsage        []string
	KeyAlgorithm       string
	SignatureAlgorithm string
	IsCA               bool
	MaxPathLen         string
	OCSP               []string
	CRLDPs             []string
	Extensions         []extInfo
	SHA256             string
}

type extInfo struct {
	OID      string
	Name     string
	Critical bool
}

// extNames names the extensions a device PKI meets.
var extNames = map[string]string{
	"2.5.29.14":            "Subject Key Identifier",
	"2.5.29.15":            "Key Usage",
	"2.5.29.17":            "Subject Alternative Name",
	"2.5.29.19":            "Basic Constraints",
	"2.5.29.30":            "Name Constraints",
	"2.5.29.31":            "CRL Distribution Points",
	"2.5.29.32":            "Certificate Policies",
	"2.5.29.35":            "Authority Key Identifier",
	"2.5.29.37":            "Extended Key Usage",
	"1.3.6.1.5.5.7.1.1":    "Authority Information Access",
	"1.3.6.1.5.5.7.48.1.5": "OCSP No Check",
}

var keyUsageNames = []struct {
	bit  x509.KeyUsage
	name string
}{
	{x509.KeyUsageDigitalSignature, "digitalSignature"},
	{x509.KeyUsageContentCommitment, "contentCommitment"},
	{x509.KeyUsageKeyEncipherment, "keyEncipherment"},
	{x509.KeyUsageDataEncipherment, "dataEncipherment"},
	{x509.KeyUsageKeyAgreement, "keyAgreement"},
	{x509.KeyUsageCertSign, "keyCertSign"},
	{x509.KeyUsageCRLSign, "cRLSign"},
	{x509.KeyUsageEncipherOnly, "encipherOnly"},
	{x509.KeyUsageDecipherOnly, "decipherOnly"},
}

var extKeyUsageNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageAny:             "any",
	x509.ExtKeyUsageServerAuth:      "serverAuth",
	x509.ExtKeyUsageClientAuth:      "clientAuth",
	x509.ExtKeyUsageCodeSigning:     "codeSigning",
	x509.ExtKeyUsageEmailProtection: "emailProtection",
	x509.ExtKeyUsageTimeStamping:    "timeStamping",
	x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
}

// decodeCert decodes DER for display; a row whose DER is not a
// certificate (synthetic benchmark data) gives OK false.
func decodeCert(der []byte) *certInfo {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return &certInfo{}
	}
	sum := sha256.Sum256(c.Raw)
	out := &certInfo{OK: true, Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: strings.ToLower(c.SerialNumber.Text(16)),
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, DNSNames: c.DNSNames, Emails: c.EmailAddresses,
		SignatureAlgorithm: c.SignatureAlgorithm.String(), IsCA: c.IsCA, OCSP: c.OCSPServer, CRLDPs: c.CRLDistributionPoints,
		SHA256: strings.ToUpper(hex.EncodeToString(sum[:]))}
	for _, ip := range c.IPAddresses {
		out.IPs = append(out.IPs, ip.String())
	}
	for _, u := range c.URIs {
		out.URIs = append(out.URIs, u.String())
	}
	for _, k := range keyUsageNames {
		if c.KeyUsage&k.bit != 0 {
			out.KeyUsage = append(out.KeyUsage, k.name)
		}
	}
	for _, e := range c.ExtKeyUsage {
		if n, ok := extKeyUsageNames[e]; ok {
			out.ExtKeyUsage = append(out.ExtKeyUsage, n)
		} else {
			out.ExtKeyUsage = append(out.ExtKeyUsage, fmt.Sprintf("eku %d", e))
		}
	}
	for _, o := range c.UnknownExtKeyUsage {
		out.ExtKeyUsage = append(out.ExtKeyUsage, o.String())
	}
	if c.IsCA && c.BasicConstraintsValid {
		switch {
		case c.MaxPathLen > 0 || c.MaxPathLenZero:
			out.MaxPathLen = fmt.Sprint(c.MaxPathLen)
		default:
			out.MaxPathLen = "unlimited"
		}
	}
	out.KeyAlgorithm = keyAlgorithm(c)
	for _, e := range c.Extensions {
		out.Extensions = append(out.Extensions, extInfo{OID: e.Id.String(), Name: extName(e.Id), Critical: e.Critical})
	}
	return out
}

func extName(id asn1.ObjectIdentifier) string {
	if n, ok := extNames[id.String()]; ok {
		return n
	}
	return "unknown"
}

func keyAlgorithm(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d bits", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return c.PublicKeyAlgorithm.String()
}
