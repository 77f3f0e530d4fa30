package csrcheck

import (
	"crypto/x509/pkix"
	encasn1 "encoding/asn1"
	"net/url"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// GeneralName tags (RFC 5280 section 4.2.1.6), as they appear on the wire:
// IMPLICIT context-specific, constructed where the underlying type is.
var (
	tagOtherName     = asn1.Tag(0).ContextSpecific().Constructed()
	tagEmail         = asn1.Tag(1).ContextSpecific()
	tagDNS           = asn1.Tag(2).ContextSpecific()
	tagX400          = asn1.Tag(3).ContextSpecific().Constructed()
	tagDirectoryName = asn1.Tag(4).ContextSpecific().Constructed()
	tagEDIParty      = asn1.Tag(5).ContextSpecific().Constructed()
	tagURI           = asn1.Tag(6).ContextSpecific()
	tagIP            = asn1.Tag(7).ContextSpecific()
	tagRegisteredID  = asn1.Tag(8).ContextSpecific()
)

// Length limits on names. DNS limits are RFC 1035's; the others are ours.
const (
	maxDNSNameLength = 253
	maxLabelLength   = 63
	// maxEmailLength is RFC 5321's limit on a forward path.
	maxEmailLength = 254
	maxLocalLength = 64
	// maxURILength: no device identity URI (SPIFFE ID, URN) comes close;
	// the cap keeps one request from filling a certificate with a URI.
	maxURILength = 1024
)

// checkSANs walks the subjectAltName extension value (GeneralNames) and
// checks every name. It counts the names first, so an oversized list is
// refused before any name is examined. It runs before crypto/x509 parses
// the request, because crypto/x509 refuses some bad names (non-ASCII,
// wrong IP length) with an untyped error, and accepts others (empty labels,
// misplaced wildcards) that no certificate should carry. It returns the
// number of names.
func checkSANs(value []byte, p *policy) (int, *Error) {
	s := cryptobyte.String(value)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, asn1.SEQUENCE) || !s.Empty() {
		return 0, reject(ReasonMalformed, nil, "subjectAltName is not a der sequence")
	}
	n := 0
	for count := seq; !count.Empty(); n++ {
		var entry cryptobyte.String
		var tag asn1.Tag
		if !count.ReadAnyASN1(&entry, &tag) {
			return 0, reject(ReasonMalformed, nil, "subjectAltName entry is not der")
		}
		if n >= p.MaxSANs {
			return 0, reject(ReasonTooManySANs, nil, "more than %d subject alternative names", p.MaxSANs)
		}
	}
	if n == 0 {
		return 0, reject(ReasonMalformed, nil, "subjectAltName is empty")
	}

	for !seq.Empty() {
		var data cryptobyte.String
		var tag asn1.Tag
		seq.ReadAnyASN1(&data, &tag) // cannot fail: counted above
		name := string(data)
		switch tag {
		case tagDNS:
			if why := checkDNSName(name, p.AllowWildcardDNS); why != "" {
				return 0, reject(ReasonBadName, nil, "dns name %s: %s", quote(name), why)
			}
		case tagEmail:
			if why := checkEmail(name); why != "" {
				return 0, reject(ReasonBadName, nil, "email address %s: %s", quote(name), why)
			}
		case tagURI:
			if why := checkURI(name); why != "" {
				return 0, reject(ReasonBadName, nil, "uri %s: %s", quote(name), why)
			}
		case tagIP:
			if why := checkIP(data); why != "" {
				return 0, reject(ReasonBadName, nil, "ip address %x: %s", truncate(name, 32), why)
			}
		case tagOtherName, tagX400, tagDirectoryName, tagEDIParty, tagRegisteredID:
			return 0, reject(ReasonUnsupportedName, nil, "subject alternative name of type [%d]", uint8(tag)&0x1f)
		default:
			return 0, reject(ReasonMalformed, nil, "subjectAltName entry has tag 0x%02x, not a GeneralName", uint8(tag))
		}
	}
	return n, nil
}

// checkDNSName returns why name is not a valid DNS name for a certificate,
// or "" if it is. The rules are deliberately strict (RFC 1035 preferred
// name syntax, RFC 5280 section 4.2.1.6): ASCII letters, digits and inner
// hyphens only (no underscores), labels of 1 to 63 characters, at most 253
// characters, no trailing dot, a last label that is not all digits (so an
// IPv4 address cannot pose as a DNS name), and "*" only as the whole
// leftmost label, only when allowWildcard, and only above two more labels.
func checkDNSName(name string, allowWildcard bool) string {
	switch {
	case name == "":
		return "empty"
	case len(name) > maxDNSNameLength:
		return "longer than 253 characters"
	case strings.HasSuffix(name, "."):
		return "trailing dot"
	}
	labels := strings.Split(name, ".")
	if labels[0] == "*" {
		if !allowWildcard {
			return "wildcard not allowed by policy"
		}
		if len(labels) < 3 {
			return "wildcard needs at least two labels after it"
		}
		labels = labels[1:]
	}
	for _, l := range labels {
		if why := checkLabel(l); why != "" {
			return why
		}
	}
	if allDigits(labels[len(labels)-1]) {
		return "last label is numeric"
	}
	return ""
}

func checkLabel(l string) string {
	if l == "" {
		return "empty label"
	}
	if len(l) > maxLabelLength {
		return "label longer than 63 characters"
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return "label starts or ends with a hyphen"
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-':
		case c == '*':
			return "wildcard in other than the whole leftmost label"
		case c >= utf8.RuneSelf:
			return "non-ascii character"
		default:
			return "character other than a letter, digit or hyphen"
		}
	}
	return ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkEmail returns why addr is not a valid rfc822Name, or "" if it is:
// local@domain with exactly one "@", a dot-atom local part (RFC 5322
// section 3.2.3; no quoted strings) and a DNS domain as checkDNSName sees
// it, without wildcards.
func checkEmail(addr string) string {
	if len(addr) > maxEmailLength {
		return "longer than 254 characters"
	}
	local, domain, ok := strings.Cut(addr, "@")
	if !ok {
		return "no @"
	}
	if strings.Contains(domain, "@") {
		return "more than one @"
	}
	if local == "" || len(local) > maxLocalLength {
		return "local part empty or longer than 64 characters"
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return "local part has a leading, trailing or double dot"
	}
	for i := 0; i < len(local); i++ {
		if !isAtext(local[i]) && local[i] != '.' {
			return "local part has a character outside the dot-atom set"
		}
	}
	if why := checkDNSName(domain, false); why != "" {
		return "domain: " + why
	}
	return ""
}

// isAtext reports whether c is an RFC 5322 atext character.
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// checkURI returns why s is not an acceptable URI name, or "" if it is:
// printable ASCII without spaces, at most 1024 characters, an absolute URI
// with a scheme, and either an authority whose host is a DNS name (no
// user info, no port, no IP literal) or an opaque part, as in a URN.
func checkURI(s string) string {
	if s == "" {
		return "empty"
	}
	if len(s) > maxURILength {
		return "longer than 1024 characters"
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return "character outside printable ascii"
		}
	}
	u, err := url.Parse(s)
	if err != nil {
		return "does not parse"
	}
	if u.Scheme == "" {
		return "no scheme"
	}
	if u.User != nil {
		return "has user info"
	}
	if u.Host != "" {
		if why := checkDNSName(u.Host, false); why != "" {
			return "host: " + why
		}
		return ""
	}
	if u.Opaque == "" {
		return "neither a host nor an opaque part"
	}
	return ""
}

// checkIP returns why b is not an acceptable iPAddress name, or "" if it is:
// 4 or 16 bytes, not the unspecified address.
func checkIP(b []byte) string {
	if len(b) != 4 && len(b) != 16 {
		return "length is neither 4 nor 16 bytes"
	}
	for _, c := range b {
		if c != 0 {
			return ""
		}
	}
	return "unspecified address"
}

// Subject attribute types with RFC 5280 upper bounds (appendix A.1), in
// characters.
var (
	oidCommonName = encasn1.ObjectIdentifier{2, 5, 4, 3}
	subjectBounds = []struct {
		oid encasn1.ObjectIdentifier
		max int
	}{
		{oidCommonName, 64},                                              // ub-common-name
		{encasn1.ObjectIdentifier{2, 5, 4, 4}, 40},                       // ub-surname-length
		{encasn1.ObjectIdentifier{2, 5, 4, 5}, 64},                       // ub-serial-number
		{encasn1.ObjectIdentifier{2, 5, 4, 6}, 2},                        // country: ISO 3166 alpha-2
		{encasn1.ObjectIdentifier{2, 5, 4, 7}, 128},                      // ub-locality-name
		{encasn1.ObjectIdentifier{2, 5, 4, 8}, 128},                      // ub-state-name
		{encasn1.ObjectIdentifier{2, 5, 4, 10}, 64},                      // ub-organization-name
		{encasn1.ObjectIdentifier{2, 5, 4, 11}, 64},                      // ub-organizational-unit-name
		{encasn1.ObjectIdentifier{2, 5, 4, 12}, 64},                      // ub-title
		{encasn1.ObjectIdentifier{2, 5, 4, 42}, 16},                      // ub-given-name-length
		{encasn1.ObjectIdentifier{2, 5, 4, 65}, 128},                     // ub-pseudonym
		{encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, 255},      // ub-emailaddress-length
		{encasn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, 63}, // domainComponent: one label
	}
)

// maxOtherAttribute bounds subject attributes RFC 5280 gives no upper bound
// for: generous for any real value, small next to MaxCSRSize.
const maxOtherAttribute = 256

func subjectBound(oid encasn1.ObjectIdentifier) int {
	for _, b := range subjectBounds {
		if oid.Equal(b.oid) {
			return b.max
		}
	}
	return maxOtherAttribute
}

// checkSubject checks every attribute of the parsed subject: a string
// value, non-empty, valid UTF-8, free of control characters (a NUL in a
// common name has fooled name checks before), within its upper bound, and
// at most one common name, since issuers that copy "the" CN would otherwise
// each pick a different one.
func checkSubject(name pkix.Name) *Error {
	cns := 0
	for _, atv := range name.Names {
		typ := atv.Type.String()
		v, ok := atv.Value.(string)
		if !ok {
			return reject(ReasonBadSubject, nil, "subject attribute %s is not a string", typ)
		}
		if v == "" {
			return reject(ReasonBadSubject, nil, "subject attribute %s is empty", typ)
		}
		if !utf8.ValidString(v) {
			return reject(ReasonBadSubject, nil, "subject attribute %s is not valid utf-8", typ)
		}
		for _, r := range v {
			if r < 0x20 || (0x7f <= r && r <= 0x9f) {
				return reject(ReasonBadSubject, nil, "subject attribute %s %s contains a control character", typ, quote(v))
			}
		}
		if n, max := utf8.RuneCountInString(v), subjectBound(atv.Type); n > max {
			return reject(ReasonSubjectTooLong, nil, "subject attribute %s is %d characters, upper bound is %d", typ, n, max)
		}
		if atv.Type.Equal(oidCommonName) {
			cns++
		}
	}
	if cns > 1 {
		return reject(ReasonBadSubject, nil, "subject has %d common names", cns)
	}
	return nil
}
