package est

import "strings"

// PathPrefix is the path under which every EST operation lives
// (RFC 7030, section 3.2.2).
const PathPrefix = "/.well-known/est/"

// EST operation names, the last element of a request path
// (RFC 7030, section 3.2.2). Full CMC is not supported.
const (
	OpCACerts        = "cacerts"
	OpSimpleEnroll   = "simpleenroll"
	OpSimpleReenroll = "simplereenroll"
	OpCSRAttrs       = "csrattrs"
	OpServerKeygen   = "serverkeygen"
)

// MaxLabelLen is the longest CA label ParsePath accepts.
const MaxLabelLen = 64

// ParsePath splits an EST request path, such as r.URL.Path, into the
// optional CA label and the operation:
//
//	/.well-known/est/cacerts            -> "", "cacerts", true
//	/.well-known/est/edge-1/simpleenroll -> "edge-1", "simpleenroll", true
//
// The operation is one of the Op constants, matched case-sensitively. A
// label is 1 to MaxLabelLen characters from [A-Za-z0-9._-], other than "."
// and "..". One trailing slash is tolerated. Anything else, including
// empty path elements, unknown operations and paths outside PathPrefix,
// returns ok false.
func ParsePath(p string) (label, op string, ok bool) {
	rest, found := strings.CutPrefix(p, PathPrefix)
	if !found {
		return "", "", false
	}
	rest = strings.TrimSuffix(rest, "/")
	first, second, hasLabel := strings.Cut(rest, "/")
	if !hasLabel {
		if !isOp(first) {
			return "", "", false
		}
		return "", first, true
	}
	if !validLabel(first) || !isOp(second) {
		return "", "", false
	}
	return first, second, true
}

// isOp reports whether s names a supported operation.
func isOp(s string) bool {
	switch s {
	case OpCACerts, OpSimpleEnroll, OpSimpleReenroll, OpCSRAttrs, OpServerKeygen:
		return true
	}
	return false
}

// validLabel reports whether s is an acceptable CA label. "." and ".."
// match the character set but are refused: proxies and path cleaners
// treat them as directory references, so such a label could not reach us
// reliably anyway.
func validLabel(s string) bool {
	if len(s) == 0 || len(s) > MaxLabelLen || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
