package badinput

import (
	"bytes"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// The OCSP request as RFC 6960 writes it, far enough to build broken ones.
type (
	ocspCertID struct {
		HashAlgorithm pkix.AlgorithmIdentifier
		NameHash      []byte
		KeyHash       []byte
		Serial        *big.Int
	}
	ocspSingle struct{ Cert ocspCertID }
	ocspTBS    struct {
		Requests   []ocspSingle
		Extensions []pkix.Extension `asn1:"explicit,tag:2,optional"`
	}
	ocspRequest struct{ TBS ocspTBS }
)

var (
	oidSHA1  = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidMD5   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}
	oidNonce = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}
)

// ocspFor builds a request for serial of issuer with hash alg and
// extensions.
func ocspFor(t *testing.T, issuer *x509.Certificate, alg asn1.ObjectIdentifier, serial *big.Int, exts ...pkix.Extension) []byte {
	t.Helper()
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		Key       asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		t.Fatal(err)
	}
	nh, kh := sha1.Sum(issuer.RawSubject), sha1.Sum(spki.Key.RightAlign())
	der, err := asn1.Marshal(ocspRequest{TBS: ocspTBS{Requests: []ocspSingle{{Cert: ocspCertID{
		HashAlgorithm: pkix.AlgorithmIdentifier{Algorithm: alg, Parameters: asn1.NullRawValue},
		NameHash:      nh[:], KeyHash: kh[:], Serial: serial}}}, Extensions: exts}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// ocspCase is one malformed OCSP request and the answer it must get:
// an HTTP 4xx status, or 200 with the OCSP error response wantOCSP.
type ocspCase struct {
	name     string
	method   string
	path     string // after /ocsp
	ctype    string
	body     []byte
	want     int
	wantOCSP []byte
}

func ocspCases(t *testing.T, issuer *x509.Certificate) []ocspCase {
	stranger := &x509.Certificate{RawSubject: []byte("not the issuer"), RawSubjectPublicKeyInfo: issuer.RawSubjectPublicKeyInfo}
	stranger.RawSubjectPublicKeyInfo = bytes.Clone(issuer.RawSubjectPublicKeyInfo)
	stranger.RawSubjectPublicKeyInfo[len(stranger.RawSubjectPublicKeyInfo)-1] ^= 1 // another key
	one := big.NewInt(0x1234567)
	nonce := func(n int) pkix.Extension {
		v, _ := asn1.Marshal(bytes.Repeat([]byte{7}, n))
		return pkix.Extension{Id: oidNonce, Value: v}
	}
	valid := ocspFor(t, issuer, oidSHA1, one)
	malformed, unauthorized := ocsp.MalformedRequestErrorResponse, ocsp.UnauthorizedErrorResponse
	const ct = "application/ocsp-request"
	return []ocspCase{
		{name: "POST with an empty body", method: "POST", ctype: ct, body: []byte{}, want: 200, wantOCSP: malformed},
		{name: "POST with garbage", method: "POST", ctype: ct, body: []byte("hello, responder"), want: 200, wantOCSP: malformed},
		{name: "POST garbage as text/plain", method: "POST", ctype: "text/plain", body: []byte("GET / HTTP/1.0"), want: 200, wantOCSP: malformed},
		{name: "POST with trailing data", method: "POST", ctype: ct, body: append(bytes.Clone(valid), 0, 0), want: 200, wantOCSP: malformed},
		{name: "POST over 8 KiB", method: "POST", ctype: ct, body: bytes.Repeat([]byte{0x30}, 9<<10), want: 413},
		{name: "GET without a request", method: "GET", path: "", want: 200, wantOCSP: malformed},
		{name: "GET with bad base64", method: "GET", path: "/" + url.PathEscape("%%%not base64%%%"), want: 200, wantOCSP: malformed},
		{name: "GET with base64 garbage", method: "GET", path: "/" + url.PathEscape(base64.StdEncoding.EncodeToString([]byte("garbage garbage"))), want: 200, wantOCSP: malformed},
		{name: "GET over 16 KiB", method: "GET", path: "/" + strings.Repeat("A", 17<<10), want: 414},
		{name: "unsupported hash algorithm (MD5)", method: "POST", ctype: ct, body: ocspFor(t, issuer, oidMD5, one), want: 200, wantOCSP: malformed},
		{name: "unknown issuer", method: "POST", ctype: ct, body: ocspFor(t, stranger, oidSHA1, one), want: 200, wantOCSP: unauthorized},
		{name: "serial zero", method: "POST", ctype: ct, body: ocspFor(t, issuer, oidSHA1, big.NewInt(0)), want: 200, wantOCSP: malformed},
		{name: "negative serial", method: "POST", ctype: ct, body: ocspFor(t, issuer, oidSHA1, big.NewInt(-5)), want: 200, wantOCSP: malformed},
		{name: "serial over 160 bits", method: "POST", ctype: ct, body: ocspFor(t, issuer, oidSHA1, new(big.Int).Lsh(big.NewInt(1), 200)), want: 200, wantOCSP: malformed},
		{name: "unknown critical extension", method: "POST", ctype: ct, body: ocspFor(t, issuer, oidSHA1, one, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}), want: 200, wantOCSP: malformed},
		{name: "two nonces", method: "POST", ctype: ct, body: ocspFor(t, issuer, oidSHA1, one, nonce(16), nonce(16)), want: 200, wantOCSP: malformed},
		{name: "nonce of 64 bytes", method: "POST", ctype: ct, body: ocspFor(t, issuer, oidSHA1, one, nonce(64)), want: 200, wantOCSP: malformed},
		{name: "PUT", method: "PUT", ctype: ct, body: valid, want: 405},
		{name: "DELETE", method: "DELETE", want: 405},
	}
}

func runOCSPCase(t *testing.T, b *bed, c ocspCase) {
	t.Helper()
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, b.s.API+"/ocsp"+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.ctype != "" {
		req.Header.Set("Content-Type", c.ctype)
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != c.want {
		t.Fatalf("got %d %q, want %d", resp.StatusCode, raw, c.want)
	}
	if c.wantOCSP != nil {
		if ct := resp.Header.Get("Content-Type"); ct != "application/ocsp-response" {
			t.Errorf("got Content-Type %q, want application/ocsp-response", ct)
		}
		if !bytes.Equal(raw, c.wantOCSP) {
			_, err := ocsp.ParseResponse(raw, nil)
			t.Fatalf("got OCSP answer %x (%v), want %x", raw, err, c.wantOCSP)
		}
	}
}

// ocspSane checks that a well-formed request for a serial of issuer gets
// a signed answer, so that the malformed cases are not refused for
// another reason.
func ocspSane(t *testing.T, b *bed, issuer *x509.Certificate) {
	t.Helper()
	resp, err := http.Post(b.s.API+"/ocsp", "application/ocsp-request", bytes.NewReader(ocspFor(t, issuer, oidSHA1, big.NewInt(0x1234567))))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if _, err := ocsp.ParseResponseForCert(raw, nil, issuer); err != nil {
		t.Fatalf("a well-formed OCSP request got %d %x: %v", resp.StatusCode, raw, err)
	}
}
