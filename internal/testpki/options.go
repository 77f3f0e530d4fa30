package testpki

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// CertOption customises one certificate, or one CSR for the options that
// make sense there (subject, SANs, key). Options that do not apply to a CSR
// are ignored by [CSR]. An invalid option makes the issuing call fail.
type CertOption func(*certConfig)

// certConfig collects the CertOptions of one call. Zero values mean "use the
// profile's default".
type certConfig struct {
	validity       time.Duration
	notBefore      time.Time
	notAfter       time.Time
	dnsNames       []string
	ips            []net.IP
	uris           []*url.URL
	emails         []string
	keyType        KeyType
	key            crypto.Signer
	extKeyUsage    []x509.ExtKeyUsage
	extKeyUsageSet bool
	keyUsage       *x509.KeyUsage
	pathLen        *int
	permittedDNS   []string
	subject        *pkix.Name
	crlDPs         []string
	ocspServers    []string
	err            error // first invalid option
}

func newCertConfig(opts []CertOption) (*certConfig, error) {
	c := &certConfig{}
	for _, o := range opts {
		o(c)
	}
	return c, c.err
}

func (c *certConfig) setErr(err error) {
	if c.err == nil {
		c.err = err
	}
}

// signer returns the key supplied with [Key], or a new key of the type asked
// for with [KeyAlgorithm], else of type def.
func (c *certConfig) signer(def KeyType) (crypto.Signer, error) {
	if c.key != nil {
		return c.key, nil
	}
	k := def
	if c.keyType != 0 {
		k = c.keyType
	}
	key, err := GenerateKey(k)
	if err != nil {
		return nil, fmt.Errorf("generating %v key: %w", k, err)
	}
	return key, nil
}

// name returns the subject: the [Subject] override, with commonName filled
// in when the override has none, or just commonName.
func (c *certConfig) name(commonName string) pkix.Name {
	if c.subject == nil {
		return pkix.Name{CommonName: commonName}
	}
	n := *c.subject
	if n.CommonName == "" {
		n.CommonName = commonName
	}
	return n
}

// applyNames replaces tmpl's SANs with those given as options, field by field.
func (c *certConfig) applyNames(tmpl *x509.Certificate) {
	if len(c.dnsNames) > 0 {
		tmpl.DNSNames = c.dnsNames
	}
	if len(c.ips) > 0 {
		tmpl.IPAddresses = c.ips
	}
	if len(c.uris) > 0 {
		tmpl.URIs = c.uris
	}
	if len(c.emails) > 0 {
		tmpl.EmailAddresses = c.emails
	}
}

// Validity sets the lifetime: NotAfter = NotBefore + d. Like the default
// validity, the result is clipped to the issuer's NotAfter.
func Validity(d time.Duration) CertOption {
	return func(c *certConfig) {
		if d <= 0 {
			c.setErr(fmt.Errorf("validity %v is not positive", d))
			return
		}
		c.validity = d
	}
}

// NotBefore sets NotBefore. The default is the clock minus one hour, to
// tolerate clock skew.
func NotBefore(t time.Time) CertOption {
	return func(c *certConfig) { c.notBefore = t }
}

// NotAfter sets NotAfter exactly. Unlike [Validity] it is not clipped to the
// issuer, so tests can build a certificate that outlives its CA.
func NotAfter(t time.Time) CertOption {
	return func(c *certConfig) { c.notAfter = t }
}

// DNSNames sets the DNS subjectAltNames. For [CA.SignCSR] they replace the
// CSR's.
func DNSNames(names ...string) CertOption {
	return func(c *certConfig) { c.dnsNames = append(c.dnsNames, names...) }
}

// IPAddresses sets the IP subjectAltNames. For [CA.SignCSR] they replace the
// CSR's.
func IPAddresses(ips ...net.IP) CertOption {
	return func(c *certConfig) { c.ips = append(c.ips, ips...) }
}

// URIs sets the URI subjectAltNames, e.g. "spiffe://outpost.test/device/42".
// For [CA.SignCSR] they replace the CSR's. A string that does not parse as a
// URL makes the issuing call fail.
func URIs(uris ...string) CertOption {
	return func(c *certConfig) {
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				c.setErr(fmt.Errorf("parsing uri san: %w", err))
				return
			}
			c.uris = append(c.uris, u)
		}
	}
}

// Emails sets the email subjectAltNames. For [CA.SignCSR] they replace the
// CSR's.
func Emails(addrs ...string) CertOption {
	return func(c *certConfig) { c.emails = append(c.emails, addrs...) }
}

// KeyAlgorithm generates the certificate's key with type k instead of the
// PKI's default (see [WithKeyType]). It has no effect on [CA.SignCSR], where
// the key is the CSR's.
func KeyAlgorithm(k KeyType) CertOption {
	return func(c *certConfig) { c.keyType = k }
}

// Key uses an existing key instead of generating one, for instance a key held
// in an HSM or one shared across renewals. [CA.KeyPEM], [Leaf.KeyPEM] and the
// WriteFiles methods fail for keys that cannot be marshaled to PKCS#8.
func Key(key crypto.Signer) CertOption {
	return func(c *certConfig) {
		if key == nil {
			c.setErr(errors.New("nil key"))
			return
		}
		c.key = key
	}
}

// ExtKeyUsage replaces the default extended key usages (none for CAs,
// ServerAuth and ClientAuth for leaves, OCSPSigning for OCSP responders).
// With no arguments the extension is left out.
func ExtKeyUsage(usages ...x509.ExtKeyUsage) CertOption {
	return func(c *certConfig) {
		c.extKeyUsage = usages
		c.extKeyUsageSet = true
	}
}

// KeyUsage replaces the default key usage (CertSign|CRLSign for CAs;
// DigitalSignature for leaves, plus KeyEncipherment for RSA keys).
func KeyUsage(u x509.KeyUsage) CertOption {
	return func(c *certConfig) { c.keyUsage = &u }
}

// PathLen sets the basic constraints path length of a CA certificate: the
// number of CA certificates that may follow it in a chain. 0 allows only
// leaves below it; -1 (the default) leaves the length unconstrained. Issuing
// a leaf with PathLen fails.
func PathLen(n int) CertOption {
	return func(c *certConfig) {
		if n < -1 {
			c.setErr(fmt.Errorf("path length %d is below -1", n))
			return
		}
		c.pathLen = &n
	}
}

// PermittedDNSDomains adds a critical name constraints extension to a CA
// certificate that permits only the given DNS domains (and their
// subdomains). Issuing a leaf with it fails.
func PermittedDNSDomains(domains ...string) CertOption {
	return func(c *certConfig) { c.permittedDNS = append(c.permittedDNS, domains...) }
}

// Subject replaces the default subject (just the common name). If name has
// no CommonName, the commonName argument of the issuing call is used. For
// [CA.SignCSR] it replaces the CSR's subject.
func Subject(name pkix.Name) CertOption {
	return func(c *certConfig) { c.subject = &name }
}

// CRLDistributionPoints sets the CRL distribution point URLs.
func CRLDistributionPoints(urls ...string) CertOption {
	return func(c *certConfig) { c.crlDPs = append(c.crlDPs, urls...) }
}

// OCSPServer sets the OCSP responder URLs of the authority information
// access extension.
func OCSPServer(urls ...string) CertOption {
	return func(c *certConfig) { c.ocspServers = append(c.ocspServers, urls...) }
}
