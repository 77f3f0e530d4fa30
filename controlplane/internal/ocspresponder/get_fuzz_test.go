package ocspresponder

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/outpost-pki/outpost/internal/testpki"
)

// FuzzDecodeGET fuzzes the path segment of an OCSP GET request (RFC 6960
// A.1): decodeGET never panics and what it decodes goes to parseRequest
// (which must not panic either); bytes it decodes come back unchanged when
// sent again in the forms clients use (standard base64, path- or
// query-escaped, base64url, with or without padding); and the fuzzed
// bytes themselves, taken as a DER request and sent in each of those
// forms, decode to exactly those bytes.
func FuzzDecodeGET(f *testing.F) {
	p := testpki.New(testpki.WithClock(time.Now))
	root := p.Root("fuzz root")
	leaf := root.Leaf("fuzz leaf")
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		req, err := ocsp.CreateRequest(leaf.Cert, root.Cert, &ocsp.RequestOptions{Hash: h})
		if err != nil {
			f.Fatal(err)
		}
		std := base64.StdEncoding.EncodeToString(req)
		f.Add(std)
		f.Add(url.PathEscape(std))
		f.Add(url.QueryEscape(std))
		f.Add(base64.RawURLEncoding.EncodeToString(req))
		f.Add(strings.TrimRight(std, "="))
		f.Add(" " + std + "\n")
	}
	f.Add("")
	f.Add("%")
	f.Add("%zz")
	f.Add("MAA=")
	f.Add("MAA")
	f.Add("M A A =")
	f.Add("a+b/c==")
	f.Add("a-b_c")
	f.Fuzz(func(t *testing.T, raw string) {
		der := decodeGET(raw)
		_, _ = parseRequest(der)
		if der != nil {
			for _, form := range encodings(der) {
				if got := decodeGET(form); !bytes.Equal(got, der) {
					t.Fatalf("decodeGET(%q) = %x; re-sent as %q: %x", raw, der, form, got)
				}
			}
		}
		in := []byte(raw)
		for _, form := range encodings(in) {
			if got := decodeGET(form); !bytes.Equal(got, in) {
				t.Fatalf("decodeGET(%q) = %x, want %x", form, got, in)
			}
		}
	})
}

// encodings returns der in the forms OCSP clients put in a GET path.
func encodings(der []byte) []string {
	std := base64.StdEncoding.EncodeToString(der)
	return []string{
		std,
		url.PathEscape(std),
		url.QueryEscape(std),
		base64.RawStdEncoding.EncodeToString(der),
		base64.URLEncoding.EncodeToString(der),
		base64.RawURLEncoding.EncodeToString(der),
	}
}
