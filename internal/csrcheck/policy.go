package csrcheck

import "crypto/elliptic"

// Policy defaults, used by [DefaultPolicy] and in place of zero fields.
const (
	// DefaultMinRSABits is the smallest RSA modulus accepted by default
	// (NIST SP 800-131A, CA/Browser Forum baseline requirements).
	DefaultMinRSABits = 2048
	// DefaultMaxRSABits is the largest RSA modulus accepted by default. It
	// bounds the cost of verifying the signature; no device needs more.
	DefaultMaxRSABits = 8192
	// DefaultMaxSANs is the largest number of subject alternative names
	// accepted by default. A device names itself once or a few times.
	DefaultMaxSANs = 100
)

// rsaBitsCeiling caps Policy.MaxRSABits whatever the caller sets: RSA
// verification cost grows with the square of the modulus length, and a
// device that needs more than 16384 bits does not exist.
const rsaBitsCeiling = 16384

// Policy says which CSRs [Parse] accepts beyond well-formedness. The zero
// value allows no key type and so rejects every CSR; start from
// [DefaultPolicy] and adjust.
type Policy struct {
	// AllowRSA allows RSA keys (rsaEncryption). Default true.
	AllowRSA bool
	// MinRSABits is the smallest RSA modulus, in bits. Zero or less means
	// DefaultMinRSABits (2048).
	MinRSABits int
	// MaxRSABits is the largest RSA modulus, in bits. Zero or less means
	// DefaultMaxRSABits (8192); values above 16384 are treated as 16384.
	MaxRSABits int

	// AllowECDSA allows ECDSA keys (id-ecPublicKey with a named curve).
	// Default true.
	AllowECDSA bool
	// AllowedCurves lists the ECDSA curves accepted, compared by
	// Params().Name. Empty means P-256, P-384 and P-521. Curves crypto/x509
	// cannot parse (secp256k1, Brainpool) are never accepted.
	AllowedCurves []elliptic.Curve

	// AllowEd25519 allows Ed25519 keys. Default true.
	AllowEd25519 bool

	// MaxSANs is the largest number of subject alternative names. Zero or
	// less means DefaultMaxSANs (100).
	MaxSANs int
	// AllowWildcardDNS allows a DNS name whose leftmost label is "*", with at
	// least two labels after it. Default false: devices name themselves.
	AllowWildcardDNS bool
	// RequireSubjectOrSAN rejects a CSR with an empty subject and no subject
	// alternative name. Default true.
	RequireSubjectOrSAN bool
}

// DefaultPolicy returns the policy for device enrollment: RSA keys of 2048
// to 8192 bits, ECDSA on P-256, P-384 or P-521, Ed25519, at most 100
// subject alternative names, no wildcard DNS names, and a subject or a
// subject alternative name required.
func DefaultPolicy() Policy {
	return Policy{
		AllowRSA:            true,
		MinRSABits:          DefaultMinRSABits,
		MaxRSABits:          DefaultMaxRSABits,
		AllowECDSA:          true,
		AllowedCurves:       defaultCurves(),
		AllowEd25519:        true,
		MaxSANs:             DefaultMaxSANs,
		RequireSubjectOrSAN: true,
	}
}

func defaultCurves() []elliptic.Curve {
	return []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()}
}

// policy is a Policy with defaults filled in and curves indexed by name.
type policy struct {
	Policy
	curves map[string]bool
}

func (p Policy) normalize() *policy {
	if p.MinRSABits <= 0 {
		p.MinRSABits = DefaultMinRSABits
	}
	if p.MaxRSABits <= 0 {
		p.MaxRSABits = DefaultMaxRSABits
	}
	if p.MaxRSABits > rsaBitsCeiling {
		p.MaxRSABits = rsaBitsCeiling
	}
	if p.MaxSANs <= 0 {
		p.MaxSANs = DefaultMaxSANs
	}
	curves := p.AllowedCurves
	if len(curves) == 0 {
		curves = defaultCurves()
	}
	n := &policy{Policy: p, curves: make(map[string]bool, len(curves))}
	for _, c := range curves {
		if c != nil && c.Params() != nil {
			n.curves[c.Params().Name] = true
		}
	}
	return n
}
