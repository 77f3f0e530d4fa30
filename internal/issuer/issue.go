// Package issuer makes X.509 certificates for Outpost: root, intermediate
// and delegated edge CA certificates, OCSP responder certificates, and
// end-entity certificates from CSRs under a [Profile].
//
// Keys are any crypto.Signer (file, TPM, PKCS#11): only Public and Sign are
// called, so nothing here assumes a key type. Nothing reads the clock: CA
// creation takes Now in its options and an [Issuer] has an injectable Now.
// Every certificate gets a random 159-bit serial ([NewSerial]) and a
// SubjectKeyId computed from its public key ([SubjectKeyID]); every
// non-root gets its issuer's SubjectKeyId as AuthorityKeyId.
//
// [Issuer.Issue] does not check the CSR's signature or key quality (weak
// RSA exponents, small factors): that is the CSR validator's job and must
// happen before. It does enforce everything the profile decides: key
// algorithm and size, names, usages, subject and validity.
package issuer

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Issuer signs end-entity certificates with a CA certificate and its key.
// It is safe for concurrent use when Signer, Now and Rand are.
type Issuer struct {
	// Cert is the issuing CA certificate. It must be a CA (basic
	// constraints cA true) with the keyCertSign key usage.
	Cert *x509.Certificate
	// Signer is the CA's key; its Public() must match Cert.
	Signer crypto.Signer
	// Now returns the issuing time. Default time.Now.
	Now func() time.Time
	// Rand is the source for serial numbers. Default crypto/rand. It is
	// also handed to the Signer, but Go's own keys ignore it since Go 1.26
	// (see GODEBUG cryptocustomrand).
	Rand io.Reader
}

// Request is what the server adds to a CSR for one issuance.
type Request struct {
	// DeviceID identifies the device, for subject templates
	// ({{.DeviceID}}).
	DeviceID string
	// ExtraSANs are subjectAltNames the server decided on (for instance
	// from the device registry). They are added whether or not the profile
	// honours requested SANs, but are still checked against the profile's
	// SAN policy and count towards MaxSANs.
	ExtraSANs AltNames
	// NotAfter, if not zero, shortens the certificate: the final NotAfter
	// is the earliest of this, now + Profile.Validity and the issuer's
	// NotAfter. It cannot lengthen a certificate. A NotAfter before the
	// issuing time is refused ([ReasonValidity]).
	NotAfter time.Time
}

// Issue signs an end-entity certificate for csr under profile p and returns
// it parsed (DER in Raw). It assumes the CSR's signature has been checked.
//
// In order, it:
//   - validates p ([ReasonProfileInvalid]) and the issuer: a CA with
//     keyCertSign whose Signer matches Cert ([ReasonIssuerInvalid]), valid
//     at Now ([ReasonIssuerExpired]);
//   - checks the CSR's key against p.AllowedKeys ([ReasonKeyNotAllowed]);
//   - builds the subject from p.Subject ([ReasonSubjectTemplate]);
//   - works out key usage and extended key usage ([ReasonUsageNotAllowed]);
//   - collects the SANs: the CSR's if "san" is honoured, the common name if
//     p.CopyCNToSAN, then req.ExtraSANs; removes duplicates; checks the
//     count against MaxSANs ([ReasonTooManySANs]) and each name against the
//     SAN policy ([ReasonSANNotAllowed]); a certificate with neither
//     subject nor SAN is refused ([ReasonSubjectTemplate]);
//   - sets NotBefore = now - Backdate (not before the issuer's NotBefore)
//     and NotAfter = now + Validity, shortened by req.NotAfter and clipped
//     to the issuer's NotAfter, both truncated to the second. A CA close to
//     expiry therefore issues short certificates rather than failing;
//     callers that want a minimum lifetime check the result (or renew the
//     CA in time, see package certstatus);
//   - sets SubjectKeyId from the key, AuthorityKeyId from the issuer,
//     basic constraints cA false, the profile's AIA and CDP URLs, a serial
//     from [NewSerial], and signs ([ReasonSigning]).
//
// Issue does not check the names against the issuer's own name
// constraints: a certificate the profile allows but the issuer's
// constraints do not is issued and then fails verification. Keep profiles
// within the CA's constraints.
//
// Every error is an *[Error]; use errors.As and send only
// [Error.Public] to the device.
func (i *Issuer) Issue(csr *x509.CertificateRequest, p *Profile, req Request) (*x509.Certificate, error) {
	if i == nil {
		return nil, newError(ReasonIssuerInvalid, nil, "nil issuer")
	}
	if csr == nil {
		return nil, newError(ReasonBadRequest, nil, "no certificate request")
	}
	cp, err := p.compile()
	if err != nil {
		return nil, newError(ReasonProfileInvalid, err, "")
	}
	if err := checkCA(i.Cert, i.Signer); err != nil {
		return nil, newError(ReasonIssuerInvalid, err, "")
	}
	now := time.Now()
	if i.Now != nil {
		now = i.Now()
	}
	if now.Before(i.Cert.NotBefore) || now.After(i.Cert.NotAfter) {
		return nil, newError(ReasonIssuerExpired, nil, "issuer "+quote(i.Cert.Subject.CommonName)+
			" valid "+i.Cert.NotBefore.UTC().Format(time.RFC3339)+" to "+i.Cert.NotAfter.UTC().Format(time.RFC3339)+
			", now "+now.UTC().Format(time.RFC3339))
	}

	pub := csr.PublicKey
	if pub == nil {
		return nil, newError(ReasonBadRequest, nil, "no usable public key")
	}
	if !slices.ContainsFunc(p.AllowedKeys, func(k KeySpec) bool { return k.allows(pub) }) {
		return nil, newError(ReasonKeyNotAllowed, nil, describeKey(pub)+" key not allowed")
	}

	subject, e := cp.subject(csr, req)
	if e != nil {
		return nil, e
	}
	ku, eku, e := cp.usages(csr, pub)
	if e != nil {
		return nil, e
	}
	sans, e := cp.altNames(csr, subject.CommonName, req)
	if e != nil {
		return nil, e
	}
	if sans.count() == 0 && len(subject.ToRDNSequence()) == 0 {
		return nil, newError(ReasonSubjectTemplate, nil, "certificate would have neither subject nor subject alternative name")
	}

	notBefore := now.Add(-cp.backdate)
	if notBefore.Before(i.Cert.NotBefore) {
		notBefore = i.Cert.NotBefore
	}
	notAfter := now.Add(p.Validity)
	if !req.NotAfter.IsZero() {
		if req.NotAfter.Before(now) {
			return nil, newError(ReasonValidity, nil, "requested notAfter "+req.NotAfter.UTC().Format(time.RFC3339)+" is before the issuing time")
		}
		if req.NotAfter.Before(notAfter) {
			notAfter = req.NotAfter
		}
	}
	if notAfter.After(i.Cert.NotAfter) {
		notAfter = i.Cert.NotAfter
	}
	notBefore, notAfter = notBefore.Truncate(time.Second), notAfter.Truncate(time.Second)
	if !notAfter.After(notBefore) {
		return nil, newError(ReasonValidity, nil, "empty validity window")
	}

	skid, err := SubjectKeyID(pub)
	if err != nil {
		return nil, newError(ReasonBadRequest, err, "public key cannot be encoded")
	}
	rnd := i.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	serial, err := NewSerial(rnd)
	if err != nil {
		return nil, newError(ReasonSigning, err, "")
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		IsCA:                  false,
		DNSNames:              sans.DNSNames,
		IPAddresses:           sans.IPAddresses,
		URIs:                  sans.URIs,
		EmailAddresses:        sans.EmailAddresses,
		SubjectKeyId:          skid,
		AuthorityKeyId:        i.Cert.SubjectKeyId,
		OCSPServer:            p.OCSPServers,
		IssuingCertificateURL: p.IssuingCertificateURLs,
		CRLDistributionPoints: p.CRLDistributionPoints,
	}
	cert, err := sign(tmpl, i.Cert, pub, i.Signer, rnd)
	if err != nil {
		return nil, newError(ReasonSigning, err, "")
	}
	return cert, nil
}

// subject builds the certificate subject.
func (cp *compiledProfile) subject(csr *x509.CertificateRequest, req Request) (pkix.Name, *Error) {
	st := cp.p.Subject
	var n pkix.Name
	if st.KeepCSRSubject {
		n = copyStandardName(csr.Subject)
	}
	for _, f := range []struct {
		dst *[]string
		src []string
	}{
		{&n.Organization, st.Organization},
		{&n.OrganizationalUnit, st.OrganizationalUnit},
		{&n.Country, st.Country},
		{&n.Locality, st.Locality},
		{&n.Province, st.Province},
	} {
		if len(f.src) > 0 {
			*f.dst = slices.Clone(f.src)
		}
	}
	n.CommonName = csr.Subject.CommonName
	if cp.cn != nil {
		w := &limitedWriter{n: maxCommonName * utf8.UTFMax}
		if err := cp.cn.Execute(w, cp.templateData(csr, req)); err != nil {
			return n, newError(ReasonSubjectTemplate, err, "common name template failed")
		}
		n.CommonName = w.b.String()
		if n.CommonName == "" {
			return n, newError(ReasonSubjectTemplate, nil, "common name template produced an empty name")
		}
	}
	if err := checkCommonName(n.CommonName); err != "" {
		return n, newError(ReasonSubjectTemplate, nil, err)
	}
	return n, nil
}

// checkCommonName returns a device-safe reason why cn cannot be a common
// name, or "".
func checkCommonName(cn string) string {
	if !utf8.ValidString(cn) {
		return "common name is not valid utf-8"
	}
	if utf8.RuneCountInString(cn) > maxCommonName {
		return "common name is longer than 64 characters"
	}
	if strings.ContainsFunc(cn, unicode.IsControl) {
		return "common name contains control characters"
	}
	return ""
}

func (cp *compiledProfile) templateData(csr *x509.CertificateRequest, req Request) TemplateData {
	d := TemplateData{
		DeviceID: req.DeviceID,
		Profile:  cp.p.Name,
		CSR: TemplateCSR{
			CommonName:         csr.Subject.CommonName,
			SerialNumber:       csr.Subject.SerialNumber,
			Organization:       csr.Subject.Organization,
			OrganizationalUnit: csr.Subject.OrganizationalUnit,
			DNSNames:           csr.DNSNames,
			EmailAddresses:     csr.EmailAddresses,
		},
	}
	for _, ip := range csr.IPAddresses {
		d.CSR.IPAddresses = append(d.CSR.IPAddresses, ip.String())
	}
	for _, u := range csr.URIs {
		d.CSR.URIs = append(d.CSR.URIs, u.String())
	}
	return d
}

// usages returns the key usage and extended key usage for the certificate.
func (cp *compiledProfile) usages(csr *x509.CertificateRequest, pub any) (x509.KeyUsage, []x509.ExtKeyUsage, *Error) {
	ku := fixKeyUsage(cp.p.KeyUsage & keyUsagesFor(pub))
	if ku == 0 {
		return 0, nil, newError(ReasonUsageNotAllowed, nil, "no key usage of the profile fits a "+describeKey(pub)+" key")
	}
	if cp.honour[ExtensionKeyUsage] {
		der, ok, err := findExtension(csr.Extensions, oidKeyUsage)
		if err != nil {
			return 0, nil, newError(ReasonBadRequest, err, "key usage requested twice")
		}
		if ok {
			req, err := requestedKeyUsage(der)
			if err != nil {
				return 0, nil, newError(ReasonBadRequest, err, "malformed key usage extension")
			}
			if ku = fixKeyUsage(ku & req); ku == 0 {
				return 0, nil, newError(ReasonUsageNotAllowed, nil, "requested key usage not allowed")
			}
		}
	}
	eku := slices.Clone(cp.p.ExtKeyUsage)
	if cp.honour[ExtensionExtKeyUsage] && len(eku) > 0 {
		der, ok, err := findExtension(csr.Extensions, oidExtKeyUsage)
		if err != nil {
			return 0, nil, newError(ReasonBadRequest, err, "extended key usage requested twice")
		}
		if ok {
			req, err := requestedExtKeyUsage(der)
			if err != nil {
				return 0, nil, newError(ReasonBadRequest, err, "malformed extended key usage extension")
			}
			eku = slices.DeleteFunc(eku, func(u x509.ExtKeyUsage) bool { return !slices.Contains(req, u) })
			if len(eku) == 0 {
				return 0, nil, newError(ReasonUsageNotAllowed, nil, "requested extended key usage not allowed")
			}
		}
	}
	return ku, eku, nil
}

// altNames collects, deduplicates and checks the subjectAltNames.
func (cp *compiledProfile) altNames(csr *x509.CertificateRequest, cn string, req Request) (AltNames, *Error) {
	var a AltNames
	if cp.honour[ExtensionSAN] {
		a.add(AltNames{
			DNSNames:       csr.DNSNames,
			IPAddresses:    csr.IPAddresses,
			URIs:           csr.URIs,
			EmailAddresses: csr.EmailAddresses,
		})
	}
	if cp.p.CopyCNToSAN && cn != "" {
		if addr, err := netip.ParseAddr(cn); err == nil && addr.Zone() == "" {
			a.add(AltNames{IPAddresses: []net.IP{addr.AsSlice()}})
		} else if strings.Contains(cn, ".") && validDNSName(cn) {
			a.add(AltNames{DNSNames: []string{cn}})
		}
	}
	a.add(req.ExtraSANs)
	if n := a.count(); n > cp.maxSANs {
		return a, newError(ReasonTooManySANs, nil, strconv.Itoa(n)+" names, at most "+strconv.Itoa(cp.maxSANs)+" allowed")
	}
	if detail := cp.sans.check(&a); detail != "" {
		return a, newError(ReasonSANNotAllowed, nil, detail)
	}
	return a, nil
}
