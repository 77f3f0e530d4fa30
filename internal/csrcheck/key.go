package csrcheck

import (
	"bytes"
	"crypto/x509"
	encasn1 "encoding/asn1"
	"math/big"
	"strconv"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// maxRSAExponentBits: crypto/rsa refuses public exponents of 2^31 or more
// (so that behaviour does not depend on the size of int); accepting them
// here would only turn them into a confusing signature failure later.
const maxRSAExponentBits = 31

// checkKey classifies and checks the SubjectPublicKeyInfo before anything
// verifies a signature with it. Sizes are read from the raw encoding, so a
// huge RSA modulus is refused before any arithmetic on it, and curves
// crypto/x509 cannot parse get ReasonWeakCurve rather than a parse error.
func checkKey(spki []byte, p *policy) *Error {
	s := cryptobyte.String(spki)
	var body, alg cryptobyte.String
	var key encasn1.BitString
	if !s.ReadASN1(&body, asn1.SEQUENCE) || !body.ReadASN1(&alg, asn1.SEQUENCE) {
		return reject(ReasonMalformed, nil, "subject public key info is not der")
	}
	if !body.ReadASN1BitString(&key) || !body.Empty() {
		return reject(ReasonMalformed, nil, "subject public key is not a der bit string")
	}
	if key.BitLength%8 != 0 {
		return reject(ReasonBadPublicKey, nil, "subject public key is not whole bytes")
	}
	oid, ok := readOID(&alg)
	if !ok {
		return reject(ReasonMalformed, nil, "key algorithm is not a der object identifier")
	}
	params := []byte(alg) // what follows the OID: optional parameters

	switch oid {
	case oidKeyRSA:
		if !p.AllowRSA {
			return reject(ReasonKeyTypeNotAllowed, nil, "rsa keys not allowed by policy")
		}
		if e := checkRSA(params, key.Bytes, p); e != nil {
			return e
		}
	case oidKeyECDSA:
		if !p.AllowECDSA {
			return reject(ReasonKeyTypeNotAllowed, nil, "ecdsa keys not allowed by policy")
		}
		if e := checkCurve(params, p); e != nil {
			return e
		}
	case oidKeyEd25519:
		if !p.AllowEd25519 {
			return reject(ReasonKeyTypeNotAllowed, nil, "ed25519 keys not allowed by policy")
		}
	default:
		return reject(ReasonUnsupportedKey, nil, "key algorithm %s is not rsa, ecdsa or ed25519", oidString(oid))
	}

	// The rest (point on the curve, Ed25519 key length and parameters) is
	// crypto/x509's to check.
	if _, err := x509.ParsePKIXPublicKey(spki); err != nil {
		return reject(ReasonBadPublicKey, err, "parsing public key")
	}
	return nil
}

// checkRSA checks an rsaEncryption key: NULL parameters (RFC 3279 section
// 2.3.1), RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent
// INTEGER } and nothing else, modulus size within policy and odd, exponent
// odd and in [3, 2^31).
func checkRSA(params, key []byte, p *policy) *Error {
	if !bytes.Equal(params, []byte{0x05, 0x00}) {
		return reject(ReasonBadPublicKey, nil, "rsa key parameters are not null")
	}
	s := cryptobyte.String(key)
	var seq cryptobyte.String
	n, e := new(big.Int), new(big.Int)
	if !s.ReadASN1(&seq, asn1.SEQUENCE) || !s.Empty() ||
		!seq.ReadASN1Integer(n) || !seq.ReadASN1Integer(e) || !seq.Empty() {
		return reject(ReasonBadPublicKey, nil, "rsa public key is not a der RSAPublicKey")
	}
	if n.Sign() <= 0 {
		return reject(ReasonBadPublicKey, nil, "rsa modulus is not positive")
	}
	if bits := n.BitLen(); bits < p.MinRSABits {
		return reject(ReasonWeakRSAKey, nil, "rsa modulus is %d bits, policy minimum is %d", bits, p.MinRSABits)
	} else if bits > p.MaxRSABits {
		return reject(ReasonRSAKeyTooLarge, nil, "rsa modulus is %d bits, policy maximum is %d", bits, p.MaxRSABits)
	}
	if n.Bit(0) == 0 {
		return reject(ReasonBadPublicKey, nil, "rsa modulus is even")
	}
	if e.Sign() <= 0 || e.BitLen() > maxRSAExponentBits || e.Cmp(big.NewInt(3)) < 0 || e.Bit(0) == 0 {
		return reject(ReasonBadRSAExponent, nil, "rsa public exponent %s is not odd and in [3, 2^31)", intString(e))
	}
	return nil
}

// intString renders an integer from the input for a detail, abbreviating
// long values (and sparing the cost of converting them).
func intString(e *big.Int) string {
	if e.BitLen() > 64 {
		return "of " + strconv.Itoa(e.BitLen()) + " bits"
	}
	return e.String()
}

// checkCurve checks id-ecPublicKey parameters: a namedCurve OID (RFC 5480
// section 2.1.1) naming a curve the policy allows. Explicit curve
// parameters are refused outright: they let a key claim a well-known
// curve's name with a generator of its choosing (CVE-2020-0601).
func checkCurve(params []byte, p *policy) *Error {
	s := cryptobyte.String(params)
	if s.PeekASN1Tag(asn1.SEQUENCE) {
		return reject(ReasonWeakCurve, nil, "ecdsa key uses explicit curve parameters")
	}
	oid, ok := readOID(&s)
	if !ok || !s.Empty() {
		return reject(ReasonBadPublicKey, nil, "ecdsa key parameters are not a named curve")
	}
	name, known := curveNames[oid]
	if !known {
		return reject(ReasonWeakCurve, nil, "ecdsa curve %s is not supported", oidString(oid))
	}
	if !p.curves[name] {
		return reject(ReasonWeakCurve, nil, "ecdsa curve %s not allowed by policy", name)
	}
	return nil
}
