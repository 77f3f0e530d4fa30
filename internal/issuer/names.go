package issuer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// SANPolicy says which subjectAltNames a [Profile] allows. Each list is an
// allow-list for one name type; an empty list allows no name of that type.
// Names are compared case-insensitively where the type is (DNS names, URI
// schemes and hosts, email domains).
//
// DNS patterns:
//   - "device-42.line1.example": exactly that name;
//   - "*.line1.example": one label in front of line1.example
//     ("a.line1.example", not "a.b.line1.example", not "line1.example");
//   - "**.factory.example": one or more labels in front of factory.example
//     ("a.factory.example", "a.b.factory.example", not "factory.example":
//     list the apex separately if it is wanted).
//
// The wildcard must be the whole leftmost label; the rest must be a valid
// hostname. A bare "*" or "**" is refused. Requested DNS names must be
// hostnames: labels of letters, digits and inner hyphens, 1 to 63 octets,
// 253 in all, no trailing dot, no wildcard labels, no underscores, and a
// last label that is not all digits (so "10.0.0.1" is not a DNS name).
//
// URI patterns are "scheme://host/path":
//   - scheme must match exactly;
//   - host is a DNS pattern as above ("spiffe://*.factory.example/...");
//   - path is matched with [path.Match], so "*" matches within one segment:
//     "spiffe://factory.example/device/*" matches ".../device/42" but not
//     ".../device/42/x"; a path ending in "/**" matches anything below it:
//     "spiffe://factory.example/**" matches ".../device/42/x"; an empty
//     path matches only URIs without a path.
//
// Requested URIs must be absolute with a DNS host and a clean path (as
// path.Clean leaves it, no trailing slash, no percent-encoded characters
// that change the path) and no user info, port, query or fragment.
//
// Email patterns are DNS patterns for the part after the "@":
// "factory.example" allows "anyone@factory.example"; "**.factory.example"
// allows every subdomain. Requested addresses must be local@domain with a
// dot-atom local part (RFC 5322 atext and dots) of at most 64 octets.
//
// IPRanges: a requested IP address must lie in one of the prefixes.
// IPv4-mapped IPv6 addresses are treated as IPv4.
//
// SANs of any other GeneralName form in a CSR (otherName, directoryName,
// registeredID, ...) are never copied.
type SANPolicy struct {
	// DNS lists the allowed DNS name patterns. Default: none allowed.
	// "**" alone allows every valid hostname (for a CA whose own name
	// constraints, or the DMS policy, do the narrowing); it also works as
	// an email domain pattern and as a URI host pattern.
	DNS []string
	// IPRanges lists the prefixes allowed IP addresses must fall in.
	// Default: none allowed.
	IPRanges []netip.Prefix
	// URI lists the allowed URI patterns. Default: none allowed.
	URI []string
	// Email lists the allowed email domain patterns. Default: none allowed.
	Email []string
}

// dnsPatternKind is how a DNS pattern's leftmost label matches.
type dnsPatternKind int

const (
	dnsExact    dnsPatternKind = iota // the base name itself
	dnsOneLabel                       // "*.base": exactly one more label
	dnsAnyDepth                       // "**.base": one or more labels
	dnsAnyName                        // "**" alone: every valid hostname
)

// dnsPattern is a parsed DNS pattern; base is lowercase.
type dnsPattern struct {
	kind dnsPatternKind
	base string
}

func parseDNSPattern(s string) (dnsPattern, error) {
	var p dnsPattern
	if s == "**" {
		p.kind = dnsAnyName
		return p, nil
	}
	rest := s
	switch {
	case strings.HasPrefix(s, "**."):
		p.kind, rest = dnsAnyDepth, s[3:]
	case strings.HasPrefix(s, "*."):
		p.kind, rest = dnsOneLabel, s[2:]
	}
	if !validDNSName(rest) {
		return p, fmt.Errorf("dns pattern %q: want a hostname, optionally preceded by \"*.\" or \"**.\"", s)
	}
	p.base = strings.ToLower(rest)
	return p, nil
}

// match reports whether name, a valid lowercase hostname, matches p.
func (p dnsPattern) match(name string) bool {
	if p.kind == dnsAnyName {
		return true
	}
	if p.kind == dnsExact {
		return name == p.base
	}
	prefix, ok := strings.CutSuffix(name, "."+p.base)
	if !ok || prefix == "" {
		return false
	}
	return p.kind == dnsAnyDepth || !strings.Contains(prefix, ".")
}

func matchAnyDNS(ps []dnsPattern, name string) bool {
	for _, p := range ps {
		if p.match(name) {
			return true
		}
	}
	return false
}

// validDNSName reports whether s is a hostname as described on [SANPolicy].
// A name whose last label is all digits ("10.0.0.1") is refused: no
// top-level domain is numeric, and such names are IP addresses in disguise.
func validDNSName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	if last := s[strings.LastIndexByte(s, '.')+1:]; strings.Trim(last, "0123456789") == "" {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// uriPattern is a parsed URI pattern.
type uriPattern struct {
	scheme string // lowercase
	host   dnsPattern
	// path is the path.Match pattern, or, when below is set, the prefix
	// (ending in "/") every matching path must extend.
	path  string
	below bool
}

func parseURIPattern(s string) (uriPattern, error) {
	var p uriPattern
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || !validScheme(scheme) {
		return p, fmt.Errorf("uri pattern %q: want scheme://host/path", s)
	}
	p.scheme = strings.ToLower(scheme)
	host, pth := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		host, pth = rest[:i], rest[i:]
	}
	h, err := parseDNSPattern(host)
	if err != nil {
		return p, fmt.Errorf("uri pattern %q: host: %w", s, err)
	}
	p.host = h
	if strings.Contains(pth, "#") {
		return p, fmt.Errorf("uri pattern %q: fragments are not supported", s)
	}
	if prefix, ok := strings.CutSuffix(pth, "/**"); ok {
		p.path, p.below = prefix+"/", true
	} else {
		p.path = pth
	}
	if strings.Contains(p.path, "**") {
		return p, fmt.Errorf("uri pattern %q: \"**\" is only allowed as the last path segment", s)
	}
	if _, err := path.Match(p.path, ""); err != nil {
		return p, fmt.Errorf("uri pattern %q: path: %w", s, err)
	}
	return p, nil
}

// validScheme reports whether s is an RFC 3986 scheme.
func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// match reports whether the (already vetted, see checkURI) URI u matches p.
func (p uriPattern) match(u *url.URL) bool {
	if strings.ToLower(u.Scheme) != p.scheme || !p.host.match(strings.ToLower(u.Hostname())) {
		return false
	}
	if p.below {
		return len(u.Path) > len(p.path) && strings.HasPrefix(u.Path, p.path)
	}
	ok, err := path.Match(p.path, u.Path)
	return err == nil && ok
}

// checkURI reports why u cannot be a URI SAN, or nil.
func checkURI(u *url.URL) error {
	switch {
	case u == nil:
		return errors.New("empty uri")
	case u.Scheme == "" || u.Opaque != "" || u.Host == "":
		return fmt.Errorf("uri %s is not absolute with a host", quote(u.Redacted()))
	case u.User != nil || u.Port() != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Errorf("uri %s has user info, a port, a query or a fragment", quote(u.Redacted()))
	case !validDNSName(u.Hostname()):
		return fmt.Errorf("uri %s host is not a hostname", quote(u.Redacted()))
	case u.RawPath != "" || u.Path != "" && (path.Clean(u.Path) != u.Path || !strings.HasPrefix(u.Path, "/")):
		return fmt.Errorf("uri %s path is not clean", quote(u.Redacted()))
	}
	return nil
}

// splitEmail splits a local@domain address, checking its form as described
// on [SANPolicy]. The domain is returned lowercase.
func splitEmail(s string) (local, domain string, err error) {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return "", "", fmt.Errorf("email %s has no @", quote(s))
	}
	local, domain = s[:i], s[i+1:]
	if !validLocalPart(local) {
		return "", "", fmt.Errorf("email %s local part is not a dot-atom", quote(s))
	}
	if !validDNSName(domain) {
		return "", "", fmt.Errorf("email %s domain is not a hostname", quote(s))
	}
	return local, strings.ToLower(domain), nil
}

func validLocalPart(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' ||
			strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// ipAddr converts a SAN IP to a netip.Addr, unmapping IPv4-in-IPv6.
func ipAddr(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// compiledSANs is a parsed SANPolicy.
type compiledSANs struct {
	dns   []dnsPattern
	ips   []netip.Prefix
	uris  []uriPattern
	email []dnsPattern
}

func compileSANs(s SANPolicy) (compiledSANs, error) {
	var c compiledSANs
	var errs []error
	for _, d := range s.DNS {
		p, err := parseDNSPattern(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("san policy: %w", err))
			continue
		}
		c.dns = append(c.dns, p)
	}
	for _, pfx := range s.IPRanges {
		if !pfx.IsValid() || pfx.Addr().Is4In6() || pfx.Addr().Zone() != "" {
			errs = append(errs, fmt.Errorf("san policy: ip range %v is not a valid prefix", pfx))
			continue
		}
		c.ips = append(c.ips, pfx.Masked())
	}
	for _, u := range s.URI {
		p, err := parseURIPattern(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("san policy: %w", err))
			continue
		}
		c.uris = append(c.uris, p)
	}
	for _, e := range s.Email {
		p, err := parseDNSPattern(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("san policy: email domain: %w", err))
			continue
		}
		c.email = append(c.email, p)
	}
	return c, errors.Join(errs...)
}

// AltNames is a set of subjectAltNames, as used for [Request.ExtraSANs].
type AltNames struct {
	// DNSNames are hostnames.
	DNSNames []string
	// IPAddresses are IPv4 or IPv6 addresses.
	IPAddresses []net.IP
	// URIs are absolute URIs, e.g. SPIFFE IDs.
	URIs []*url.URL
	// EmailAddresses are local@domain addresses.
	EmailAddresses []string
}

// count returns the number of names in a.
func (a *AltNames) count() int {
	return len(a.DNSNames) + len(a.IPAddresses) + len(a.URIs) + len(a.EmailAddresses)
}

// add appends the names of b that a does not hold yet (DNS names and email
// domains compared case-insensitively, IPs after unmapping IPv4-in-IPv6).
func (a *AltNames) add(b AltNames) {
	for _, d := range b.DNSNames {
		if !containsFunc(a.DNSNames, func(x string) bool { return strings.EqualFold(x, d) }) {
			a.DNSNames = append(a.DNSNames, d)
		}
	}
	for _, ip := range b.IPAddresses {
		if !containsFunc(a.IPAddresses, func(x net.IP) bool { return x.Equal(ip) }) {
			a.IPAddresses = append(a.IPAddresses, ip)
		}
	}
	for _, u := range b.URIs {
		if !containsFunc(a.URIs, func(x *url.URL) bool { return x != nil && u != nil && x.String() == u.String() }) {
			a.URIs = append(a.URIs, u)
		}
	}
	for _, e := range b.EmailAddresses {
		if !containsFunc(a.EmailAddresses, func(x string) bool { return sameEmail(x, e) }) {
			a.EmailAddresses = append(a.EmailAddresses, e)
		}
	}
}

func sameEmail(a, b string) bool {
	i, j := strings.LastIndexByte(a, '@'), strings.LastIndexByte(b, '@')
	if i < 0 || j < 0 {
		return a == b
	}
	return a[:i] == b[:j] && strings.EqualFold(a[i:], b[j:])
}

func containsFunc[T any](s []T, f func(T) bool) bool {
	for _, x := range s {
		if f(x) {
			return true
		}
	}
	return false
}

// check returns a device-safe description of the first name in a that is
// malformed or not allowed by c, or "" when all are allowed.
func (c *compiledSANs) check(a *AltNames) string {
	for _, d := range a.DNSNames {
		if !validDNSName(d) {
			return fmt.Sprintf("dns name %s is not a valid hostname", quote(d))
		}
		if !matchAnyDNS(c.dns, strings.ToLower(d)) {
			return fmt.Sprintf("dns name %s not permitted", quote(d))
		}
	}
	for _, ip := range a.IPAddresses {
		addr, ok := ipAddr(ip)
		if !ok {
			return fmt.Sprintf("ip address %v is malformed", ip)
		}
		if !containsFunc(c.ips, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			return fmt.Sprintf("ip address %v not permitted", addr)
		}
	}
	for _, u := range a.URIs {
		if err := checkURI(u); err != nil {
			return err.Error()
		}
		if !containsFunc(c.uris, func(p uriPattern) bool { return p.match(u) }) {
			return fmt.Sprintf("uri %s not permitted", quote(u.Redacted()))
		}
	}
	for _, e := range a.EmailAddresses {
		_, domain, err := splitEmail(e)
		if err != nil {
			return err.Error()
		}
		if !matchAnyDNS(c.email, domain) {
			return fmt.Sprintf("email %s not permitted", quote(e))
		}
	}
	return ""
}

// maxQuoted caps how much of a device-supplied string goes into a message.
const maxQuoted = 128

// quote returns s as a Go-quoted string, cut to maxQuoted bytes, for
// messages that echo the device's own input back to it and to logs.
func quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "..."
	}
	return strconv.Quote(s)
}
