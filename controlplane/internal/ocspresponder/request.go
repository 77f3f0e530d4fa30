package ocspresponder

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"

	"golang.org/x/crypto/ocsp"
)

// MaxRequestSize caps an OCSP request: one CertID and a nonce are a few
// hundred bytes; anything larger is not a request we serve.
const MaxRequestSize = 8 << 10

// maxNonce is the largest nonce accepted (RFC 8954: 1 to 32 octets).
const maxNonce = 32

var oidNonce = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}

// request is a parsed OCSP request: x/crypto/ocsp's fields plus the nonce
// extension, which that package does not read.
type request struct {
	*ocsp.Request
	// nonce is the nonce extension as received (extnValue), or nil.
	nonce *pkix.Extension
}

// rawRequest mirrors RFC 6960's OCSPRequest far enough to reach the
// request extensions.
type rawRequest struct {
	TBS struct {
		Version       asn1.RawValue    `asn1:"explicit,tag:0,optional"`
		RequestorName asn1.RawValue    `asn1:"explicit,tag:1,optional"`
		RequestList   []asn1.RawValue  `asn1:""`
		Extensions    []pkix.Extension `asn1:"explicit,tag:2,optional"`
	}
	Signature asn1.RawValue `asn1:"explicit,tag:0,optional"`
}

var errMalformed = errors.New("malformed OCSP request")

// parseRequest parses and checks an OCSP request.
func parseRequest(der []byte) (*request, error) {
	if len(der) == 0 || len(der) > MaxRequestSize {
		return nil, errMalformed
	}
	req, err := ocsp.ParseRequest(der)
	if err != nil {
		return nil, errMalformed
	}
	if req.SerialNumber == nil || req.SerialNumber.Sign() <= 0 || req.SerialNumber.BitLen() > 160 {
		return nil, errMalformed
	}
	var raw rawRequest
	if rest, err := asn1.Unmarshal(der, &raw); err != nil || len(rest) > 0 {
		return nil, errMalformed
	}
	out := &request{Request: req}
	for i, ext := range raw.TBS.Extensions {
		if !ext.Id.Equal(oidNonce) {
			if ext.Critical {
				return nil, errMalformed // a critical extension we do not know
			}
			continue
		}
		if out.nonce != nil {
			return nil, errMalformed // two nonces
		}
		// RFC 8954: an OCTET STRING of 1 to 32 octets; some clients put
		// the bare bytes in extnValue. Either way it is echoed verbatim.
		if len(ext.Value) == 0 || len(ext.Value) > maxNonce+2 {
			return nil, errMalformed
		}
		e := raw.TBS.Extensions[i]
		out.nonce = &pkix.Extension{Id: oidNonce, Value: e.Value}
	}
	return out, nil
}
