package est

import (
	"encoding/base64"
	"errors"
	"fmt"
)

// base64LineLen is the number of characters per line EncodeBase64 writes:
// the PEM line length, within the 76 that RFC 2045 allows, and what EST
// servers commonly send.
const base64LineLen = 64

// EncodeBase64 returns der in the base64 form EST puts on the wire
// (RFC 7030, section 4; RFC 8951, section 3.1): the standard alphabet with
// padding, in lines of 64 characters each ended with CRLF.
func EncodeBase64(der []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(der)
	lines := (len(enc) + base64LineLen - 1) / base64LineLen
	out := make([]byte, 0, len(enc)+2*lines)
	for len(enc) > 0 {
		n := min(base64LineLen, len(enc))
		out = append(out, enc[:n]...)
		out = append(out, '\r', '\n')
		enc = enc[n:]
	}
	return out
}

// errBase64Empty is returned by DecodeBase64 for input with no base64
// characters at all.
var errBase64Empty = errors.New("no base64 data")

// DecodeBase64 decodes base64 as EST peers send it: the standard alphabet,
// with ASCII whitespace (space, tab, CR, LF, VT, FF) ignored wherever it
// appears, so lines ended by CRLF or LF, a single unbroken line and
// surrounding blank space all decode. Padding may be omitted. Any other
// character outside the alphabet is an error, as is input with no base64
// characters.
//
// DecodeBase64 does not cap its input: callers cap it before reading.
func DecodeBase64(b []byte) ([]byte, error) {
	clean := make([]byte, 0, len(b))
	for _, c := range b {
		if !isSpace(c) {
			clean = append(clean, c)
		}
	}
	if len(clean) == 0 {
		return nil, errBase64Empty
	}
	// Remove up to two padding characters and decode without padding, so
	// padded and unpadded input are treated alike. Misplaced padding is
	// left in and rejected by the decoder.
	for i := 0; i < 2 && len(clean) > 0 && clean[len(clean)-1] == '='; i++ {
		clean = clean[:len(clean)-1]
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, err := base64.RawStdEncoding.Decode(out, clean)
	if err != nil {
		var corrupt base64.CorruptInputError
		if errors.As(err, &corrupt) {
			return nil, fmt.Errorf("invalid base64 at byte %d", originalOffset(b, int64(corrupt)))
		}
		return nil, fmt.Errorf("invalid base64: %w", err)
	}
	return out[:n], nil
}

// isSpace reports whether c is ASCII whitespace.
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', '\v', '\f':
		return true
	}
	return false
}

// originalOffset maps offset n in b with whitespace removed back to an
// offset in b, so errors point at the byte the sender wrote.
func originalOffset(b []byte, n int64) int64 {
	var seen int64
	for i, c := range b {
		if isSpace(c) {
			continue
		}
		if seen == n {
			return int64(i)
		}
		seen++
	}
	return int64(len(b))
}
