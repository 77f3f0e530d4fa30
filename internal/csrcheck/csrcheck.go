// Package csrcheck parses and validates untrusted PKCS#10 certificate
// requests (RFC 2986), as devices send them over EST (RFC 7030), before
// anything issues a certificate for them.
//
// [Parse] and [ParsePEMOrDER] return the request only when every check
// passes; otherwise they return an [*Error] whose Reason says which check
// failed. Log Error(); send the device Public().
//
// Checks run cheapest first, so hostile input costs little: the size cap,
// then a strict DER walk of the structure, attributes and requested
// extensions (rejecting duplicates), the version, the public key (type,
// size, curve, exponent), critical extensions, the subject alternative
// names, then crypto/x509's own parse, the signature algorithm, the
// subject, and last the signature. An oversized RSA key is refused before any signature is
// verified with it.
//
// What this package does not decide: whether the device may have the names
// it asks for, and which requested extensions the issuer copies. Those are
// the enrollment policy's.
package csrcheck

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
)

// MaxCSRSize caps the DER input to [Parse]. A CSR holds one public key, a
// subject, a few names and a signature: an RSA-4096 CSR with a hundred
// SANs stays under 8 KiB. The cap bounds memory and parse time on hostile
// input, and is checked before any parsing.
const MaxCSRSize = 64 << 10

// MaxPEMSize caps the input to [ParsePEMOrDER]. Base64 grows DER by 4/3 and
// line breaks by 1/64 more; twice MaxCSRSize leaves room for that, the
// armour lines and stray blank lines. The decoded DER must still fit in
// MaxCSRSize.
const MaxPEMSize = 2 * MaxCSRSize

// PEM block types accepted by ParsePEMOrDER. "NEW CERTIFICATE REQUEST" is
// what older OpenSSL and Netscape-era tools write.
const (
	pemTypeCSR    = "CERTIFICATE REQUEST"
	pemTypeNewCSR = "NEW CERTIFICATE REQUEST"
)

// Parse parses a DER-encoded PKCS#10 certificate request from an untrusted
// source and checks it against p. It returns the parsed request, whose
// signature has been verified, or an *Error. Parse is safe for concurrent
// use.
func Parse(der []byte, p Policy) (*x509.CertificateRequest, error) {
	csr, e := parse(der, p.normalize())
	if e != nil {
		return nil, e
	}
	return csr, nil
}

func parse(der []byte, p *policy) (*x509.CertificateRequest, *Error) {
	if len(der) == 0 {
		return nil, reject(ReasonEmpty, nil, "no input")
	}
	if len(der) > MaxCSRSize {
		return nil, reject(ReasonTooLarge, nil, "%d bytes, limit is %d", len(der), MaxCSRSize)
	}

	raw, e := walk(der)
	if e != nil {
		return nil, e
	}
	if raw.version.Sign() != 0 {
		return nil, reject(ReasonVersion, nil, "version %s, want 0", intString(raw.version))
	}
	if e := checkKey(raw.spki, p); e != nil {
		return nil, e
	}
	if e := checkExtensions(raw.extensions); e != nil {
		return nil, e
	}
	sans := 0
	if raw.san != nil {
		if sans, e = checkSANs(raw.san, p); e != nil {
			return nil, e
		}
	}

	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, reject(ReasonMalformed, err, "parsing certificate request")
	}
	if e := checkSignatureAlgorithm(csr); e != nil {
		return nil, e
	}
	if e := checkSubject(csr.Subject); e != nil {
		return nil, e
	}
	if p.RequireSubjectOrSAN && len(csr.Subject.Names) == 0 && sans == 0 {
		return nil, reject(ReasonEmptySubject, nil, "empty subject and no subject alternative name")
	}

	// Last, because it is the expensive check.
	if err := csr.CheckSignature(); err != nil {
		return nil, reject(ReasonBadSignature, err, "verifying %s signature", csr.SignatureAlgorithm)
	}
	return csr, nil
}

// checkSignatureAlgorithm accepts RSA PKCS #1 v1.5 and PSS, and ECDSA, with
// SHA-256 or stronger, and pure Ed25519; and only when the algorithm fits
// the key. crypto/x509 still verifies SHA-1 signatures on CSRs, so this
// check is what keeps them out.
func checkSignatureAlgorithm(csr *x509.CertificateRequest) *Error {
	var want x509.PublicKeyAlgorithm
	switch csr.SignatureAlgorithm {
	case x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
		x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
		want = x509.RSA
	case x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512:
		want = x509.ECDSA
	case x509.PureEd25519:
		want = x509.Ed25519
	case x509.UnknownSignatureAlgorithm:
		return reject(ReasonBadSignatureAlgorithm, nil, "unknown signature algorithm")
	default: // MD2, MD5, SHA-1, DSA
		return reject(ReasonBadSignatureAlgorithm, nil, "insecure signature algorithm %s", csr.SignatureAlgorithm)
	}
	if csr.PublicKeyAlgorithm != want {
		return reject(ReasonSignatureKeyMismatch, nil, "signature algorithm %s with a %s key", csr.SignatureAlgorithm, csr.PublicKeyAlgorithm)
	}
	return nil
}

// ParsePEMOrDER is [Parse] for input that may be PEM armoured: EST clients
// sometimes send a "CERTIFICATE REQUEST" or "NEW CERTIFICATE REQUEST" PEM
// block instead of DER, and accepting it costs nothing. Input that starts,
// after optional whitespace, with "-----BEGIN " is taken as PEM and must
// hold exactly one such block without headers, followed by nothing but
// whitespace; anything else is parsed as DER. The input is capped at
// [MaxPEMSize] before decoding and the decoded DER at [MaxCSRSize].
func ParsePEMOrDER(b []byte, p Policy) (*x509.CertificateRequest, error) {
	if len(b) > MaxPEMSize {
		return nil, reject(ReasonTooLarge, nil, "%d bytes, limit is %d", len(b), MaxPEMSize)
	}
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, reject(ReasonEmpty, nil, "no input")
	}
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return Parse(b, p)
	}
	// pem.Decode skips a block it cannot decode and returns the next one;
	// counting the BEGIN lines first keeps a garbled block from hiding in
	// front of the one parsed.
	if n := bytes.Count(trimmed, []byte("-----BEGIN ")); n != 1 {
		return nil, reject(ReasonTrailingData, nil, "%d pem blocks, want 1", n)
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, reject(ReasonMalformed, nil, "invalid pem armour")
	}
	if block.Type != pemTypeCSR && block.Type != pemTypeNewCSR {
		return nil, reject(ReasonMalformed, nil, "pem block type %s, want %q", quote(block.Type), pemTypeCSR)
	}
	if len(block.Headers) != 0 {
		return nil, reject(ReasonMalformed, nil, "pem block has headers")
	}
	if rest = bytes.TrimSpace(rest); len(rest) != 0 {
		return nil, reject(ReasonTrailingData, nil, "%d bytes after the pem block", len(rest))
	}
	return Parse(block.Bytes, p)
}
