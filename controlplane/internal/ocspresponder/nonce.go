package ocspresponder

import (
	"crypto"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
)

// golang.org/x/crypto/ocsp writes template extensions into the
// singleExtensions of the SingleResponse, but RFC 6960 4.4.1 puts the
// nonce in the responseExtensions of the ResponseData, where clients
// (OpenSSL among them) look for it. withNonce moves it there: it adds
// responseExtensions to the signed response data and signs it again with
// the same algorithm.

type ocspResponseASN1 struct {
	Status asn1.Enumerated
	Bytes  responseBytes `asn1:"explicit,tag:0"`
}

type responseBytes struct {
	ResponseType asn1.ObjectIdentifier
	Response     []byte
}

type basicResponseASN1 struct {
	TBSResponseData    asn1.RawValue
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          asn1.BitString
	Certificates       []asn1.RawValue `asn1:"explicit,tag:0,optional"`
}

var sigHashes = map[string]crypto.Hash{
	"1.2.840.10045.4.3.2":   crypto.SHA256, // ecdsa-with-SHA256
	"1.2.840.10045.4.3.3":   crypto.SHA384, // ecdsa-with-SHA384
	"1.2.840.10045.4.3.4":   crypto.SHA512, // ecdsa-with-SHA512
	"1.2.840.113549.1.1.11": crypto.SHA256, // sha256WithRSAEncryption
	"1.2.840.113549.1.1.12": crypto.SHA384, // sha384WithRSAEncryption
	"1.2.840.113549.1.1.13": crypto.SHA512, // sha512WithRSAEncryption
}

func withNonce(der []byte, nonce pkix.Extension, signer crypto.Signer) ([]byte, error) {
	var outer ocspResponseASN1
	if _, err := asn1.Unmarshal(der, &outer); err != nil {
		return nil, fmt.Errorf("re-reading the response: %w", err)
	}
	var basic basicResponseASN1
	if _, err := asn1.Unmarshal(outer.Bytes.Response, &basic); err != nil {
		return nil, fmt.Errorf("re-reading the basic response: %w", err)
	}
	h, ok := sigHashes[basic.SignatureAlgorithm.Algorithm.String()]
	if !ok {
		return nil, fmt.Errorf("unexpected signature algorithm %v", basic.SignatureAlgorithm.Algorithm)
	}
	exts, err := asn1.Marshal([]pkix.Extension{nonce})
	if err != nil {
		return nil, err
	}
	tagged, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, IsCompound: true, Bytes: exts})
	if err != nil {
		return nil, err
	}
	tbs := basic.TBSResponseData
	tbs.Bytes = append(append([]byte{}, tbs.Bytes...), tagged...)
	tbs.FullBytes = nil
	tbsDER, err := asn1.Marshal(tbs)
	if err != nil {
		return nil, err
	}
	hh := h.New()
	hh.Write(tbsDER)
	sig, err := signer.Sign(rand.Reader, hh.Sum(nil), h)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	basic.TBSResponseData = asn1.RawValue{FullBytes: tbsDER}
	basic.Signature = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	if outer.Bytes.Response, err = asn1.Marshal(basic); err != nil {
		return nil, err
	}
	return asn1.Marshal(outer)
}
