package est

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/outpost-pki/outpost/internal/testpki"
)

// newCSR returns the DER of a fresh P-256 CSR.
func newCSR(tb testing.TB) []byte {
	tb.Helper()
	csr, _, err := testpki.CSR("device-1.outpost.test", testpki.DNSNames("device-1.outpost.test"))
	if err != nil {
		tb.Fatalf("creating csr: %v", err)
	}
	return csr.Raw
}

// lfLines returns EncodeBase64(der) with LF line ends instead of CRLF.
func lfLines(der []byte) []byte {
	return bytes.ReplaceAll(EncodeBase64(der), []byte("\r\n"), []byte("\n"))
}

// noBreaks returns EncodeBase64(der) as one line without a line end.
func noBreaks(der []byte) []byte {
	return bytes.ReplaceAll(EncodeBase64(der), []byte("\r\n"), nil)
}

// pemCSR returns der in PEM armour of the given block type, with
// lineEnd ("\n" or "\r\n") ending every line.
func pemCSR(der []byte, blockType, lineEnd string) []byte {
	var b strings.Builder
	b.WriteString("-----BEGIN " + blockType + "-----" + lineEnd)
	b.WriteString(strings.ReplaceAll(string(EncodeBase64(der)), "\r\n", lineEnd))
	b.WriteString("-----END " + blockType + "-----" + lineEnd)
	return []byte(b.String())
}

// enrollRequest returns a simpleenroll request with body and, unless
// contentType is "-", that Content-Type.
func enrollRequest(body []byte, contentType string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, PathPrefix+OpSimpleEnroll, bytes.NewReader(body))
	if contentType != "-" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

// asError returns err as *Error, failing the test if it is not one.
func asError(tb testing.TB, err error) *Error {
	tb.Helper()
	var e *Error
	if !errors.As(err, &e) {
		tb.Fatalf("got error %v (%T), want *est.Error", err, err)
	}
	return e
}
