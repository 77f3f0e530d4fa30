package ocspresponder

import (
	"crypto"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/outpost-pki/outpost/internal/testpki"
)

// FuzzParseRequest: any bytes give a request or errMalformed, never a
// panic; an accepted request has a sane serial and at most one nonce.
func FuzzParseRequest(f *testing.F) {
	p := testpki.New(testpki.WithClock(time.Now))
	root := p.Root("fuzz root")
	leaf := root.Leaf("fuzz leaf")
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		req, err := ocsp.CreateRequest(leaf.Cert, root.Cert, &ocsp.RequestOptions{Hash: h})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(req)
	}
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte("not a request"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequest(b)
		if err != nil {
			if err != errMalformed {
				t.Fatalf("unexpected error type %v", err)
			}
			return
		}
		if r.SerialNumber.Sign() <= 0 || r.SerialNumber.BitLen() > 160 || len(b) > MaxRequestSize {
			t.Fatalf("accepted a bad request: serial %v, %d bytes", r.SerialNumber, len(b))
		}
		if r.nonce != nil && (len(r.nonce.Value) == 0 || len(r.nonce.Value) > maxNonce+2) {
			t.Fatalf("accepted nonce of %d bytes", len(r.nonce.Value))
		}
	})
}
