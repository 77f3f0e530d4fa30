package estclient

import (
	"crypto"
	"crypto/x509"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/outpost-pki/outpost/internal/est"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// FuzzParseServerKeygen fuzzes the multipart answer a device gets from
// serverkeygen (what a hostile or broken gateway could send): it never
// panics, and an answer it accepts holds a private key that matches the
// certificate it returns. Seeds are real answers written by
// est.WriteServerKeygen, and near misses.
func FuzzParseServerKeygen(f *testing.F) {
	pki := testpki.NewT(f)
	root := pki.Root("Fuzz Root")
	ca := root.Intermediate("Fuzz CA")
	leaf := ca.Leaf("dev-1")
	other := ca.Leaf("dev-2")
	pkcs8 := func(k crypto.Signer) []byte {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	answer := func(key []byte, certs ...[]byte) (string, []byte) {
		w := httptest.NewRecorder()
		if err := est.WriteServerKeygen(w, key, certs...); err != nil {
			f.Fatal(err)
		}
		return w.Header().Get("Content-Type"), w.Body.Bytes()
	}
	ct, body := answer(pkcs8(leaf.Key), leaf.Cert.Raw, ca.Cert.Raw)
	f.Add(ct, body)
	for _, a := range []struct {
		key   crypto.Signer
		certs [][]byte
	}{
		{leaf.Key, [][]byte{ca.Cert.Raw, leaf.Cert.Raw}},
		{other.Key, [][]byte{leaf.Cert.Raw}},
		{leaf.Key, [][]byte{ca.Cert.Raw, root.Cert.Raw}},
	} {
		ct, body := answer(pkcs8(a.key), a.certs...)
		f.Add(ct, body)
	}
	f.Add(strings.Replace(ct, "multipart/mixed", "text/plain", 1), body)
	f.Add("multipart/mixed", body)
	f.Add(ct, body[:len(body)/2])
	f.Add(ct, []byte(strings.Replace(string(body), "application/pkcs8", "application/pkcs7-mime; smime-type=server-generated-key", 1)))
	f.Add(ct, []byte(strings.Replace(string(body), "application/pkcs7-mime", "application/pkcs8", 1)))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		cert, key, err := parseServerKeygen(contentType, body)
		if err != nil {
			if cert != nil || key != nil {
				t.Fatalf("error %v with a certificate or key", err)
			}
			return
		}
		signer, ok := key.(crypto.Signer)
		pub, ok2 := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !ok2 || !pub.Equal(signer.Public()) {
			t.Fatal("accepted a key that does not match the certificate")
		}
	})
}

// FuzzMessage: whatever an EST server answers, the text message puts in
// an error is valid UTF-8, without control characters, whitespace runs or
// leading or trailing space (unless cut there), and at most maxMessage
// bytes.
func FuzzMessage(f *testing.F) {
	for _, s := range []string{"", "bad CSR: subject mismatch\n", "a\r\n\tb\x00c\x7fd", "\xff\xfe", strings.Repeat("é", 400), strings.Repeat("x ", 1000)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m := message(body)
		if !utf8.ValidString(m) || len(m) > maxMessage || strings.Contains(m, "  ") || strings.HasPrefix(m, " ") ||
			(strings.HasSuffix(m, " ") && len(m) < maxMessage-utf8.UTFMax) { // the cut may end on a space
			t.Fatalf("message(%q) = %q", body, m)
		}
		for _, r := range m {
			if r < ' ' || r == 0x7f {
				t.Fatalf("message(%q) = %q holds %U", body, m, r)
			}
		}
	})
}
