package est

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/outpost-pki/outpost/internal/pkcs7"
)

// Media types of EST responses (RFC 7030, sections 4.1.3, 4.4.2 and
// 4.5.2).
const (
	MediaTypeCertsOnly = "application/pkcs7-mime; smime-type=certs-only"
	MediaTypeCSRAttrs  = "application/csrattrs"
	MediaTypePKCS8     = "application/pkcs8"
)

// DefaultRealm is the Basic authentication realm WriteError announces on a
// 401 when the caller has not set WWW-Authenticate itself.
const DefaultRealm = "EST"

// maxErrorText caps the text of an error answer, in bytes.
const maxErrorText = 256

// WriteCerts answers with a certs-only PKCS#7 message (a degenerate
// SignedData, RFC 7030, section 4.1.3) carrying certs, DER certificates in
// the given order: for an enrollment the new certificate first, then its
// chain. The body is base64 in lines of 64 characters; Content-Type is
// MediaTypeCertsOnly, Content-Transfer-Encoding base64, Content-Length is
// set and the status is 200.
//
// The certificates are copied into the message as they are, not parsed.
// If they cannot be encoded (none, too many, or one that is not a single
// DER SEQUENCE; see pkcs7.EncodeCertsOnly) nothing is written and the
// error says why, so the caller can still answer with WriteError. An
// error writing the body means the client has gone.
func WriteCerts(w http.ResponseWriter, certs ...[]byte) error {
	body, err := certsOnlyBase64(certs)
	if err != nil {
		return err
	}
	return writeBody(w, http.StatusOK, MediaTypeCertsOnly, true, body)
}

// certsOnlyBase64 returns the base64 certs-only message carrying certs.
func certsOnlyBase64(certs [][]byte) ([]byte, error) {
	wrapped := make([]*x509.Certificate, len(certs))
	for i, der := range certs {
		// EncodeCertsOnly only uses Raw, and checks it is one DER
		// SEQUENCE, so there is no need to pay for a full parse.
		wrapped[i] = &x509.Certificate{Raw: der}
	}
	body, err := pkcs7.EncodeBase64CertsOnly(wrapped)
	if err != nil {
		return nil, fmt.Errorf("est: encoding certs-only response: %w", err)
	}
	return body, nil
}

// WriteCSRAttrs answers a csrattrs request with attrs, the DER CsrAttrs
// SEQUENCE (see EncodeCSRAttrs), in base64: Content-Type
// application/csrattrs, Content-Transfer-Encoding base64, Content-Length
// set, status 200. Empty attrs answers 204 No Content, which RFC 7030,
// section 4.5.2 prescribes when there is nothing to ask for.
//
// If attrs is not one DER SEQUENCE nothing is written and an error is
// returned. An error writing the body means the client has gone.
func WriteCSRAttrs(w http.ResponseWriter, attrs []byte) error {
	if len(attrs) == 0 {
		h := w.Header()
		h.Del("Content-Type")
		h.Del("Content-Transfer-Encoding")
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	s := cryptobyte.String(attrs)
	var elem cryptobyte.String
	if !s.ReadASN1Element(&elem, cbasn1.SEQUENCE) || !s.Empty() {
		return fmt.Errorf("%w: csrattrs response is not one der sequence", ErrCSRAttrsMalformed)
	}
	return writeBody(w, http.StatusOK, MediaTypeCSRAttrs, true, EncodeBase64(attrs))
}

// WriteServerKeygen answers a serverkeygen request (RFC 7030, section
// 4.4.2) with a multipart/mixed body under a random boundary. The first part
// is the private key, pkcs8Key being an unencrypted PKCS#8 DER key
// (Content-Type application/pkcs8); the second is a certs-only message with
// certs, the new certificate first and then its chain. Both parts are
// base64 with Content-Transfer-Encoding: base64. Content-Length is set and
// the status is 200.
//
// The key is sent as it is: RFC 7030 relies on TLS to protect it, so call
// this only on a mutually authenticated or otherwise trusted connection.
// If the key is not one DER SEQUENCE or the certificates cannot be encoded,
// nothing is written and an error is returned. An error writing the body
// means the client has gone.
func WriteServerKeygen(w http.ResponseWriter, pkcs8Key []byte, certs ...[]byte) error {
	s := cryptobyte.String(pkcs8Key)
	var elem cryptobyte.String
	if !s.ReadASN1Element(&elem, cbasn1.SEQUENCE) || !s.Empty() {
		return errors.New("est: serverkeygen private key is not one der sequence")
	}
	certsBody, err := certsOnlyBase64(certs)
	if err != nil {
		return err
	}

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf) // picks a random boundary
	parts := []struct {
		contentType string
		body        []byte
	}{
		{MediaTypePKCS8, EncodeBase64(pkcs8Key)},
		{MediaTypeCertsOnly, certsBody},
	}
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", p.contentType)
		h.Set("Content-Transfer-Encoding", "base64")
		pw, err := mw.CreatePart(h)
		if err != nil {
			return fmt.Errorf("est: building serverkeygen response: %w", err)
		}
		if _, err := pw.Write(p.body); err != nil {
			return fmt.Errorf("est: building serverkeygen response: %w", err)
		}
	}
	if err := mw.Close(); err != nil {
		return fmt.Errorf("est: building serverkeygen response: %w", err)
	}
	ct := mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": mw.Boundary()})
	return writeBody(w, http.StatusOK, ct, false, buf.Bytes())
}

// WriteError answers with status and msg as a one-line text/plain body
// ending in "\n", with Content-Length set. Control characters in msg are
// replaced by spaces and it is cut to 256 bytes; an empty msg is replaced
// by the status text. A status outside 400-599 is replaced by 500, as an
// error answer must be an error.
//
// For 401 it also sets `WWW-Authenticate: Basic realm="EST"` unless the
// header is already set; use WriteUnauthorized to name the realm.
// A Content-Transfer-Encoding set earlier is removed, as the body is plain
// text; other headers, such as a Retry-After for 429 or 503, are kept.
func WriteError(w http.ResponseWriter, status int, msg string) {
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Del("Content-Transfer-Encoding")
	if status == http.StatusUnauthorized && h.Get("WWW-Authenticate") == "" {
		h.Set("WWW-Authenticate", basicChallenge(DefaultRealm))
	}
	writeText(w, status, msg)
}

// WriteUnauthorized answers 401 with a Basic authentication challenge for
// realm (DefaultRealm if empty) and msg as in WriteError. Clients such as
// libest send credentials only after this challenge. Quotes, backslashes
// and control characters in realm are escaped or dropped.
func WriteUnauthorized(w http.ResponseWriter, realm, msg string) {
	w.Header().Set("WWW-Authenticate", basicChallenge(realm))
	WriteError(w, http.StatusUnauthorized, msg)
}

// WriteRetryLater answers 202 Accepted with Retry-After: seconds and msg as
// a short text/plain body, telling the client its request is queued (for
// instance awaiting approval) and to repeat the same request later
// (RFC 7030, section 4.2.3). seconds below 1 is sent as 1, so clients do
// not retry in a tight loop.
func WriteRetryLater(w http.ResponseWriter, seconds int, msg string) {
	seconds = max(seconds, 1)
	h := w.Header()
	h.Del("Content-Transfer-Encoding")
	h.Set("Retry-After", strconv.Itoa(seconds))
	if msg == "" {
		msg = "request accepted, retry later"
	}
	writeText(w, http.StatusAccepted, msg)
}

// writeText writes msg, made safe, as a one-line text/plain body.
func writeText(w http.ResponseWriter, status int, msg string) {
	msg = safeText(msg)
	if msg == "" {
		msg = strings.ToLower(http.StatusText(status))
	}
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	// The error is the client's connection failing; nothing more can be
	// sent, and the caller logs the failed request already.
	_ = writeBody(w, status, "text/plain; charset=utf-8", false, []byte(msg+"\n"))
}

// safeText returns msg as valid UTF-8 without control characters, trimmed
// and cut to maxErrorText bytes on a character boundary.
func safeText(msg string) string {
	msg = strings.ToValidUTF8(msg, "?")
	msg = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, msg)
	msg = strings.TrimSpace(msg)
	if len(msg) > maxErrorText {
		cut := maxErrorText
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = strings.TrimSpace(msg[:cut])
	}
	return msg
}

// basicChallenge returns a WWW-Authenticate value asking for Basic
// credentials in realm, as an RFC 7235 quoted-string.
func basicChallenge(realm string) string {
	if realm == "" {
		realm = DefaultRealm
	}
	var b strings.Builder
	b.WriteString(`Basic realm="`)
	for i := 0; i < len(realm); i++ {
		c := realm[i]
		switch {
		case c < 0x20 || c == 0x7f:
			continue
		case c >= 0x80:
			c = '?'
		case c == '"' || c == '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// writeBody sends a complete answer with Content-Length set, and
// Content-Transfer-Encoding: base64 if b64.
func writeBody(w http.ResponseWriter, status int, contentType string, b64 bool, body []byte) error {
	h := w.Header()
	h.Set("Content-Type", contentType)
	if b64 {
		h.Set("Content-Transfer-Encoding", "base64")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if _, err := w.Write(body); err != nil {
		return fmt.Errorf("est: writing response: %w", err)
	}
	return nil
}
