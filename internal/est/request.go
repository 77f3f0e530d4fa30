package est

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// MaxRequestBody caps request bodies. An EST request carries one CSR in
// base64; an RSA-4096 CSR with many names stays under 8 KiB of DER, so
// 64 KiB leaves room for base64, line breaks and PEM armour while
// bounding the memory an unauthenticated client can make us hold.
const MaxRequestBody = 64 << 10

// MediaTypePKCS10 is the media type of an EST CSR (RFC 7030, section 4.2.1).
const MediaTypePKCS10 = "application/pkcs10"

// Error is an EST error answer: the HTTP status to send and a short text
// that is safe to show the client. Pass both to WriteError. Functions of
// this package return *Error; test with errors.As.
type Error struct {
	// Status is the HTTP status code, such as http.StatusBadRequest.
	Status int
	// Message is one short line for the client. It never holds anything
	// the client did not send or cannot know.
	Message string
}

// Error returns "est: " followed by the status code and the message.
func (e *Error) Error() string {
	return fmt.Sprintf("est: %d %s", e.Status, e.Message)
}

// badRequest returns a 400 Error with the formatted message.
func badRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}

// PEM block types ReadCSR accepts: RFC 7468's, and the older one OpenSSL
// and Windows still write.
var csrPEMTypes = map[string]bool{
	"CERTIFICATE REQUEST":     true,
	"NEW CERTIFICATE REQUEST": true,
}

// ReadCSR reads the body of a simpleenroll, simplereenroll or serverkeygen
// request and returns the CSR's DER bytes. It checks only that they are one
// DER SEQUENCE: the caller parses and validates the CSR.
//
// The Content-Type must be application/pkcs10, compared case-insensitively
// and with any parameters; a missing Content-Type is accepted, anything
// else is refused with 415. At most limit bytes are read (MaxRequestBody
// if limit is not positive); a longer body, or a Content-Length announcing
// one, is refused with 413 without reading further. Chunked bodies work
// (net/http removes the chunking), and Content-Transfer-Encoding is not
// required: the body is decoded as base64 whatever it says.
//
// The body may be base64 with CRLF, LF or no line breaks and surrounding
// whitespace (see DecodeBase64), a PEM-armoured CSR ("CERTIFICATE REQUEST"
// or "NEW CERTIFICATE REQUEST") with only whitespace around it, or, when it
// is not base64 but parses as a CSR, raw DER. An empty body, bad base64 or
// PEM, or content that is not a DER SEQUENCE is refused with 400.
//
// Errors are always *Error, ready for WriteError.
func ReadCSR(r *http.Request, limit int64) ([]byte, error) {
	if limit <= 0 {
		limit = MaxRequestBody
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		// A malformed parameter is tolerated when the type itself is right.
		if (err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter)) || mt != MediaTypePKCS10 {
			return nil, &Error{Status: http.StatusUnsupportedMediaType, Message: "content type must be " + MediaTypePKCS10}
		}
	}
	if r.ContentLength > limit {
		return nil, tooLarge()
	}
	if r.Body == nil {
		return nil, badRequest("empty request body")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		// The caller may have wrapped the body in http.MaxBytesReader.
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge()
		}
		return nil, badRequest("reading request body failed")
	}
	if int64(len(body)) > limit {
		return nil, tooLarge()
	}
	return decodeCSR(body)
}

// tooLarge returns the 413 Error for an oversized body.
func tooLarge() *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Message: "request body too large"}
}

// decodeCSR extracts the DER CSR from a request body; see ReadCSR. It
// returns *Error.
func decodeCSR(body []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, badRequest("empty request body")
	}
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return decodePEMCSR(trimmed)
	}
	der, b64err := DecodeBase64(trimmed)
	if b64err == nil {
		if err := checkSequence(der); err != nil {
			return nil, err
		}
		return der, nil
	}
	// Not base64: perhaps raw DER from a client that ignores RFC 7030's
	// base64 requirement. Take it only if it really is a CSR, so garbage
	// still gets the base64 error, which is the likelier mistake. The
	// untrimmed body is used because DER may end in whitespace bytes.
	if len(body) > 0 && body[0] == 0x30 {
		if _, err := x509.ParseCertificateRequest(body); err == nil {
			return bytes.Clone(body), nil
		}
	}
	return nil, badRequest("request body is not a base64 csr: %v", b64err)
}

// decodePEMCSR decodes a PEM-armoured CSR; b is trimmed of whitespace.
func decodePEMCSR(b []byte) ([]byte, error) {
	block, rest := pem.Decode(b)
	switch {
	case block == nil:
		return nil, badRequest("request body has invalid pem armour")
	case !csrPEMTypes[block.Type]:
		return nil, badRequest("pem block type must be CERTIFICATE REQUEST")
	case len(block.Headers) != 0:
		return nil, badRequest("pem headers are not supported")
	case len(bytes.TrimSpace(rest)) != 0:
		return nil, badRequest("request body has data after the pem block")
	case len(block.Bytes) == 0:
		return nil, badRequest("empty csr in pem block")
	}
	if err := checkSequence(block.Bytes); err != nil {
		return nil, err
	}
	return block.Bytes, nil
}

// checkSequence returns a 400 Error unless der is exactly one DER SEQUENCE,
// the outer shape of a CSR. It is a cheap framing check that turns
// decodable garbage into a clear error; the caller parses the CSR.
func checkSequence(der []byte) error {
	s := cryptobyte.String(der)
	var elem cryptobyte.String
	if !s.ReadASN1Element(&elem, cbasn1.SEQUENCE) || !s.Empty() {
		return badRequest("request body is not a der-encoded csr")
	}
	return nil
}
