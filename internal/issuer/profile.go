package issuer

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"text/template"
	"time"
)

// Defaults applied to zero [Profile] fields.
const (
	// DefaultBackdate is how far NotBefore is set before the issuing time,
	// so that devices whose clocks lag a little accept a fresh certificate.
	DefaultBackdate = 5 * time.Minute
	// DefaultMaxSANs is the number of subjectAltNames a profile allows when
	// MaxSANs is 0.
	DefaultMaxSANs = 10
	// DefaultDeviceValidity is the lifetime of [DefaultDeviceProfile].
	DefaultDeviceValidity = 90 * 24 * time.Hour
)

// Names of requested CSR extensions for [Profile.HonourExtensions].
const (
	// ExtensionSAN copies requested subjectAltNames (DNS, IP, URI, email),
	// each still checked against the SAN policy.
	ExtensionSAN = "san"
	// ExtensionKeyUsage takes the requested keyUsage, intersected with the
	// profile's.
	ExtensionKeyUsage = "key_usage"
	// ExtensionExtKeyUsage takes the requested extKeyUsage, intersected with
	// the profile's.
	ExtensionExtKeyUsage = "ext_key_usage"
	// ExtensionNone honours nothing; it must be the only entry.
	ExtensionNone = "none"
)

// Profile says what certificates an [Issuer] makes from CSRs: lifetime, key
// usages, which keys and names are acceptable, how the subject is built and
// which URLs go into the certificate. Profiles are plain configuration:
// build them once, call [Profile.Validate] when loading, and do not modify
// one while Issue may be using it. [Issuer.Issue] validates the profile
// again on every call.
//
// Nothing in a CSR reaches the certificate unless the profile says so:
// requested extensions other than those in HonourExtensions are ignored (in
// particular basicConstraints, name constraints and policies are never
// copied), and those that are honoured can only narrow what the profile
// allows, never widen it.
type Profile struct {
	// Name identifies the profile in messages and logs. Required.
	Name string
	// Validity is the certificate lifetime from the issuing time: NotAfter
	// = now + Validity, clipped to the issuer's NotAfter. Required, > 0.
	Validity time.Duration
	// Backdate is subtracted from the issuing time to get NotBefore
	// (never before the issuer's NotBefore). Default [DefaultBackdate]
	// (when 0); must not be negative.
	Backdate time.Duration
	// KeyUsage is the key usage granted, and the most a CSR may request
	// when "key_usage" is honoured. Bits that do not fit the subject's key
	// algorithm are dropped at issuance (keyEncipherment for ECDSA and
	// Ed25519 keys, keyAgreement for RSA, ...). Required; keyCertSign and
	// cRLSign are refused (this package issues CA certificates only through
	// CreateRoot, CreateIntermediate and CreateEdgeCA).
	KeyUsage x509.KeyUsage
	// ExtKeyUsage is the extended key usage granted, and the most a CSR may
	// request when "ext_key_usage" is honoured. Empty means the certificate
	// has no extKeyUsage extension; requested EKUs are then ignored.
	// ExtKeyUsageAny is refused.
	ExtKeyUsage []x509.ExtKeyUsage
	// AllowedKeys lists the subject keys accepted. Required.
	AllowedKeys []KeySpec
	// SANs is the subjectAltName allow-list. Default: no SANs allowed.
	SANs SANPolicy
	// MaxSANs caps the number of distinct subjectAltNames. Default
	// [DefaultMaxSANs] (when 0); must not be negative.
	MaxSANs int
	// Subject says how the certificate subject is built.
	Subject SubjectTemplate
	// CopyCNToSAN adds the certificate's common name as a subjectAltName
	// when it is an IP address (IP SAN) or a hostname of two or more labels
	// (DNS SAN); other common names, such as "device-42", are left alone.
	// The copied name is subject to SANs and MaxSANs like any other: a
	// common name outside the policy makes issuance fail. Default false.
	CopyCNToSAN bool
	// HonourExtensions lists which requested extensions are taken from the
	// CSR: "san", "key_usage", "ext_key_usage", or just "none". Default
	// (nil or empty): "san" only.
	//
	// A honoured keyUsage is intersected with KeyUsage, and a honoured
	// extKeyUsage with ExtKeyUsage: the request can only narrow what the
	// profile grants. An empty intersection refuses the request
	// ([ReasonUsageNotAllowed]) instead of issuing something the device
	// did not ask for.
	HonourExtensions []string
	// OCSPServers are the OCSP responder URLs put in the authority
	// information access extension. Default none.
	OCSPServers []string
	// IssuingCertificateURLs are the CA issuers URLs put in the authority
	// information access extension. Default none.
	IssuingCertificateURLs []string
	// CRLDistributionPoints are the CRL URLs. Default none.
	CRLDistributionPoints []string
}

// SubjectTemplate builds the certificate subject.
//
// With KeepCSRSubject the subject starts as the CSR's standard attributes
// (C, O, OU, L, ST, street, postal code, serialNumber, CN; other attribute
// types are dropped); otherwise it starts empty. Then each non-empty list
// below replaces the corresponding attribute, and the common name is set
// from CommonName.
type SubjectTemplate struct {
	// Organization, OrganizationalUnit, Country, Locality and Province
	// replace the attribute when not empty. Country entries are two-letter
	// codes.
	Organization, OrganizationalUnit, Country, Locality, Province []string
	// CommonName is a text/template executed over [TemplateData], e.g.
	// "{{.DeviceID}}" or "{{.CSR.CommonName}}.line1". Empty means copy the
	// CSR's common name. [Profile.Validate] parses it and executes it over
	// sample data in which every list holds exactly one entry, so a
	// reference to an unknown field is a configuration error rather than a
	// refused request. A template that renders to an empty string, to
	// more than 64 characters or to control characters refuses the request
	// ([ReasonSubjectTemplate]).
	CommonName string
	// KeepCSRSubject starts from the CSR's subject instead of an empty one.
	KeepCSRSubject bool
}

// TemplateData is what a [SubjectTemplate.CommonName] template sees.
type TemplateData struct {
	// CSR holds the request's subject and names.
	CSR TemplateCSR
	// DeviceID is [Request.DeviceID].
	DeviceID string
	// Profile is the profile's Name.
	Profile string
}

// TemplateCSR is the part of a CSR a template may use.
type TemplateCSR struct {
	// CommonName is the requested subject common name.
	CommonName string
	// SerialNumber is the requested subject serialNumber attribute.
	SerialNumber string
	// Organization and OrganizationalUnit are the requested O and OU.
	Organization, OrganizationalUnit []string
	// DNSNames, IPAddresses, URIs and EmailAddresses are the requested
	// subjectAltNames, as strings, whether or not they are honoured.
	DNSNames, IPAddresses, URIs, EmailAddresses []string
}

// DefaultDeviceProfile returns a new profile for device client certificates:
// name "device", 90 days, digitalSignature, clientAuth, ECDSA P-256 or P-384
// or RSA 2048 to 4096 bits, requested SANs honoured, at most
// [DefaultMaxSANs] SANs, subject = the CSR's common name only.
//
// Its SAN policy is empty, so every requested SAN is refused until the
// caller sets SANs (e.g. DNS = []string{"**.line1.example"}). It has no
// OCSP, CA issuers or CRL URLs either.
func DefaultDeviceProfile() *Profile {
	return &Profile{
		Name:        "device",
		Validity:    DefaultDeviceValidity,
		Backdate:    DefaultBackdate,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		AllowedKeys: []KeySpec{
			{Algorithm: KeyAlgorithmECDSA, Curves: []string{"P-256", "P-384"}},
			{Algorithm: KeyAlgorithmRSA, MinBits: 2048, MaxBits: 4096},
		},
		MaxSANs:          DefaultMaxSANs,
		HonourExtensions: []string{ExtensionSAN},
	}
}

// compiledProfile is a validated Profile with its patterns parsed.
type compiledProfile struct {
	p        *Profile
	sans     compiledSANs
	cn       *template.Template // nil: copy the CSR's common name
	honour   map[string]bool
	maxSANs  int
	backdate time.Duration
}

// Validate reports every problem with p, each message starting with
// `profile "<name>": `.
func (p *Profile) Validate() error {
	_, err := p.compile()
	return err
}

func (p *Profile) compile() (*compiledProfile, error) {
	if p == nil {
		return nil, errors.New("profile is nil")
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("profile %q: "+format, append([]any{p.Name}, args...)...))
	}
	c := &compiledProfile{p: p, maxSANs: p.MaxSANs, backdate: p.Backdate, honour: map[string]bool{}}

	if strings.TrimSpace(p.Name) == "" {
		bad("name must be set")
	}
	if p.Validity <= 0 {
		bad("validity must be positive")
	}
	switch {
	case p.Backdate < 0:
		bad("backdate must not be negative")
	case p.Backdate == 0:
		c.backdate = DefaultBackdate
	}
	switch {
	case p.KeyUsage == 0:
		bad("key usage must be set")
	case p.KeyUsage&^leafKeyUsages != 0:
		bad("key usage %#x includes bits not allowed for end-entity certificates (cert sign, crl sign)", int(p.KeyUsage&^leafKeyUsages))
	}
	for _, u := range p.ExtKeyUsage {
		switch {
		case u == x509.ExtKeyUsageAny:
			bad("extended key usage any is not allowed")
		case !knownExtKeyUsage(u):
			bad("unknown extended key usage %d", int(u))
		}
	}
	if len(p.AllowedKeys) == 0 {
		bad("allowed keys must list at least one key spec")
	}
	for _, k := range p.AllowedKeys {
		if err := k.validate(); err != nil {
			bad("%w", err)
		}
	}
	sans, err := compileSANs(p.SANs)
	if err != nil {
		bad("%w", err)
	}
	c.sans = sans
	switch {
	case p.MaxSANs < 0:
		bad("max sans must not be negative")
	case p.MaxSANs == 0:
		c.maxSANs = DefaultMaxSANs
	}
	for _, cc := range p.Subject.Country {
		if len(cc) != 2 || !isUpperAlpha(cc) {
			bad("subject country %q must be a two-letter upper-case code", cc)
		}
	}
	if p.Subject.CommonName != "" {
		t, err := template.New("common_name").Option("missingkey=error").Parse(p.Subject.CommonName)
		if err == nil {
			// Executing over sample data catches references to fields that
			// do not exist, which Parse cannot see.
			err = t.Execute(&limitedWriter{n: maxCommonName * 4}, sampleTemplateData)
		}
		if err != nil {
			bad("subject common name template: %w", err)
		}
		c.cn = t
	}
	honour := p.HonourExtensions
	if len(honour) == 0 {
		honour = []string{ExtensionSAN}
	}
	for _, h := range honour {
		switch h {
		case ExtensionSAN, ExtensionKeyUsage, ExtensionExtKeyUsage:
			c.honour[h] = true
		case ExtensionNone:
			if len(honour) != 1 {
				bad("honour extensions: %q must be the only entry", ExtensionNone)
			}
		default:
			bad("honour extensions: unknown extension %q (want san, key_usage, ext_key_usage or none)", h)
		}
	}
	for _, l := range []struct {
		what string
		urls []string
	}{
		{"ocsp server", p.OCSPServers},
		{"issuing certificate url", p.IssuingCertificateURLs},
		{"crl distribution point", p.CRLDistributionPoints},
	} {
		for _, u := range l.urls {
			if err := checkURL(u); err != nil {
				bad("%s: %w", l.what, err)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// sampleTemplateData is what Validate executes a common name template over:
// every string set, every list holding one entry.
var sampleTemplateData = TemplateData{
	CSR: TemplateCSR{
		CommonName:         "device",
		SerialNumber:       "0001",
		Organization:       []string{"org"},
		OrganizationalUnit: []string{"unit"},
		DNSNames:           []string{"device.example"},
		IPAddresses:        []string{"192.0.2.1"},
		URIs:               []string{"spiffe://example/device"},
		EmailAddresses:     []string{"device@example"},
	},
	DeviceID: "device",
	Profile:  "profile",
}

// checkURL checks an AIA or CDP URL: absolute http, https or ldap with a
// host.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("parsing url %q: %w", s, err)
	}
	if !slices.Contains([]string{"http", "https", "ldap"}, u.Scheme) || u.Host == "" {
		return fmt.Errorf("url %q must be an absolute http, https or ldap url", s)
	}
	return nil
}

func isUpperAlpha(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// maxCommonName is ub-common-name (RFC 5280 appendix A.1), in characters.
const maxCommonName = 64

// limitedWriter collects at most n bytes and then fails, so a template
// cannot produce unbounded output.
type limitedWriter struct {
	b strings.Builder
	n int
}

var errTemplateOutput = errors.New("template output too long")

func (w *limitedWriter) Write(p []byte) (int, error) {
	if w.b.Len()+len(p) > w.n {
		return 0, errTemplateOutput
	}
	return w.b.Write(p)
}

// Standard subject attributes copied from a CSR with KeepCSRSubject.
func copyStandardName(n pkix.Name) pkix.Name {
	return pkix.Name{
		Country:            slices.Clone(n.Country),
		Organization:       slices.Clone(n.Organization),
		OrganizationalUnit: slices.Clone(n.OrganizationalUnit),
		Locality:           slices.Clone(n.Locality),
		Province:           slices.Clone(n.Province),
		StreetAddress:      slices.Clone(n.StreetAddress),
		PostalCode:         slices.Clone(n.PostalCode),
		SerialNumber:       n.SerialNumber,
		CommonName:         n.CommonName,
	}
}
