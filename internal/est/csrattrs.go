package est

import (
	"bytes"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// MaxCSRAttrsSize is the largest DER CsrAttrs that ParseCSRAttrs parses and
// EncodeCSRAttrs produces. A server asks for a handful of attributes, well
// under a kilobyte; the cap bounds the memory and work a hostile server
// can cause a client before anything is parsed.
const MaxCSRAttrsSize = 64 << 10

// MaxCSRAttrs is the most AttrOrOID entries in a CsrAttrs, and the most
// values in one attribute, that ParseCSRAttrs and EncodeCSRAttrs accept.
const MaxCSRAttrs = 256

// Object identifiers used in the default CSR attributes.
var (
	// OIDChallengePassword is PKCS#9 challengePassword (RFC 2985), which
	// RFC 7030, section 3.5 uses to carry the tls-unique channel binding.
	OIDChallengePassword = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}
	// OIDECPublicKey is id-ecPublicKey (RFC 5480). As an attribute, with a
	// curve OID as its value, it asks for an EC key on that curve.
	OIDECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	// OIDP256 is secp256r1, also known as prime256v1 and NIST P-256
	// (RFC 5480).
	OIDP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	// OIDECDSAWithSHA256 is ecdsa-with-SHA256 (RFC 5758), asking for the
	// CSR to be signed with it.
	OIDECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
)

// p256Value is OIDP256 as a DER OBJECT IDENTIFIER element.
var p256Value = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// CSRAttr is one AttrOrOID of a CsrAttrs (RFC 7030, section 4.5.2): either
// a bare OID, asking for something identified by it to be in the CSR
// (a key type, a signature algorithm, an attribute), or an attribute whose
// values say what to put there.
type CSRAttr struct {
	// OID is the bare OID, or the attribute type.
	OID asn1.ObjectIdentifier
	// Values are the attribute's values, each one DER element. Nil means a
	// bare OID; an attribute has at least one value. EncodeCSRAttrs uses
	// FullBytes when set and otherwise encodes Class, Tag, IsCompound and
	// Bytes; ParseCSRAttrs sets all of them.
	Values []asn1.RawValue
}

// DefaultCSRAttrs returns the CSR attributes the agent serves: the
// challengePassword OID (so clients that can include tls-unique do),
// an ecPublicKey attribute with value secp256r1 (an EC P-256 key), and
// ecdsa-with-SHA256. The result is freshly allocated on each call.
func DefaultCSRAttrs() []CSRAttr {
	v := bytes.Clone(p256Value)
	return []CSRAttr{
		{OID: slices.Clone(OIDChallengePassword)},
		{OID: slices.Clone(OIDECPublicKey), Values: []asn1.RawValue{{
			Class:     asn1.ClassUniversal,
			Tag:       asn1.TagOID,
			Bytes:     v[2:],
			FullBytes: v,
		}}},
		{OID: slices.Clone(OIDECDSAWithSHA256)},
	}
}

// Errors returned by EncodeCSRAttrs and ParseCSRAttrs. Returned errors wrap
// one of them with detail added; test with errors.Is.
var (
	// ErrCSRAttrsTooLarge means the input or the encoding exceeds
	// MaxCSRAttrsSize, or holds more than MaxCSRAttrs entries or values.
	ErrCSRAttrsTooLarge = errors.New("est: csr attributes too large")
	// ErrCSRAttrsMalformed means the input is not a DER CsrAttrs, or that
	// a CSRAttr to encode is invalid.
	ErrCSRAttrsMalformed = errors.New("est: malformed csr attributes")
)

// EncodeCSRAttrs returns the DER encoding of a CsrAttrs holding attrs in the
// given order: a bare OBJECT IDENTIFIER for a CSRAttr with nil Values, an
// Attribute { type, SET OF values } otherwise. Values are sorted by their
// encoding, as DER requires of a SET OF. An empty or nil attrs encodes as an
// empty SEQUENCE, though a server with nothing to ask for should answer
// csrattrs with 204 instead (see WriteCSRAttrs).
//
// Errors wrap ErrCSRAttrsMalformed (an invalid OID, an attribute with an
// empty non-nil Values, or a value that is not one well-formed DER element)
// or ErrCSRAttrsTooLarge.
func EncodeCSRAttrs(attrs []CSRAttr) ([]byte, error) {
	if len(attrs) > MaxCSRAttrs {
		return nil, fmt.Errorf("%w: %d entries, limit %d", ErrCSRAttrsTooLarge, len(attrs), MaxCSRAttrs)
	}
	// Validate and encode the values first, so the builder below cannot
	// fail on them.
	values := make([][][]byte, len(attrs))
	for i, a := range attrs {
		if err := checkOID(a.OID); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrCSRAttrsMalformed, i, err)
		}
		if a.Values == nil {
			continue
		}
		if len(a.Values) == 0 {
			return nil, fmt.Errorf("%w: entry %d (%v): attribute has no values", ErrCSRAttrsMalformed, i, a.OID)
		}
		if len(a.Values) > MaxCSRAttrs {
			return nil, fmt.Errorf("%w: entry %d (%v): %d values, limit %d", ErrCSRAttrsTooLarge, i, a.OID, len(a.Values), MaxCSRAttrs)
		}
		enc := make([][]byte, len(a.Values))
		for j, v := range a.Values {
			der, err := encodeValue(v)
			if err != nil {
				return nil, fmt.Errorf("%w: entry %d (%v) value %d: %w", ErrCSRAttrsMalformed, i, a.OID, j, err)
			}
			enc[j] = der
		}
		// DER orders the elements of a SET OF by their encodings.
		slices.SortFunc(enc, bytes.Compare)
		values[i] = enc
	}

	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for i, a := range attrs {
			if values[i] == nil {
				b.AddASN1ObjectIdentifier(a.OID)
				continue
			}
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(a.OID)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					for _, v := range values[i] {
						b.AddBytes(v)
					}
				})
			})
		}
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSRAttrsMalformed, err)
	}
	if len(der) > MaxCSRAttrsSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrCSRAttrsTooLarge, len(der), MaxCSRAttrsSize)
	}
	return der, nil
}

// checkOID reports why oid cannot be DER-encoded, if it cannot.
func checkOID(oid asn1.ObjectIdentifier) error {
	if len(oid) < 2 {
		return fmt.Errorf("oid %v has fewer than two arcs", oid)
	}
	if oid[0] < 0 || oid[0] > 2 || (oid[0] < 2 && oid[1] >= 40) {
		return fmt.Errorf("oid %v has invalid first arcs", oid)
	}
	for _, arc := range oid {
		if arc < 0 {
			return fmt.Errorf("oid %v has a negative arc", oid)
		}
	}
	return nil
}

// encodeValue returns the DER element of v, checking that it is exactly
// one well-formed element so it cannot corrupt the framing around it.
func encodeValue(v asn1.RawValue) ([]byte, error) {
	der := v.FullBytes
	if len(der) == 0 {
		if v.Class < asn1.ClassUniversal || v.Class > asn1.ClassPrivate || v.Tag < 0 {
			return nil, fmt.Errorf("invalid class %d or tag %d", v.Class, v.Tag)
		}
		var err error
		if der, err = asn1.Marshal(v); err != nil {
			return nil, err
		}
	}
	var check asn1.RawValue
	rest, err := asn1.Unmarshal(der, &check)
	if err != nil {
		return nil, fmt.Errorf("not a der element: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d bytes after the der element", len(rest))
	}
	return der, nil
}

// ParseCSRAttrs parses a DER CsrAttrs (RFC 7030, section 4.5.2) and returns
// its entries in order, attribute values in the order they appear. The
// input must be DER: indefinite lengths and trailing data are refused. An
// empty CsrAttrs returns no entries and no error.
//
// Input over MaxCSRAttrsSize, and more than MaxCSRAttrs entries or values
// in one attribute, are refused with ErrCSRAttrsTooLarge before or while
// parsing; anything else wrong wraps ErrCSRAttrsMalformed. OIDs with arcs
// too large for asn1.ObjectIdentifier are malformed here. The result does
// not alias der.
func ParseCSRAttrs(der []byte) ([]CSRAttr, error) {
	// Cap before parsing: see MaxCSRAttrsSize.
	if len(der) > MaxCSRAttrsSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrCSRAttrsTooLarge, len(der), MaxCSRAttrsSize)
	}
	input := cryptobyte.String(der)
	var seq cryptobyte.String
	if !input.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, fmt.Errorf("%w: not a der sequence", ErrCSRAttrsMalformed)
	}
	if !input.Empty() {
		return nil, fmt.Errorf("%w: %d bytes after the sequence", ErrCSRAttrsMalformed, len(input))
	}
	var attrs []CSRAttr
	for i := 0; !seq.Empty(); i++ {
		if i == MaxCSRAttrs {
			return nil, fmt.Errorf("%w: more than %d entries", ErrCSRAttrsTooLarge, MaxCSRAttrs)
		}
		a, err := parseAttrOrOID(&seq)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		attrs = append(attrs, a)
	}
	return attrs, nil
}

// parseAttrOrOID reads one AttrOrOID from s.
func parseAttrOrOID(s *cryptobyte.String) (CSRAttr, error) {
	var a CSRAttr
	if s.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER) {
		if !s.ReadASN1ObjectIdentifier(&a.OID) {
			return a, fmt.Errorf("%w: invalid or unsupported oid", ErrCSRAttrsMalformed)
		}
		return a, nil
	}
	var attr, set cryptobyte.String
	if !s.ReadASN1(&attr, cbasn1.SEQUENCE) {
		return a, fmt.Errorf("%w: neither an oid nor an attribute sequence", ErrCSRAttrsMalformed)
	}
	if !attr.ReadASN1ObjectIdentifier(&a.OID) {
		return a, fmt.Errorf("%w: attribute type: invalid or unsupported oid", ErrCSRAttrsMalformed)
	}
	if !attr.ReadASN1(&set, cbasn1.SET) {
		return a, fmt.Errorf("%w: attribute %v: values are not a der set", ErrCSRAttrsMalformed, a.OID)
	}
	if !attr.Empty() {
		return a, fmt.Errorf("%w: attribute %v: %d bytes after the values", ErrCSRAttrsMalformed, a.OID, len(attr))
	}
	if set.Empty() {
		// SET SIZE (1..MAX): an attribute always has a value.
		return a, fmt.Errorf("%w: attribute %v has no values", ErrCSRAttrsMalformed, a.OID)
	}
	// Clone once so the values do not alias (and pin) the caller's buffer.
	rest := []byte(bytes.Clone(set))
	for j := 0; len(rest) > 0; j++ {
		if j == MaxCSRAttrs {
			return a, fmt.Errorf("%w: attribute %v: more than %d values", ErrCSRAttrsTooLarge, a.OID, MaxCSRAttrs)
		}
		var v asn1.RawValue
		var err error
		// encoding/asn1 rather than cryptobyte: values may use
		// high-tag-number identifiers, which cryptobyte does not read.
		if rest, err = asn1.Unmarshal(rest, &v); err != nil {
			return a, fmt.Errorf("%w: attribute %v value %d: %w", ErrCSRAttrsMalformed, a.OID, j, err)
		}
		a.Values = append(a.Values, v)
	}
	return a, nil
}
