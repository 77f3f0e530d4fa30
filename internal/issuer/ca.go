package issuer

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"
)

// DefaultOCSPResponderValidity is the lifetime of an OCSP responder
// certificate when [OCSPResponderOptions.Validity] is 0. It is short
// because the certificate carries id-pkix-ocsp-nocheck: relying parties
// never check its revocation status, so expiry is the only way it ends.
const DefaultOCSPResponderValidity = 7 * 24 * time.Hour

// oidOCSPNoCheck is id-pkix-ocsp-nocheck (RFC 6960 section 4.2.2.2.1).
var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// asn1Null is the DER encoding of ASN.1 NULL, the nocheck extension's value.
var asn1Null = []byte{0x05, 0x00}

// CAOptions describes a CA certificate for [CreateRoot] and
// [CreateIntermediate] (and, embedded, [CreateEdgeCA]).
//
// The validity window is NotBefore through start + Validity, where start is
// NotBefore when set and Now otherwise; for a non-root it is clipped to the
// parent's window. Times are truncated to whole seconds, as X.509 encodes
// them.
type CAOptions struct {
	// Subject is the CA's distinguished name. Required (non-empty).
	Subject pkix.Name
	// Now is the issuing time. Required: this package never reads the
	// clock. The parent must be valid at Now.
	Now time.Time
	// NotBefore is the start of validity. Default Now - [DefaultBackdate].
	NotBefore time.Time
	// Validity is the lifetime. Required, > 0.
	Validity time.Duration
	// MaxPathLen is the basic constraints path length: the number of CA
	// certificates allowed below this one. The zero value means 0 (only
	// end-entity certificates below); -1 means unconstrained. Below a
	// parent with path length n, -1 becomes n-1 and values above n-1 are
	// refused; a parent with path length 0 cannot issue CA certificates.
	MaxPathLen int
	// OCSPServers are the OCSP URLs for this certificate's status, put in
	// its authority information access extension. Default none.
	OCSPServers []string
	// IssuingCertificateURLs are the CA issuers URLs (where to fetch the
	// parent certificate). Default none.
	IssuingCertificateURLs []string
	// CRLDistributionPoints are the URLs of the parent's CRL. Default none.
	CRLDistributionPoints []string
	// Rand is the source for the serial number. Default crypto/rand. It is
	// also handed to the Signer, but Go's own keys ignore it since Go 1.26
	// (see GODEBUG cryptocustomrand).
	Rand io.Reader
}

// EdgeCAOptions describes a delegated edge CA certificate for
// [CreateEdgeCA]: an issuing CA that may sign only end-entity certificates
// (path length 0) for the names its critical name constraints permit.
//
// Name constraints are enforced by every verifier, not only by Outpost's
// profiles (RFC 5280 4.2.1.10): a certificate the edge CA signs for a name
// outside them does not verify. Semantics are those of RFC 5280 as
// implemented by crypto/x509: a DNS constraint "factory.example" covers
// that name and every subdomain, ".factory.example" only subdomains; an
// email constraint is a mailbox, a domain or ".domain"; a URI constraint
// is a host or ".domain".
//
// At least one Permitted* list must be non-empty: an unconstrained delegated
// CA is refused. Unless LeaveUnlistedNameTypesOpen is set, every name type
// (DNS, IP, email, URI) with no permitted entry is closed with an
// exclude-everything subtree, as the CA/Browser Forum requires for
// technically constrained CAs (BR 7.1.2.10.8): a zero-length dNSName,
// rfc822Name and URI, and 0.0.0.0/0 and ::/0. So an edge CA permitted only
// "**.line1.example"-style DNS names cannot sign a certificate with an IP,
// email or URI SAN that verifies.
type EdgeCAOptions struct {
	CAOptions
	// PermittedDNSDomains and ExcludedDNSDomains are DNS name subtrees.
	PermittedDNSDomains, ExcludedDNSDomains []string
	// PermittedIPRanges and ExcludedIPRanges are IP prefixes; they must be
	// masked (10.1.0.0/16, not 10.1.2.3/16).
	PermittedIPRanges, ExcludedIPRanges []netip.Prefix
	// PermittedEmailAddresses and ExcludedEmailAddresses are mailboxes,
	// domains or ".domain" subtrees.
	PermittedEmailAddresses, ExcludedEmailAddresses []string
	// PermittedURIDomains and ExcludedURIDomains are URI host subtrees.
	PermittedURIDomains, ExcludedURIDomains []string
	// LeaveUnlistedNameTypesOpen skips the exclude-everything subtrees for
	// name types without a permitted entry. Default false.
	LeaveUnlistedNameTypesOpen bool
}

// OCSPResponderOptions describes a delegated OCSP responder certificate for
// [CreateOCSPResponder].
type OCSPResponderOptions struct {
	// Subject is the responder's distinguished name. Required (non-empty).
	Subject pkix.Name
	// Now is the issuing time. Required. The issuer must be valid at Now.
	Now time.Time
	// NotBefore is the start of validity. Default Now - [DefaultBackdate].
	NotBefore time.Time
	// Validity is the lifetime, clipped to the issuer's NotAfter. Default
	// [DefaultOCSPResponderValidity].
	Validity time.Duration
	// Rand is the source for the serial number. Default crypto/rand.
	Rand io.Reader
}

// CreateRoot returns a self-signed root CA certificate for key: keyCertSign
// and cRLSign, basic constraints CA with opts.MaxPathLen, SubjectKeyId from
// the key ([SubjectKeyID]), no AuthorityKeyId. key may be any crypto.Signer;
// only Public and Sign are called.
func CreateRoot(key crypto.Signer, opts CAOptions) (*x509.Certificate, error) {
	if key == nil {
		return nil, errors.New("creating root ca: nil key")
	}
	cert, err := createCA(nil, key, key.Public(), opts, nil)
	if err != nil {
		return nil, fmt.Errorf("creating root ca: %w", err)
	}
	return cert, nil
}

// CreateIntermediate returns a CA certificate for pub signed by parent with
// parentKey: keyCertSign and cRLSign, basic constraints CA with
// opts.MaxPathLen (see [CAOptions] for how the parent's path length limits
// it), SubjectKeyId from pub, AuthorityKeyId = the parent's SubjectKeyId,
// validity clipped to the parent's. parent must be a CA with keyCertSign,
// valid at opts.Now, and parentKey must match it.
func CreateIntermediate(parent *x509.Certificate, parentKey crypto.Signer, pub crypto.PublicKey, opts CAOptions) (*x509.Certificate, error) {
	if parent == nil {
		return nil, errors.New("creating intermediate ca: nil parent")
	}
	cert, err := createCA(parent, parentKey, pub, opts, nil)
	if err != nil {
		return nil, fmt.Errorf("creating intermediate ca: %w", err)
	}
	return cert, nil
}

// CreateEdgeCA returns a delegated edge CA certificate for pub signed by
// parent with parentKey: as [CreateIntermediate], plus path length 0 and
// critical name constraints from opts (see [EdgeCAOptions]).
// opts.MaxPathLen must be 0 (its zero value). Keep opts.Validity short: an
// edge CA lives on a gateway in the field.
func CreateEdgeCA(parent *x509.Certificate, parentKey crypto.Signer, pub crypto.PublicKey, opts EdgeCAOptions) (*x509.Certificate, error) {
	if parent == nil {
		return nil, errors.New("creating edge ca: nil parent")
	}
	if opts.MaxPathLen != 0 {
		return nil, fmt.Errorf("creating edge ca: max path length %d, must be 0", opts.MaxPathLen)
	}
	if len(opts.PermittedDNSDomains)+len(opts.PermittedIPRanges)+len(opts.PermittedEmailAddresses)+len(opts.PermittedURIDomains) == 0 {
		return nil, errors.New("creating edge ca: at least one permitted name constraint is required")
	}
	nc, err := opts.nameConstraints()
	if err != nil {
		return nil, fmt.Errorf("creating edge ca: %w", err)
	}
	cert, err := createCA(parent, parentKey, pub, opts.CAOptions, func(t *x509.Certificate) {
		t.PermittedDNSDomainsCritical = true
		t.PermittedDNSDomains = nc.PermittedDNSDomains
		t.ExcludedDNSDomains = nc.ExcludedDNSDomains
		t.PermittedIPRanges = nc.PermittedIPRanges
		t.ExcludedIPRanges = nc.ExcludedIPRanges
		t.PermittedEmailAddresses = nc.PermittedEmailAddresses
		t.ExcludedEmailAddresses = nc.ExcludedEmailAddresses
		t.PermittedURIDomains = nc.PermittedURIDomains
		t.ExcludedURIDomains = nc.ExcludedURIDomains
	})
	if err != nil {
		return nil, fmt.Errorf("creating edge ca: %w", err)
	}
	return cert, nil
}

// nameConstraints checks opts' constraints and returns them as certificate
// fields, with the exclude-everything subtrees added.
func (o *EdgeCAOptions) nameConstraints() (*x509.Certificate, error) {
	var errs []error
	t := &x509.Certificate{}
	for _, l := range []struct {
		what     string
		in       []string
		out      *[]string
		validate func(string) bool
	}{
		{"permitted dns domain", o.PermittedDNSDomains, &t.PermittedDNSDomains, ValidDomainConstraint},
		{"excluded dns domain", o.ExcludedDNSDomains, &t.ExcludedDNSDomains, ValidDomainConstraint},
		{"permitted email", o.PermittedEmailAddresses, &t.PermittedEmailAddresses, ValidEmailConstraint},
		{"excluded email", o.ExcludedEmailAddresses, &t.ExcludedEmailAddresses, ValidEmailConstraint},
		{"permitted uri domain", o.PermittedURIDomains, &t.PermittedURIDomains, ValidDomainConstraint},
		{"excluded uri domain", o.ExcludedURIDomains, &t.ExcludedURIDomains, ValidDomainConstraint},
	} {
		for _, s := range l.in {
			if !l.validate(s) {
				errs = append(errs, fmt.Errorf("%s %q is not valid", l.what, s))
			}
		}
		*l.out = append([]string(nil), l.in...)
	}
	var err error
	if t.PermittedIPRanges, err = ipNets("permitted", o.PermittedIPRanges); err != nil {
		errs = append(errs, err)
	}
	if t.ExcludedIPRanges, err = ipNets("excluded", o.ExcludedIPRanges); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if !o.LeaveUnlistedNameTypesOpen {
		// Zero-length names and the whole address spaces match everything
		// of their type (RFC 5280 4.2.1.10; CA/B BR 7.1.2.10.8).
		if len(t.PermittedDNSDomains) == 0 {
			t.ExcludedDNSDomains = append(t.ExcludedDNSDomains, "")
		}
		if len(t.PermittedIPRanges) == 0 {
			t.ExcludedIPRanges = append(t.ExcludedIPRanges,
				&net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
				&net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)})
		}
		if len(t.PermittedEmailAddresses) == 0 {
			t.ExcludedEmailAddresses = append(t.ExcludedEmailAddresses, "")
		}
		if len(t.PermittedURIDomains) == 0 {
			t.ExcludedURIDomains = append(t.ExcludedURIDomains, "")
		}
	}
	return t, nil
}

// ValidDomainConstraint reports whether s is a DNS or URI domain name
// constraint: "host.example" (the host and its subdomains) or
// ".host.example" (subdomains only). EdgeCAOptions refuses any other.
func ValidDomainConstraint(s string) bool {
	return validDNSName(strings.TrimPrefix(s, "."))
}

// ValidEmailConstraint reports whether s is an email name constraint: a
// mailbox ("ops@host.example", whose domain has no leading dot), a host
// or ".domain" (RFC 5280 4.2.1.10). EdgeCAOptions refuses any other.
func ValidEmailConstraint(s string) bool {
	if strings.Contains(s, "@") {
		_, _, err := splitEmail(s)
		return err == nil
	}
	return ValidDomainConstraint(s)
}

// ipNets converts masked prefixes to *net.IPNet.
func ipNets(what string, ps []netip.Prefix) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, p := range ps {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" || p.Masked() != p {
			return nil, fmt.Errorf("%s ip range %v is not a valid masked prefix", what, p)
		}
		out = append(out, &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	return out, nil
}

// CreateOCSPResponder returns a delegated OCSP responder certificate for pub
// signed by issuer with issuerKey (RFC 6960 section 4.2.2.2): not a CA,
// keyUsage digitalSignature, extKeyUsage OCSPSigning only, and the
// non-critical id-pkix-ocsp-nocheck extension, so clients do not check the
// responder's own revocation status. Validity defaults to
// [DefaultOCSPResponderValidity], clipped to the issuer's. The responder
// must be certified by the CA whose certificates it answers for.
func CreateOCSPResponder(issuer *x509.Certificate, issuerKey crypto.Signer, pub crypto.PublicKey, opts OCSPResponderOptions) (*x509.Certificate, error) {
	if issuer == nil {
		return nil, errors.New("creating ocsp responder: nil issuer")
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultOCSPResponderValidity
	}
	tmpl, err := baseTemplate(issuer, issuerKey, pub, opts.Subject, opts.Now, opts.NotBefore, opts.Validity, opts.Rand)
	if err != nil {
		return nil, fmt.Errorf("creating ocsp responder: %w", err)
	}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}
	tmpl.ExtraExtensions = []pkix.Extension{{Id: oidOCSPNoCheck, Value: asn1Null}}
	cert, err := sign(tmpl, issuer, pub, issuerKey, opts.Rand)
	if err != nil {
		return nil, fmt.Errorf("creating ocsp responder: %w", err)
	}
	return cert, nil
}

// createCA issues a CA certificate below parent, or a self-signed one when
// parent is nil; extra, if not nil, adjusts the template.
func createCA(parent *x509.Certificate, key crypto.Signer, pub crypto.PublicKey, opts CAOptions, extra func(*x509.Certificate)) (*x509.Certificate, error) {
	if opts.MaxPathLen < -1 {
		return nil, fmt.Errorf("max path length %d is below -1", opts.MaxPathLen)
	}
	for _, l := range [][]string{opts.OCSPServers, opts.IssuingCertificateURLs, opts.CRLDistributionPoints} {
		for _, u := range l {
			if err := checkURL(u); err != nil {
				return nil, err
			}
		}
	}
	pathLen := opts.MaxPathLen
	if parent != nil && parent.BasicConstraintsValid && (parent.MaxPathLen > 0 || parent.MaxPathLenZero) {
		limit := parent.MaxPathLen - 1
		switch {
		case limit < 0:
			return nil, errors.New("parent has path length 0 and cannot issue ca certificates")
		case pathLen == -1:
			pathLen = limit
		case pathLen > limit:
			return nil, fmt.Errorf("max path length %d exceeds the %d the parent allows", pathLen, limit)
		}
	}
	tmpl, err := baseTemplate(parent, key, pub, opts.Subject, opts.Now, opts.NotBefore, opts.Validity, opts.Rand)
	if err != nil {
		return nil, err
	}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	tmpl.MaxPathLen = pathLen
	tmpl.MaxPathLenZero = pathLen == 0
	tmpl.OCSPServer = opts.OCSPServers
	tmpl.IssuingCertificateURL = opts.IssuingCertificateURLs
	tmpl.CRLDistributionPoints = opts.CRLDistributionPoints
	if extra != nil {
		extra(tmpl)
	}
	p := parent
	if p == nil {
		p = tmpl
	}
	return sign(tmpl, p, pub, key, opts.Rand)
}

// baseTemplate checks the common inputs and returns a template with subject,
// serial, validity and key identifiers set. parent nil means self-signed.
func baseTemplate(parent *x509.Certificate, key crypto.Signer, pub crypto.PublicKey, subject pkix.Name, now, notBefore time.Time, validity time.Duration, rnd io.Reader) (*x509.Certificate, error) {
	switch {
	case key == nil:
		return nil, errors.New("nil signing key")
	case pub == nil:
		return nil, errors.New("nil public key")
	case now.IsZero():
		return nil, errors.New("now must be set")
	case validity <= 0:
		return nil, fmt.Errorf("validity %v must be positive", validity)
	case len(subject.ToRDNSequence()) == 0:
		return nil, errors.New("subject must not be empty")
	}
	if parent != nil {
		if err := checkCA(parent, key); err != nil {
			return nil, err
		}
		if now.Before(parent.NotBefore) || now.After(parent.NotAfter) {
			return nil, fmt.Errorf("issuer %q is not valid at %v (valid %v to %v)",
				parent.Subject.CommonName, now.UTC(), parent.NotBefore.UTC(), parent.NotAfter.UTC())
		}
	}
	start := now
	if !notBefore.IsZero() {
		start = notBefore
	} else {
		notBefore = now.Add(-DefaultBackdate)
	}
	notAfter := start.Add(validity)
	if parent != nil {
		if notBefore.Before(parent.NotBefore) {
			notBefore = parent.NotBefore
		}
		if notAfter.After(parent.NotAfter) {
			notAfter = parent.NotAfter
		}
	}
	notBefore, notAfter = notBefore.Truncate(time.Second), notAfter.Truncate(time.Second)
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("validity window %v to %v is empty", notBefore.UTC(), notAfter.UTC())
	}
	skid, err := SubjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	serial, err := NewSerial(rnd)
	if err != nil {
		return nil, err
	}
	t := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		SubjectKeyId: skid,
	}
	if parent != nil {
		t.AuthorityKeyId = parent.SubjectKeyId
	}
	return t, nil
}

// checkCA reports why cert cannot sign certificates with key, or nil.
func checkCA(cert *x509.Certificate, key crypto.Signer) error {
	switch {
	case cert == nil:
		return errors.New("no issuer certificate")
	case key == nil:
		return errors.New("no issuer signing key")
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return fmt.Errorf("issuer %q is not a ca", cert.Subject.CommonName)
	case cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("issuer %q lacks the keyCertSign key usage", cert.Subject.CommonName)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("issuer %q: signing key does not match the certificate", cert.Subject.CommonName)
	}
	return nil
}

// sign creates and parses the certificate.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer, rnd io.Reader) (*x509.Certificate, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	der, err := x509.CreateCertificate(rnd, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing signed certificate: %w", err)
	}
	return cert, nil
}
