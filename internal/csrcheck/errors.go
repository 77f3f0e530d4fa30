package csrcheck

import (
	"fmt"
	"strconv"
	"strings"
)

// Reason says why a CSR was rejected. Its value is a short snake_case word
// suitable as a metric label or a log field; it is stable across releases.
type Reason string

// Reasons for rejecting a CSR, one per failure a broken or hostile device can
// cause. Each has a fixed message safe to send back to the device, returned
// by [Error.Public].
const (
	// ReasonEmpty: the request body is empty.
	ReasonEmpty Reason = "empty"
	// ReasonTooLarge: the input exceeds [MaxCSRSize] (or [MaxPEMSize] for PEM).
	ReasonTooLarge Reason = "too_large"
	// ReasonMalformed: the input is not DER, not a PKCS#10
	// CertificationRequest, or one of its parts does not decode.
	ReasonMalformed Reason = "malformed"
	// ReasonTrailingData: bytes follow the CertificationRequest (or the PEM
	// block).
	ReasonTrailingData Reason = "trailing_data"
	// ReasonVersion: the CertificationRequestInfo version is not 0 (v1), the
	// only version RFC 2986 defines.
	ReasonVersion Reason = "version"
	// ReasonBadSignatureAlgorithm: the signature algorithm is insecure (MD2,
	// MD5, SHA-1, DSA) or unknown.
	ReasonBadSignatureAlgorithm Reason = "bad_signature_algorithm"
	// ReasonSignatureKeyMismatch: the signature algorithm is for a different
	// key type than the public key in the request (say, ECDSA with an RSA key).
	ReasonSignatureKeyMismatch Reason = "signature_key_mismatch"
	// ReasonBadSignature: the proof-of-possession signature does not verify.
	ReasonBadSignature Reason = "bad_signature"
	// ReasonUnsupportedKey: the key algorithm is not RSA, ECDSA or Ed25519
	// (DSA, X25519, RSASSA-PSS keys, unknown OIDs).
	ReasonUnsupportedKey Reason = "unsupported_key"
	// ReasonKeyTypeNotAllowed: the key algorithm is supported but the
	// [Policy] does not allow it.
	ReasonKeyTypeNotAllowed Reason = "key_type_not_allowed"
	// ReasonBadPublicKey: the public key does not decode or is not a valid
	// key of its type (point not on the curve, even RSA modulus, wrong
	// parameters).
	ReasonBadPublicKey Reason = "bad_public_key"
	// ReasonWeakRSAKey: the RSA modulus is shorter than [Policy.MinRSABits].
	ReasonWeakRSAKey Reason = "weak_rsa_key"
	// ReasonRSAKeyTooLarge: the RSA modulus is longer than
	// [Policy.MaxRSABits].
	ReasonRSAKeyTooLarge Reason = "rsa_key_too_large"
	// ReasonBadRSAExponent: the RSA public exponent is not odd, is below 3, or
	// is 2^31 or more.
	ReasonBadRSAExponent Reason = "bad_rsa_exponent"
	// ReasonWeakCurve: the ECDSA curve is not in [Policy.AllowedCurves], is
	// unknown, or is given by explicit parameters.
	ReasonWeakCurve Reason = "weak_curve"
	// ReasonDuplicateAttribute: an attribute type appears twice, or a
	// single-valued attribute (extensionRequest, challengePassword) carries
	// more than one value.
	ReasonDuplicateAttribute Reason = "duplicate_attribute"
	// ReasonDuplicateExtension: the extensionRequest lists an extension OID
	// twice.
	ReasonDuplicateExtension Reason = "duplicate_extension"
	// ReasonUnknownCriticalExtension: a requested extension is marked
	// critical and is not one this package understands.
	ReasonUnknownCriticalExtension Reason = "unknown_critical_extension"
	// ReasonEmptySubject: the subject is empty and there is no subject
	// alternative name, so the request names nothing.
	ReasonEmptySubject Reason = "empty_subject"
	// ReasonBadSubject: a subject attribute is not a string, is empty,
	// contains control characters, or the common name is repeated.
	ReasonBadSubject Reason = "bad_subject"
	// ReasonSubjectTooLong: a subject attribute exceeds its RFC 5280 upper
	// bound (64 characters for a common name).
	ReasonSubjectTooLong Reason = "subject_too_long"
	// ReasonBadName: a subject alternative name is not a valid DNS name,
	// email address, URI or IP address.
	ReasonBadName Reason = "bad_name"
	// ReasonUnsupportedName: a subject alternative name is of a type other
	// than DNS name, email address, URI or IP address (otherName,
	// directoryName, registeredID and the rest).
	ReasonUnsupportedName Reason = "unsupported_name"
	// ReasonTooManySANs: there are more subject alternative names than
	// [Policy.MaxSANs].
	ReasonTooManySANs Reason = "too_many_sans"
)

// publicMessages holds the message shown to the device for each reason. They
// name the problem and never echo input.
var publicMessages = map[Reason]string{
	ReasonEmpty:                    "csr empty",
	ReasonTooLarge:                 "csr too large",
	ReasonMalformed:                "csr malformed",
	ReasonTrailingData:             "csr followed by trailing data",
	ReasonVersion:                  "csr version unsupported",
	ReasonBadSignatureAlgorithm:    "csr signature algorithm not accepted",
	ReasonSignatureKeyMismatch:     "csr signature algorithm does not match its key",
	ReasonBadSignature:             "csr signature invalid",
	ReasonUnsupportedKey:           "csr key algorithm unsupported",
	ReasonKeyTypeNotAllowed:        "csr key type not allowed",
	ReasonBadPublicKey:             "csr public key invalid",
	ReasonWeakRSAKey:               "csr rsa key too small",
	ReasonRSAKeyTooLarge:           "csr rsa key too large",
	ReasonBadRSAExponent:           "csr rsa public exponent not accepted",
	ReasonWeakCurve:                "csr elliptic curve not accepted",
	ReasonDuplicateAttribute:       "csr has a duplicate attribute",
	ReasonDuplicateExtension:       "csr has a duplicate extension",
	ReasonUnknownCriticalExtension: "csr requests an unsupported critical extension",
	ReasonEmptySubject:             "csr has no subject and no subject alternative name",
	ReasonBadSubject:               "csr subject invalid",
	ReasonSubjectTooLong:           "csr subject attribute too long",
	ReasonBadName:                  "csr subject alternative name invalid",
	ReasonUnsupportedName:          "csr subject alternative name type unsupported",
	ReasonTooManySANs:              "csr has too many subject alternative names",
}

// Error is the error [Parse] and [ParsePEMOrDER] return for every rejected
// CSR. Check for it with errors.As. Error() is for logs: it carries the
// detail, which may quote (escaped and truncated) parts of the untrusted
// input. Public() is for the device.
type Error struct {
	// Reason classifies the failure.
	Reason Reason
	// Detail describes the failure for operators. It never holds secrets
	// (challenge passwords are never quoted) but may hold names taken from
	// the request.
	Detail string
	// Err is the underlying error, if any, for example from crypto/x509.
	Err error
}

// Error returns the detailed, internal description: "csr: reason: detail",
// followed by the underlying error when there is one.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("csr: ")
	b.WriteString(string(e.Reason))
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Public returns a short message, fixed per Reason, that is safe to send to
// the device: it holds no detail and no part of the input.
func (e *Error) Public() string {
	if m, ok := publicMessages[e.Reason]; ok {
		return m
	}
	return "csr rejected"
}

// Unwrap returns the underlying error, if any.
func (e *Error) Unwrap() error { return e.Err }

// reject builds an *Error with a formatted detail.
func reject(r Reason, err error, format string, args ...any) *Error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...), Err: err}
}

// maxQuoted bounds how much of an untrusted string goes into a Detail, so a
// hostile request cannot flood the logs.
const maxQuoted = 64

// quote returns s truncated to maxQuoted bytes and Go-quoted, so control
// characters and invalid UTF-8 from the request cannot forge log lines.
func quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "..."
	}
	return strconv.Quote(s)
}

var _ error = (*Error)(nil)
