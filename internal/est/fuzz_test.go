package est

import (
	"bytes"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"testing"
)

// FuzzReadCSR checks that ReadCSR never panics, that it fails only with
// the documented statuses, and that a body it built by encoding the input
// in one of the accepted forms decodes back to exactly the input.
func FuzzReadCSR(f *testing.F) {
	der := newCSR(f)
	f.Add(EncodeBase64(der), "application/pkcs10", uint8(0))
	f.Add(lfLines(der), "application/pkcs10; charset=utf-8", uint8(1))
	f.Add(noBreaks(der), "", uint8(2))
	f.Add(pemCSR(der, "CERTIFICATE REQUEST", "\n"), "APPLICATION/PKCS10", uint8(3))
	f.Add(pemCSR(der, "NEW CERTIFICATE REQUEST", "\r\n"), "application/pkcs10", uint8(4))
	f.Add(der, "application/pkcs10", uint8(5))
	f.Add([]byte{}, "application/pkcs10", uint8(0))
	f.Add([]byte("hello, world"), "text/plain", uint8(1))
	f.Add([]byte("MAA="), "application/pkcs10;", uint8(2))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n"), "application/pkcs10", uint8(3))
	f.Add([]byte{0x30, 0x80, 0x00, 0x00}, "application/pkcs10", uint8(5))

	const limit = 16 << 10
	f.Fuzz(func(t *testing.T, body []byte, contentType string, style uint8) {
		// The input as the body, with the fuzzed content type.
		r := enrollRequest(body, contentType)
		if contentType == "" {
			r.Header.Del("Content-Type")
		}
		got, err := ReadCSR(r, limit)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got error %v (%T), want *Error", err, err)
			}
			switch e.Status {
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
			default:
				t.Fatalf("got status %d (%v), want 400, 413 or 415", e.Status, e)
			}
			if e.Message == "" {
				t.Fatalf("error %d has no message", e.Status)
			}
		} else if err := checkSequence(got); err != nil {
			t.Fatalf("accepted %x, which is not one der sequence", got)
		}

		// The input encoded in one of the accepted forms must decode back
		// to itself when it is a DER SEQUENCE, and be refused otherwise.
		var enc []byte
		switch style % 6 {
		case 0:
			enc = EncodeBase64(body)
		case 1:
			enc = lfLines(body)
		case 2:
			enc = noBreaks(body)
		case 3:
			enc = bytes.TrimRight(noBreaks(body), "=")
		case 4:
			enc = pemCSR(body, "CERTIFICATE REQUEST", "\n")
		case 5:
			enc = append(append([]byte(" \r\n"), pemCSR(body, "NEW CERTIFICATE REQUEST", "\r\n")...), "\r\n\t"...)
		}
		if len(enc) > limit {
			return
		}
		got, err = ReadCSR(enrollRequest(enc, MediaTypePKCS10), limit)
		if checkSequence(body) != nil {
			if err == nil {
				t.Fatalf("accepted %q, the encoding of %x, which is not a der sequence", enc, body)
			}
			return
		}
		if err != nil {
			t.Fatalf("ReadCSR(%q): %v", enc, err)
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("got %x, want %x", got, body)
		}
	})
}

// FuzzParseCSRAttrs checks that ParseCSRAttrs never panics and that what it
// accepts survives parse -> encode -> parse: the same entries, OIDs and
// values (values sorted, as DER orders a SET OF), and that encoding that
// again gives the same bytes.
func FuzzParseCSRAttrs(f *testing.F) {
	seeds := []string{
		defaultCSRAttrsHex,
		"3000",
		"3004" + "06022a03",
		"3011" + "300f" + "06022a03" + "3109" + "0c0162" + "0c0161" + "020101",
		"3009" + "3007" + "06022a03" + "3101" + "05",
		"300a" + "3008" + "06022a03" + "3102" + "df48",
		"300b" + "3009" + "06022a03" + "3103" + "9f1f00",
		"3080" + "06022a03" + "0000",
	}
	for _, s := range seeds {
		b, err := hex.DecodeString(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if b, err := base64.StdEncoding.DecodeString(rfc7030Example); err == nil {
		f.Add(b)
	}

	f.Fuzz(func(t *testing.T, der []byte) {
		a1, err := ParseCSRAttrs(der)
		if err != nil {
			if !errors.Is(err, ErrCSRAttrsMalformed) && !errors.Is(err, ErrCSRAttrsTooLarge) {
				t.Fatalf("error %v wraps neither package error", err)
			}
			return
		}
		e1, err := EncodeCSRAttrs(a1)
		if err != nil {
			t.Fatalf("EncodeCSRAttrs of parsed %x: %v", der, err)
		}
		if len(e1) != len(der) {
			t.Fatalf("re-encoding %x gave %x, a different length", der, e1)
		}
		a2, err := ParseCSRAttrs(e1)
		if err != nil {
			t.Fatalf("ParseCSRAttrs of re-encoded %x: %v", e1, err)
		}
		if len(a1) != len(a2) {
			t.Fatalf("got %d entries after the round trip, want %d", len(a2), len(a1))
		}
		for i := range a1 {
			if !a1[i].OID.Equal(a2[i].OID) {
				t.Fatalf("entry %d: got oid %v, want %v", i, a2[i].OID, a1[i].OID)
			}
			if (a1[i].Values == nil) != (a2[i].Values == nil) {
				t.Fatalf("entry %d: bare oid and attribute swapped", i)
			}
			if !slices.EqualFunc(sortedValues(a1[i].Values), sortedValues(a2[i].Values), bytes.Equal) {
				t.Fatalf("entry %d: values differ after the round trip", i)
			}
		}
		e2, err := EncodeCSRAttrs(a2)
		if err != nil || !bytes.Equal(e1, e2) {
			t.Fatalf("second encoding gave %x, %v, want %x", e2, err, e1)
		}
	})
}

// sortedValues returns the encodings of values, sorted.
func sortedValues(values []asn1.RawValue) [][]byte {
	out := make([][]byte, len(values))
	for i, v := range values {
		out[i] = v.FullBytes
	}
	slices.SortFunc(out, bytes.Compare)
	return out
}
