package csrcheck

import (
	encasn1 "encoding/asn1"
	"encoding/hex"
	"math/big"
	"strconv"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// OIDs this package recognises, as the content octets of their DER encoding
// so raw OIDs compare byte for byte whatever the size of their arcs.
var (
	oidExtensionRequest  = oidKey(encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14})
	oidChallengePassword = oidKey(encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7})

	oidKeyRSA     = oidKey(encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1})
	oidKeyECDSA   = oidKey(encasn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1})
	oidKeyEd25519 = oidKey(encasn1.ObjectIdentifier{1, 3, 101, 112})

	oidExtSubjectAltName   = oidKey(encasn1.ObjectIdentifier{2, 5, 29, 17})
	oidExtKeyUsage         = oidKey(encasn1.ObjectIdentifier{2, 5, 29, 15})
	oidExtExtKeyUsage      = oidKey(encasn1.ObjectIdentifier{2, 5, 29, 37})
	oidExtBasicConstraints = oidKey(encasn1.ObjectIdentifier{2, 5, 29, 19})
)

// curveNames maps the named-curve OIDs crypto/x509 can parse to the names
// elliptic.Curve.Params reports.
var curveNames = map[string]string{
	oidKey(encasn1.ObjectIdentifier{1, 3, 132, 0, 33}):          "P-224",
	oidKey(encasn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}): "P-256",
	oidKey(encasn1.ObjectIdentifier{1, 3, 132, 0, 34}):          "P-384",
	oidKey(encasn1.ObjectIdentifier{1, 3, 132, 0, 35}):          "P-521",
}

// oidKey returns the DER content octets of oid as a string, for use as a map
// key. It panics on an OID encoding/asn1 cannot marshal; it is only called
// on the constants above.
func oidKey(oid encasn1.ObjectIdentifier) string {
	der, err := encasn1.Marshal(oid)
	if err != nil {
		panic("csrcheck: bad built-in oid " + oid.String())
	}
	s := cryptobyte.String(der)
	var body cryptobyte.String
	if !s.ReadASN1(&body, asn1.OBJECT_IDENTIFIER) {
		panic("csrcheck: bad built-in oid " + oid.String())
	}
	return string(body)
}

// readOID reads a DER OBJECT IDENTIFIER and returns its content octets. It
// checks the encoding (non-empty, every arc minimally encoded, last byte
// terminating an arc) but not the size of the arcs, so OIDs such as 2.25.x
// with 128-bit arcs compare correctly.
func readOID(s *cryptobyte.String) (string, bool) {
	var body cryptobyte.String
	if !s.ReadASN1(&body, asn1.OBJECT_IDENTIFIER) || len(body) == 0 || body[len(body)-1]&0x80 != 0 {
		return "", false
	}
	start := true
	for _, c := range body {
		if start && c == 0x80 {
			return "", false
		}
		start = c&0x80 == 0
	}
	return string(body), true
}

// oidString renders the content octets of an OID in dotted form for error
// details, or in hex when an arc does not fit in 64 bits. The result is
// truncated like quoted input.
func oidString(body string) string {
	var b strings.Builder
	var v uint64
	first := true
	for i := 0; i < len(body); i++ {
		c := body[i]
		if v > 1<<56 {
			return "oid:" + hex.EncodeToString([]byte(truncate(body, maxQuoted/2)))
		}
		v = v<<7 | uint64(c&0x7f)
		if c&0x80 != 0 {
			continue
		}
		if first {
			switch {
			case v < 40:
				b.WriteString("0." + strconv.FormatUint(v, 10))
			case v < 80:
				b.WriteString("1." + strconv.FormatUint(v-40, 10))
			default:
				b.WriteString("2." + strconv.FormatUint(v-80, 10))
			}
			first = false
		} else {
			b.WriteString("." + strconv.FormatUint(v, 10))
		}
		v = 0
		if b.Len() > maxQuoted {
			return b.String() + "..."
		}
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// rawCSR is what walk learns from the DER structure before crypto/x509
// parses it.
type rawCSR struct {
	version    *big.Int
	spki       []byte // the whole SubjectPublicKeyInfo element
	extensions []rawExtension
	// san is the extnValue of the subjectAltName extension, nil when the
	// request has none.
	san []byte
}

// rawExtension is one Extension from the extensionRequest attribute.
type rawExtension struct {
	oid      string // DER content octets
	critical bool
	value    []byte
}

// walk checks the DER structure of a CertificationRequest (RFC 2986 section
// 4) with cryptobyte, strictly: DER only, nothing after the outer SEQUENCE
// nor inside any SEQUENCE past its last field. It also walks the attributes
// and the requested extensions, rejecting duplicates. crypto/x509 does part
// of this too, but reports failures as untyped errors, ignores attributes
// it cannot parse, reads only the first value of an extensionRequest and
// ignores bytes after its extension list; walking first closes those gaps
// and gives every failure its Reason.
func walk(der []byte) (*rawCSR, *Error) {
	input := cryptobyte.String(der)
	var req cryptobyte.String
	if !input.ReadASN1(&req, asn1.SEQUENCE) {
		return nil, reject(ReasonMalformed, nil, "input is not a der sequence")
	}
	if !input.Empty() {
		return nil, reject(ReasonTrailingData, nil, "%d bytes after the certification request", len(input))
	}

	var info, sigAlg cryptobyte.String
	var sig encasn1.BitString
	if !req.ReadASN1(&info, asn1.SEQUENCE) {
		return nil, reject(ReasonMalformed, nil, "certification request info is not a der sequence")
	}
	if !req.ReadASN1(&sigAlg, asn1.SEQUENCE) {
		return nil, reject(ReasonMalformed, nil, "signature algorithm is not a der sequence")
	}
	if !req.ReadASN1BitString(&sig) || sig.BitLength%8 != 0 {
		return nil, reject(ReasonMalformed, nil, "signature is not a der bit string of whole bytes")
	}
	if !req.Empty() {
		return nil, reject(ReasonMalformed, nil, "%d bytes after the signature", len(req))
	}

	out := &rawCSR{version: new(big.Int)}
	var subject, spki, attrs cryptobyte.String
	if !info.ReadASN1Integer(out.version) {
		return nil, reject(ReasonMalformed, nil, "version is not a der integer")
	}
	if !info.ReadASN1Element(&subject, asn1.SEQUENCE) {
		return nil, reject(ReasonMalformed, nil, "subject is not a der sequence")
	}
	if !info.ReadASN1Element(&spki, asn1.SEQUENCE) {
		return nil, reject(ReasonMalformed, nil, "subject public key info is not a der sequence")
	}
	out.spki = spki
	// attributes [0] IMPLICIT SET OF Attribute. RFC 2986 makes the field
	// mandatory (it may be empty) and crypto/x509 requires it too.
	if !info.ReadASN1(&attrs, asn1.Tag(0).ContextSpecific().Constructed()) {
		return nil, reject(ReasonMalformed, nil, "attributes field missing or not a der [0] set")
	}
	if !info.Empty() {
		return nil, reject(ReasonMalformed, nil, "%d bytes after the attributes", len(info))
	}
	if e := out.walkAttributes(attrs); e != nil {
		return nil, e
	}
	return out, nil
}

// walkAttributes checks each Attribute ::= SEQUENCE { type OID, values SET
// SIZE(1..MAX) }, rejects a repeated type, and parses the extensionRequest.
func (out *rawCSR) walkAttributes(attrs cryptobyte.String) *Error {
	seen := make(map[string]bool)
	for !attrs.Empty() {
		var attr, values cryptobyte.String
		if !attrs.ReadASN1(&attr, asn1.SEQUENCE) {
			return reject(ReasonMalformed, nil, "attribute is not a der sequence")
		}
		oid, ok := readOID(&attr)
		if !ok {
			return reject(ReasonMalformed, nil, "attribute type is not a der object identifier")
		}
		if !attr.ReadASN1(&values, asn1.SET) || !attr.Empty() {
			return reject(ReasonMalformed, nil, "attribute %s values are not a der set", oidString(oid))
		}
		if seen[oid] {
			return reject(ReasonDuplicateAttribute, nil, "attribute %s appears more than once", oidString(oid))
		}
		seen[oid] = true

		var first cryptobyte.String
		n := 0
		for !values.Empty() {
			var v cryptobyte.String
			var tag asn1.Tag
			if !values.ReadAnyASN1Element(&v, &tag) {
				return reject(ReasonMalformed, nil, "attribute %s value is not der", oidString(oid))
			}
			if n == 0 {
				first = v
			}
			n++
		}
		if n == 0 {
			return reject(ReasonMalformed, nil, "attribute %s has no values", oidString(oid))
		}

		switch oid {
		case oidChallengePassword:
			// Single-valued (RFC 2985 section 5.4.1). The value is a
			// secret and never goes into a detail.
			if n != 1 {
				return reject(ReasonDuplicateAttribute, nil, "challengePassword attribute has %d values", n)
			}
		case oidExtensionRequest:
			// Single-valued (RFC 2985 section 5.4.2). crypto/x509 reads
			// only the first value, so a second one could hide extensions
			// from it that another parser would honour.
			if n != 1 {
				return reject(ReasonDuplicateAttribute, nil, "extensionRequest attribute has %d values", n)
			}
			if e := out.walkExtensions(first); e != nil {
				return e
			}
		}
	}
	return nil
}

// walkExtensions parses Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension
// from the extensionRequest value and rejects a repeated extension OID.
func (out *rawCSR) walkExtensions(value cryptobyte.String) *Error {
	var exts cryptobyte.String
	if !value.ReadASN1(&exts, asn1.SEQUENCE) || !value.Empty() {
		return reject(ReasonMalformed, nil, "extensionRequest value is not a der sequence")
	}
	seen := make(map[string]bool)
	for !exts.Empty() {
		var ext cryptobyte.String
		var e rawExtension
		if !exts.ReadASN1(&ext, asn1.SEQUENCE) {
			return reject(ReasonMalformed, nil, "requested extension is not a der sequence")
		}
		oid, ok := readOID(&ext)
		if !ok {
			return reject(ReasonMalformed, nil, "requested extension id is not a der object identifier")
		}
		e.oid = oid
		if !readOptionalBoolean(&ext, &e.critical) ||
			!ext.ReadASN1Bytes(&e.value, asn1.OCTET_STRING) || !ext.Empty() {
			return reject(ReasonMalformed, nil, "requested extension %s is not der", oidString(oid))
		}
		if seen[oid] {
			return reject(ReasonDuplicateExtension, nil, "extension %s requested more than once", oidString(oid))
		}
		seen[oid] = true
		if oid == oidExtSubjectAltName {
			out.san = e.value
		}
		out.extensions = append(out.extensions, e)
	}
	return nil
}

// checkExtensions rejects a critical extension this package does not
// understand and checks the encoding of those it does. A critical requested
// extension asks the CA not to issue unless it honours it; the issuer only
// honours these four.
func checkExtensions(exts []rawExtension) *Error {
	for _, e := range exts {
		v := cryptobyte.String(e.value)
		switch e.oid {
		case oidExtSubjectAltName:
			// Checked with the names.
		case oidExtKeyUsage:
			var bits encasn1.BitString
			if !v.ReadASN1BitString(&bits) || !v.Empty() {
				return reject(ReasonMalformed, nil, "requested keyUsage is not a der bit string")
			}
		case oidExtExtKeyUsage:
			var seq cryptobyte.String
			if !v.ReadASN1(&seq, asn1.SEQUENCE) || !v.Empty() || seq.Empty() {
				return reject(ReasonMalformed, nil, "requested extKeyUsage is not a non-empty der sequence")
			}
			for !seq.Empty() {
				if _, ok := readOID(&seq); !ok {
					return reject(ReasonMalformed, nil, "requested extKeyUsage holds a non-oid")
				}
			}
		case oidExtBasicConstraints:
			// SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint
			// INTEGER (0..MAX) OPTIONAL }
			var seq cryptobyte.String
			var isCA bool
			pathLen := new(big.Int)
			if !v.ReadASN1(&seq, asn1.SEQUENCE) || !v.Empty() || !readOptionalBoolean(&seq, &isCA) ||
				(seq.PeekASN1Tag(asn1.INTEGER) && (!seq.ReadASN1Integer(pathLen) || pathLen.Sign() < 0)) ||
				!seq.Empty() {
				return reject(ReasonMalformed, nil, "requested basicConstraints is not der")
			}
		default:
			if e.critical {
				return reject(ReasonUnknownCriticalExtension, nil, "extension %s is critical and not understood", oidString(e.oid))
			}
		}
	}
	return nil
}

// readOptionalBoolean reads a BOOLEAN if one comes next, for fields declared
// BOOLEAN DEFAULT FALSE. (cryptobyte's ReadOptionalASN1Boolean is for
// explicitly tagged fields.) An explicit FALSE, which DER forbids, is
// tolerated: some device stacks write it, and it means what omission means.
func readOptionalBoolean(s *cryptobyte.String, out *bool) bool {
	*out = false
	if !s.PeekASN1Tag(asn1.BOOLEAN) {
		return true
	}
	return s.ReadASN1Boolean(out)
}
