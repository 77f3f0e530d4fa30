// Package pkcs7 encodes and decodes the "certs-only" PKCS#7 / CMS message
// (RFC 5652) that EST uses to carry certificates (RFC 7030, sections 4.1.3
// and 4.2.3, media type "application/pkcs7-mime; smime-type=certs-only"):
// a degenerate SignedData with no signers whose only payload is its
// certificates field.
//
// We wrote this rather than import a library. EST needs only this one
// degenerate case; the maintained Go PKCS#7 libraries bring signing and
// encryption code we do not want in the agent, and the others are
// unmaintained forks. A codec of a couple of hundred lines on
// golang.org/x/crypto/cryptobyte is easy to audit and to fuzz.
//
// # What is accepted
//
// [EncodeCertsOnly] writes DER. [DecodeCertsOnly] reads DER only: BER
// indefinite-length encodings, as written for instance by
// "openssl cms -sign -stream", are rejected with [ErrUnsupported] rather than
// converted. EST servers send DER in practice, and a BER-to-DER converter
// would be more code than the rest of the package.
//
// [DecodeCertsOnly] also accepts a SignedData that does have signers, so the
// certificates in a signed message from a CA can still be read, but it never
// checks a signature: the certificates it returns are exactly as trustworthy
// as the channel they came over, and callers verify them as a chain.
//
// # Certificate order
//
// The certificates field is a SET OF, which DER would sort by encoding.
// [EncodeCertsOnly] keeps the caller's order instead, because EST clients
// and many other readers take the first certificate as the leaf of an
// enrollment response. OpenSSL does the same (it encodes the field as an
// unsorted SEQUENCE OF under the same tag) and so do the EST servers we know
// of. [DecodeCertsOnly] returns certificates in the order they appear.
//
// # Wire format
//
// EST sends the message base64-encoded. [EncodeBase64CertsOnly] and
// [DecodeBase64CertsOnly] wrap the DER codec for that; see their docs.
package pkcs7

import (
	"bytes"
	"crypto/x509"
	encoding_asn1 "encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

const (
	// MaxSize is the largest DER message DecodeCertsOnly parses, and the
	// largest EncodeCertsOnly produces. An EST response holds one chain, a
	// few kilobytes; the cap bounds the memory and work a hostile peer can
	// cause before anything is parsed.
	MaxSize = 1 << 20

	// MaxCerts is the most certificates a message may carry. EST sends a
	// chain or a handful of CA certificates, not a database; the cap bounds
	// the number of x509.ParseCertificate calls a hostile message can cause.
	MaxCerts = 100
)

// Errors returned by this package. Returned errors wrap exactly one of them
// with detail added; test with errors.Is.
var (
	// ErrTooLarge means the input exceeds MaxSize (MaxBase64Size for the
	// base64 form), or that an encoding would.
	ErrTooLarge = errors.New("pkcs7: message too large")

	// ErrTooManyCerts means a message holds, or would hold, more than
	// MaxCerts certificates.
	ErrTooManyCerts = errors.New("pkcs7: too many certificates")

	// ErrMalformed means the input is not a well-formed DER ContentInfo
	// holding a SignedData, or not valid base64 or PEM, or that a
	// certificate in it does not parse. EncodeCertsOnly returns it for a nil
	// certificate or one whose Raw field is not a single DER SEQUENCE.
	ErrMalformed = errors.New("pkcs7: malformed message")

	// ErrNotSignedData means the ContentInfo is well-formed but its content
	// type is not id-signedData, for example an encrypted message.
	ErrNotSignedData = errors.New("pkcs7: content type is not signedData")

	// ErrUnsupported means the input is valid BER but uses something this
	// package does not handle: indefinite-length encoding, or a certificate
	// choice other than an X.509 certificate (such as an attribute
	// certificate).
	ErrUnsupported = errors.New("pkcs7: unsupported encoding")

	// ErrNoCertificates means a message carries no certificates, or that
	// EncodeCertsOnly was given none. A certs-only message exists to carry
	// certificates, so an empty one is an error.
	ErrNoCertificates = errors.New("pkcs7: no certificates")
)

var (
	// oidData is id-data (RFC 5652, section 4).
	oidData = encoding_asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	// oidSignedData is id-signedData (RFC 5652, section 5.1).
	oidSignedData = encoding_asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
)

var (
	// tagExplicit0 is the [0] EXPLICIT content of a ContentInfo and the
	// [0] IMPLICIT certificates field of a SignedData.
	tagExplicit0 = asn1.Tag(0).ContextSpecific().Constructed()
	// tagCRLs is the [1] IMPLICIT crls field of a SignedData.
	tagCRLs = asn1.Tag(1).ContextSpecific().Constructed()
)

// maxCMSVersion is the largest CMSVersion defined by RFC 5652 (v5).
const maxCMSVersion = 5

// EncodeCertsOnly returns the DER encoding of a certs-only ContentInfo
// carrying certs, in the given order (see the package doc for why they are
// not sorted). It returns ErrNoCertificates for an empty slice,
// ErrTooManyCerts for more than MaxCerts, ErrMalformed for a nil certificate
// or one without a valid Raw encoding, and ErrTooLarge if the result would
// exceed MaxSize.
func EncodeCertsOnly(certs []*x509.Certificate) ([]byte, error) {
	if len(certs) == 0 {
		return nil, ErrNoCertificates
	}
	if len(certs) > MaxCerts {
		return nil, fmt.Errorf("%w: %d, limit %d", ErrTooManyCerts, len(certs), MaxCerts)
	}
	for i, c := range certs {
		if c == nil {
			return nil, fmt.Errorf("%w: certificate %d is nil", ErrMalformed, i)
		}
		// Copy Raw into the message verbatim, but only if it is one DER
		// element: anything else would corrupt the framing around it.
		raw := cryptobyte.String(c.Raw)
		var elem cryptobyte.String
		if !raw.ReadASN1Element(&elem, asn1.SEQUENCE) || !raw.Empty() {
			return nil, fmt.Errorf("%w: certificate %d: raw encoding is not a single DER sequence", ErrMalformed, i)
		}
	}

	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // ContentInfo
		b.AddASN1ObjectIdentifier(oidSignedData)
		b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignedData
				b.AddASN1Int64(1)                                 // version
				b.AddASN1(asn1.SET, func(*cryptobyte.Builder) {}) // digestAlgorithms
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidData) // encapContentInfo, no eContent
				})
				b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { // certificates
					for _, c := range certs {
						b.AddBytes(c.Raw)
					}
				})
				b.AddASN1(asn1.SET, func(*cryptobyte.Builder) {}) // signerInfos
			})
		})
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("pkcs7: building message: %w", err)
	}
	if len(der) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(der), MaxSize)
	}
	return der, nil
}

// DecodeCertsOnly parses a DER ContentInfo holding a SignedData and returns
// the X.509 certificates in its certificates field, in order. Signer
// information, digest algorithms, encapsulated content and CRLs are skipped;
// signatures are not verified.
//
// Errors wrap ErrTooLarge (input over MaxSize), ErrTooManyCerts,
// ErrNotSignedData, ErrUnsupported (indefinite length, non-X.509 certificate
// choices), ErrNoCertificates (field absent or empty) or ErrMalformed.
//
// The returned certificates do not alias der.
func DecodeCertsOnly(der []byte) ([]*x509.Certificate, error) {
	// Cap before parsing: see MaxSize.
	if len(der) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(der), MaxSize)
	}

	input := cryptobyte.String(der)
	var contentInfo cryptobyte.String
	if err := readASN1(&input, &contentInfo, asn1.SEQUENCE, "contentInfo"); err != nil {
		return nil, err
	}
	if !input.Empty() {
		return nil, fmt.Errorf("%w: %d bytes of trailing data after contentInfo", ErrMalformed, len(input))
	}

	var contentType encoding_asn1.ObjectIdentifier
	if err := readOID(&contentInfo, &contentType, "contentInfo contentType"); err != nil {
		return nil, err
	}
	if !contentType.Equal(oidSignedData) {
		return nil, fmt.Errorf("%w: got %v", ErrNotSignedData, contentType)
	}
	var content, signedData cryptobyte.String
	if err := readASN1(&contentInfo, &content, tagExplicit0, "contentInfo content"); err != nil {
		return nil, err
	}
	if err := requireEmpty(contentInfo, "contentInfo"); err != nil {
		return nil, err
	}
	if err := readASN1(&content, &signedData, asn1.SEQUENCE, "signedData"); err != nil {
		return nil, err
	}
	if err := requireEmpty(content, "contentInfo content"); err != nil {
		return nil, err
	}

	// SignedData ::= SEQUENCE {
	//   version CMSVersion,
	//   digestAlgorithms SET OF DigestAlgorithmIdentifier,
	//   encapContentInfo EncapsulatedContentInfo,
	//   certificates [0] IMPLICIT CertificateSet OPTIONAL,
	//   crls [1] IMPLICIT RevocationInfoChoices OPTIONAL,
	//   signerInfos SET OF SignerInfo }
	var version int64
	before := signedData
	if !signedData.ReadASN1Integer(&version) {
		return nil, elementError(before, asn1.INTEGER, "signedData version")
	}
	if version < 0 || version > maxCMSVersion {
		return nil, fmt.Errorf("%w: signedData version %d", ErrMalformed, version)
	}
	var skipped, certField cryptobyte.String
	if err := readASN1(&signedData, &skipped, asn1.SET, "signedData digestAlgorithms"); err != nil {
		return nil, err
	}
	if err := readASN1(&signedData, &skipped, asn1.SEQUENCE, "signedData encapContentInfo"); err != nil {
		return nil, err
	}
	var hasCerts bool
	before = signedData
	if !signedData.ReadOptionalASN1(&certField, &hasCerts, tagExplicit0) {
		return nil, elementError(before, tagExplicit0, "signedData certificates")
	}
	before = signedData
	if !signedData.ReadOptionalASN1(&skipped, nil, tagCRLs) {
		return nil, elementError(before, tagCRLs, "signedData crls")
	}
	// signerInfos is mandatory even when empty; its absence means the
	// message was cut short or is not a SignedData at all.
	if err := readASN1(&signedData, &skipped, asn1.SET, "signedData signerInfos"); err != nil {
		return nil, err
	}
	if err := requireEmpty(signedData, "signedData"); err != nil {
		return nil, err
	}

	if !hasCerts {
		return nil, fmt.Errorf("%w: signedData has no certificates field", ErrNoCertificates)
	}
	return parseCertificates(certField)
}

// parseCertificates parses the contents of a CertificateSet.
func parseCertificates(field cryptobyte.String) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for i := 0; !field.Empty(); i++ {
		// Count before parsing, so a hostile message cannot make us parse
		// more than MaxCerts certificates.
		if i == MaxCerts {
			return nil, fmt.Errorf("%w: more than %d", ErrTooManyCerts, MaxCerts)
		}
		what := fmt.Sprintf("certificate %d", i)
		var elem cryptobyte.String
		var tag asn1.Tag
		before := field
		if !field.ReadAnyASN1Element(&elem, &tag) {
			return nil, elementError(before, asn1.SEQUENCE, what)
		}
		// CertificateChoices (RFC 5652, section 10.2.2).
		switch tag {
		case asn1.SEQUENCE:
		case asn1.Tag(0).ContextSpecific().Constructed():
			return nil, fmt.Errorf("%w: %s: extendedCertificate (PKCS#6)", ErrUnsupported, what)
		case asn1.Tag(1).ContextSpecific().Constructed():
			return nil, fmt.Errorf("%w: %s: v1 attribute certificate", ErrUnsupported, what)
		case asn1.Tag(2).ContextSpecific().Constructed():
			return nil, fmt.Errorf("%w: %s: v2 attribute certificate", ErrUnsupported, what)
		case asn1.Tag(3).ContextSpecific().Constructed():
			return nil, fmt.Errorf("%w: %s: other certificate format", ErrUnsupported, what)
		default:
			return nil, fmt.Errorf("%w: %s: unexpected tag 0x%02x", ErrMalformed, what, uint8(tag))
		}
		// x509.ParseCertificate keeps a slice of its input as Raw; copy so
		// the certificates do not alias (and pin) the caller's buffer.
		c, err := x509.ParseCertificate(bytes.Clone(elem))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: certificates field is empty", ErrNoCertificates)
	}
	return certs, nil
}

// readASN1 reads one element with the given tag from s into out, returning
// a descriptive error naming what if it cannot.
func readASN1(s, out *cryptobyte.String, tag asn1.Tag, what string) error {
	// cryptobyte advances s even when a read fails on a tag mismatch, so
	// keep the original for the error.
	before := *s
	if s.ReadASN1(out, tag) {
		return nil
	}
	return elementError(before, tag, what)
}

// readOID reads an OBJECT IDENTIFIER from s into out.
func readOID(s *cryptobyte.String, out *encoding_asn1.ObjectIdentifier, what string) error {
	before := *s
	if s.ReadASN1ObjectIdentifier(out) {
		return nil
	}
	return elementError(before, asn1.OBJECT_IDENTIFIER, what)
}

// elementError explains why the element at the start of s, which should
// have had the given tag, could not be read.
func elementError(s cryptobyte.String, want asn1.Tag, what string) error {
	switch {
	case len(s) == 0:
		return fmt.Errorf("%w: %s: missing", ErrMalformed, what)
	case len(s) >= 2 && s[0]&0x20 != 0 && s[1] == 0x80:
		// A constructed element with length octet 0x80 is BER's
		// indefinite form: valid, just not DER.
		return fmt.Errorf("%w: %s: indefinite-length (BER) encoding, want DER", ErrUnsupported, what)
	case asn1.Tag(s[0]) != want:
		return fmt.Errorf("%w: %s: got tag 0x%02x, want 0x%02x", ErrMalformed, what, s[0], uint8(want))
	default:
		return fmt.Errorf("%w: %s: truncated or invalid encoding", ErrMalformed, what)
	}
}

// requireEmpty returns an error if anything is left in s after the last
// field of the structure named what.
func requireEmpty(s cryptobyte.String, what string) error {
	if s.Empty() {
		return nil
	}
	return fmt.Errorf("%w: %d bytes of trailing data in %s", ErrMalformed, len(s), what)
}
