package pkcs7

import (
	"bytes"
	"crypto/x509"
	"errors"
	"testing"
)

// FuzzEncodeCertsOnly is the encode -> decode direction: it encodes a
// fuzzed list of certificates (picked from a real chain by the bytes of
// pick, in any order and with repeats, plus one certificate whose Raw is
// the fuzzed extra when it is not empty) in both wire forms and checks
// that the encoder refuses only with its documented errors, refuses a Raw
// that is not one DER SEQUENCE, and that whatever it encodes decodes back
// to the same certificates in the same order when each Raw is a
// certificate, or to a known decoding error when one is not.
func FuzzEncodeCertsOnly(f *testing.F) {
	c := newChain(f)
	pool := c.certs()
	f.Add([]byte{0}, []byte(nil))
	f.Add([]byte{0, 1, 2}, []byte(nil))
	f.Add([]byte{2, 1, 0, 0}, []byte(nil))
	f.Add(bytes.Repeat([]byte{1}, MaxCerts), []byte(nil))
	f.Add(bytes.Repeat([]byte{1}, MaxCerts+1), []byte(nil))
	f.Add([]byte{}, []byte(nil))
	f.Add([]byte{0}, c.root.Cert.Raw)
	f.Add([]byte{0}, c.root.Cert.Raw[:len(c.root.Cert.Raw)-1])
	f.Add([]byte{}, append(append([]byte{}, c.leaf.Cert.Raw...), 0))
	f.Add([]byte{1}, []byte{0x30, 0x00})
	f.Add([]byte{1}, []byte{0x30, 0x80, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, pick, extra []byte) {
		var certs []*x509.Certificate
		for _, p := range pick {
			certs = append(certs, pool[int(p)%len(pool)])
		}
		if len(extra) > 0 {
			certs = append(certs, &x509.Certificate{Raw: extra})
		}
		der, err := EncodeCertsOnly(certs)
		b64, err64 := EncodeBase64CertsOnly(certs)
		if (err == nil) != (err64 == nil) {
			t.Fatalf("EncodeCertsOnly: %v, EncodeBase64CertsOnly: %v", err, err64)
		}
		if err != nil {
			switch {
			case len(certs) == 0 && errors.Is(err, ErrNoCertificates),
				len(certs) > MaxCerts && errors.Is(err, ErrTooManyCerts),
				errors.Is(err, ErrMalformed), errors.Is(err, ErrTooLarge):
			default:
				t.Fatalf("EncodeCertsOnly(%d certificates): %v", len(certs), err)
			}
			return
		}
		if len(certs) == 0 || len(certs) > MaxCerts || len(der) > MaxSize {
			t.Fatalf("encoded %d certificates into %d bytes without an error", len(certs), len(der))
		}
		_, parseErr := x509.ParseCertificate(extra)
		allCerts := len(extra) == 0 || parseErr == nil
		for _, in := range []struct {
			name   string
			decode func() ([]*x509.Certificate, error)
		}{
			{"DecodeCertsOnly", func() ([]*x509.Certificate, error) { return DecodeCertsOnly(der) }},
			{"DecodeBase64CertsOnly", func() ([]*x509.Certificate, error) { return DecodeBase64CertsOnly(b64) }},
		} {
			got, err := in.decode()
			if err != nil {
				if allCerts {
					t.Fatalf("%s(encoded certificates): %v", in.name, err)
				}
				checkKnownError(t, err)
				continue
			}
			if !allCerts {
				t.Fatalf("%s decoded %x, which is not a certificate", in.name, extra)
			}
			sameCerts(t, got, certs)
		}
	})
}
