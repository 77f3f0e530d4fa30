package pkcs7

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
)

// lineLen is the number of base64 characters per line EncodeBase64CertsOnly
// writes.
const lineLen = 64

// base64MaxSize is the length of MaxSize bytes in unwrapped base64.
const base64MaxSize = (MaxSize + 2) / 3 * 4

// MaxBase64Size is the longest input DecodeBase64CertsOnly accepts: MaxSize
// bytes in base64 with a CRLF every 64 characters, plus 1 KiB for PEM armour
// and surrounding whitespace. Anything longer could not decode to a message
// DecodeCertsOnly accepts, so it is refused before any decoding work. HTTP
// handlers can use it as the body limit for EST requests and responses.
const MaxBase64Size = base64MaxSize + (base64MaxSize+lineLen-1)/lineLen*2 + 1024

// pemTypes are the PEM block types accepted by DecodeBase64CertsOnly:
// "PKCS7" as written by "openssl pkcs7" and crl2pkcs7, the older
// "PKCS #7 SIGNED DATA" that OpenSSL also reads, and "CMS" as written by
// "openssl cms".
var pemTypes = map[string]bool{
	"PKCS7":               true,
	"PKCS #7 SIGNED DATA": true,
	"CMS":                 true,
}

// EncodeBase64CertsOnly returns EncodeCertsOnly(certs) in the base64 form
// EST puts on the wire: standard alphabet with padding, broken into lines of
// 64 characters, each ended with CRLF. RFC 7030 asks for base64 as in
// RFC 2045, which allows lines up to 76 characters; 64 is the PEM line
// length and what EST servers commonly send. Errors are those of
// EncodeCertsOnly.
func EncodeBase64CertsOnly(certs []*x509.Certificate) ([]byte, error) {
	der, err := EncodeCertsOnly(certs)
	if err != nil {
		return nil, err
	}
	enc := base64.StdEncoding.EncodeToString(der)
	out := make([]byte, 0, len(enc)+(len(enc)+lineLen-1)/lineLen*2)
	for len(enc) > 0 {
		n := min(lineLen, len(enc))
		out = append(out, enc[:n]...)
		out = append(out, '\r', '\n')
		enc = enc[n:]
	}
	return out, nil
}

// DecodeBase64CertsOnly decodes a base64 certs-only message as sent by an
// EST server and returns its certificates like DecodeCertsOnly. It accepts
// lines ended by CRLF or LF, a single unbroken line, and leading or trailing
// whitespace; padding is required. It also accepts the message in PEM armour
// ("-----BEGIN PKCS7-----", or the "CMS" and "PKCS #7 SIGNED DATA" types)
// with nothing but whitespace around it.
//
// Input longer than MaxBase64Size is rejected with ErrTooLarge before it is
// decoded; bad base64 or PEM yields ErrMalformed. Other errors are those of
// DecodeCertsOnly.
func DecodeBase64CertsOnly(b []byte) ([]*x509.Certificate, error) {
	// Cap before decoding: see MaxBase64Size.
	if len(b) > MaxBase64Size {
		return nil, fmt.Errorf("%w: %d bytes of base64, limit %d", ErrTooLarge, len(b), MaxBase64Size)
	}
	b = bytes.TrimSpace(b)
	if bytes.HasPrefix(b, []byte("-----BEGIN ")) {
		block, rest := pem.Decode(b)
		switch {
		case block == nil:
			return nil, fmt.Errorf("%w: invalid pem armour", ErrMalformed)
		case !pemTypes[block.Type]:
			return nil, fmt.Errorf("%w: pem block type %q, want PKCS7", ErrMalformed, block.Type)
		case len(block.Headers) != 0:
			return nil, fmt.Errorf("%w: pem headers are not supported", ErrMalformed)
		case len(bytes.TrimSpace(rest)) != 0:
			return nil, fmt.Errorf("%w: data after pem block", ErrMalformed)
		}
		return DecodeCertsOnly(block.Bytes)
	}
	// StdEncoding skips CR and LF wherever they appear, which covers every
	// line-break style; any other character outside the alphabet is an
	// error.
	der := make([]byte, base64.StdEncoding.DecodedLen(len(b)))
	n, err := base64.StdEncoding.Decode(der, b)
	if err != nil {
		return nil, fmt.Errorf("%w: decoding base64: %w", ErrMalformed, err)
	}
	return DecodeCertsOnly(der[:n])
}
