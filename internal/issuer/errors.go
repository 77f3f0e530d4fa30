package issuer

import "strings"

// Reason classifies why [Issuer.Issue] refused or failed. Values are stable
// snake_case strings, suitable as log fields and metric labels.
type Reason string

// Reasons returned in [Error].
const (
	// ReasonBadRequest: the CSR is missing, has no usable public key, or
	// carries a malformed requested extension. Client fault.
	ReasonBadRequest Reason = "bad_request"
	// ReasonKeyNotAllowed: the CSR's key algorithm, size or curve is not in
	// the profile's AllowedKeys. Client fault.
	ReasonKeyNotAllowed Reason = "key_not_allowed"
	// ReasonSANNotAllowed: a subjectAltName (requested, copied from the CN,
	// or supplied by the server) is malformed or outside the profile's SAN
	// policy. Client fault.
	ReasonSANNotAllowed Reason = "san_not_allowed"
	// ReasonTooManySANs: more distinct subjectAltNames than the profile's
	// MaxSANs. Client fault.
	ReasonTooManySANs Reason = "too_many_sans"
	// ReasonUsageNotAllowed: the requested key usage or extended key usage
	// shares nothing with what the profile allows, or the profile's key
	// usage has nothing compatible with the CSR's key type. Client fault.
	ReasonUsageNotAllowed Reason = "usage_not_allowed"
	// ReasonSubjectTemplate: the subject could not be built: the template
	// failed, or produced an empty or over-long common name. Client fault
	// (usually a missing or odd field in the request).
	ReasonSubjectTemplate Reason = "subject_template"
	// ReasonProfileInvalid: the profile is nil or fails [Profile.Validate].
	// Server fault.
	ReasonProfileInvalid Reason = "profile_invalid"
	// ReasonIssuerInvalid: the issuer is not usable as a CA: no certificate
	// or signer, not a CA, no keyCertSign key usage, or a signer that does
	// not match the certificate. Server fault.
	ReasonIssuerInvalid Reason = "issuer_invalid"
	// ReasonIssuerExpired: the issuer's certificate is not valid at Now
	// (expired or not yet valid). Server fault.
	ReasonIssuerExpired Reason = "issuer_expired"
	// ReasonValidity: the computed validity window is empty, e.g. a
	// [Request.NotAfter] before the certificate's notBefore. Server fault.
	ReasonValidity Reason = "validity"
	// ReasonSigning: generating the serial number or signing failed
	// (randomness source, key store, HSM or TPM). Server fault.
	ReasonSigning Reason = "signing"
)

// ClientFault reports whether the reason lies in the request (the device
// can fix it by sending a different CSR; an EST server answers 400 or 403)
// rather than with the server (500 or 503 and an alert).
func (r Reason) ClientFault() bool {
	switch r {
	case ReasonBadRequest, ReasonKeyNotAllowed, ReasonSANNotAllowed, ReasonTooManySANs,
		ReasonUsageNotAllowed, ReasonSubjectTemplate:
		return true
	}
	return false
}

// publicText is the device-safe summary of each reason.
var publicText = map[Reason]string{
	ReasonBadRequest:      "malformed certificate request",
	ReasonKeyNotAllowed:   "key type or size not allowed",
	ReasonSANNotAllowed:   "subject alternative name not allowed",
	ReasonTooManySANs:     "too many subject alternative names",
	ReasonUsageNotAllowed: "requested key usage not allowed",
	ReasonSubjectTemplate: "certificate subject could not be built from the request",
}

// serverText is what a device is told for every server-side reason: nothing
// about the CA, its keys or its configuration.
const serverText = "certificate could not be issued"

// Error is the error [Issuer.Issue] returns. Check for it with errors.As.
//
// It separates what may be shown to the device from what only the log may
// see: Detail describes the device's own request (for instance the SAN that
// was refused) and never the policy, the CA or an internal failure; Err is
// the internal cause. [Error.Public] is the device-safe message;
// [Error.Error] is the full message for logs.
type Error struct {
	// Reason classifies the failure.
	Reason Reason
	// Detail is a short description of the offending part of the request,
	// e.g. `dns name "a.example" not permitted`. For client-fault reasons it
	// is safe to show the device; for server-fault reasons it is for logs.
	Detail string
	// Err is the underlying cause, if any. Log it; never send it to the
	// device.
	Err error
}

// Error returns the full message for logs, including Detail and Err.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("issuer: ")
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

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// Public returns a message that is safe to send to the device: for
// client-fault reasons a fixed summary plus Detail, for server-fault reasons
// only "certificate could not be issued".
func (e *Error) Public() string {
	if !e.Reason.ClientFault() {
		return serverText
	}
	msg := publicText[e.Reason]
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// newError builds an *Error.
func newError(r Reason, err error, detail string) *Error {
	return &Error{Reason: r, Detail: detail, Err: err}
}

var _ error = (*Error)(nil)
