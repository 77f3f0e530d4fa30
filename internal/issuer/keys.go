package issuer

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
)

// Key algorithms for [KeySpec.Algorithm].
const (
	KeyAlgorithmECDSA   = "ecdsa"
	KeyAlgorithmRSA     = "rsa"
	KeyAlgorithmEd25519 = "ed25519"
)

// Defaults and floors for RSA key sizes in a [KeySpec].
const (
	// MinRSABits is the smallest RSA modulus a KeySpec may allow, and the
	// default MinBits for RSA.
	MinRSABits = 2048
	// DefaultMaxRSABits is the default MaxBits for RSA.
	DefaultMaxRSABits = 8192
)

// curveBits gives the size of each curve a KeySpec may name.
var curveBits = map[string]int{"P-256": 256, "P-384": 384, "P-521": 521}

// KeySpec is one kind of subject key a [Profile] accepts.
//
//   - "rsa": modulus size in [MinBits, MaxBits]; MinBits defaults to 2048
//     and may not be lower; MaxBits defaults to 8192. Curves must be empty.
//   - "ecdsa": curve in Curves ("P-256", "P-384", "P-521"; empty means all
//     three) and, when set, curve size in [MinBits, MaxBits].
//   - "ed25519": no parameters; MinBits, MaxBits and Curves must be empty.
//
// Key quality beyond algorithm and size (RSA exponent, small factors, points
// on the curve) is checked by the CSR validator, not here.
type KeySpec struct {
	// Algorithm is "ecdsa", "rsa" or "ed25519".
	Algorithm string
	// MinBits is the smallest key size allowed. Default: see above.
	MinBits int
	// MaxBits is the largest key size allowed, 0 for the default.
	MaxBits int
	// Curves lists the allowed ECDSA curves by NIST name. Default: all.
	Curves []string
}

// validate reports what is wrong with k.
func (k KeySpec) validate() error {
	if k.MinBits < 0 || k.MaxBits < 0 {
		return fmt.Errorf("key spec %q: bit sizes must not be negative", k.Algorithm)
	}
	if k.MaxBits != 0 && k.MaxBits < k.MinBits {
		return fmt.Errorf("key spec %q: max bits %d below min bits %d", k.Algorithm, k.MaxBits, k.MinBits)
	}
	switch k.Algorithm {
	case KeyAlgorithmRSA:
		if len(k.Curves) > 0 {
			return errors.New(`key spec "rsa": curves do not apply`)
		}
		if k.MinBits != 0 && k.MinBits < MinRSABits {
			return fmt.Errorf(`key spec "rsa": min bits %d below %d`, k.MinBits, MinRSABits)
		}
		if k.MaxBits != 0 && k.MaxBits < MinRSABits {
			return fmt.Errorf(`key spec "rsa": max bits %d below %d`, k.MaxBits, MinRSABits)
		}
	case KeyAlgorithmECDSA:
		for _, c := range k.Curves {
			if _, ok := curveBits[c]; !ok {
				return fmt.Errorf(`key spec "ecdsa": unknown curve %q (want P-256, P-384 or P-521)`, c)
			}
		}
	case KeyAlgorithmEd25519:
		if k.MinBits != 0 || k.MaxBits != 0 || len(k.Curves) > 0 {
			return errors.New(`key spec "ed25519": takes no bits or curves`)
		}
	default:
		return fmt.Errorf("key spec: unknown algorithm %q (want ecdsa, rsa or ed25519)", k.Algorithm)
	}
	return nil
}

// bitsAllowed reports whether n is within [MinBits, MaxBits], with the given
// defaults for zero fields.
func (k KeySpec) bitsAllowed(n, defMin, defMax int) bool {
	lo, hi := k.MinBits, k.MaxBits
	if lo == 0 {
		lo = defMin
	}
	if hi == 0 {
		hi = defMax
	}
	return n >= lo && (hi == 0 || n <= hi)
}

// allows reports whether k accepts pub.
func (k KeySpec) allows(pub any) bool {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		return k.Algorithm == KeyAlgorithmRSA && pub.N != nil &&
			k.bitsAllowed(pub.N.BitLen(), MinRSABits, DefaultMaxRSABits)
	case *ecdsa.PublicKey:
		if k.Algorithm != KeyAlgorithmECDSA || pub.Curve == nil {
			return false
		}
		name := pub.Curve.Params().Name
		bits, ok := curveBits[name]
		if !ok || len(k.Curves) > 0 && !slices.Contains(k.Curves, name) {
			return false
		}
		return k.bitsAllowed(bits, 0, 0)
	case ed25519.PublicKey:
		return k.Algorithm == KeyAlgorithmEd25519 && len(pub) == ed25519.PublicKeySize
	}
	return false
}

// describeKey names pub's type and size for messages, e.g. "rsa-1024".
func describeKey(pub any) string {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if pub.N == nil {
			return "rsa"
		}
		return fmt.Sprintf("rsa-%d", pub.N.BitLen())
	case *ecdsa.PublicKey:
		if pub.Curve == nil {
			return "ecdsa"
		}
		return "ecdsa-" + pub.Curve.Params().Name
	case ed25519.PublicKey:
		return "ed25519"
	}
	return fmt.Sprintf("%T", pub)
}
