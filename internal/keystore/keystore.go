// Package keystore is the one abstraction through which Outpost signs: a
// store hands out crypto.Signers by name, whatever holds the private key
// (a TPM 2.0, a PKCS#11 HSM, or passphrase-encrypted files).
//
// Backends live in sub-packages: tpmkeys, pkcs11keys and filekeys. Their
// private keys never leave the device when one is used: the Signers they
// return sign inside the TPM or HSM.
package keystore

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"regexp"
)

// Errors every backend returns, wrapped with context. Check with
// errors.Is.
var (
	// ErrNotFound: no key by that name.
	ErrNotFound = errors.New("keystore: key not found")
	// ErrExists: Generate was asked for a name already in use.
	ErrExists = errors.New("keystore: key already exists")
	// ErrLocked: the store or key cannot be used without the right
	// credential (PIN, passphrase, TPM auth value).
	ErrLocked = errors.New("keystore: locked (wrong or missing PIN, passphrase or auth value)")
	// ErrUnsupported: the backend cannot generate or use that algorithm.
	ErrUnsupported = errors.New("keystore: algorithm not supported by this backend")
	// ErrInvalidName: the key name is not acceptable (see ValidateName).
	ErrInvalidName = errors.New("keystore: invalid key name")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("keystore: store closed")
)

// Algorithm names a key type and size.
type Algorithm string

// The algorithms Outpost keys use.
const (
	ECDSAP256 Algorithm = "ecdsa-p256"
	ECDSAP384 Algorithm = "ecdsa-p384"
	RSA2048   Algorithm = "rsa-2048"
	RSA3072   Algorithm = "rsa-3072"
)

// Algorithms lists every Algorithm, for table tests and validation.
var Algorithms = []Algorithm{ECDSAP256, ECDSAP384, RSA2048, RSA3072}

// ParseAlgorithm checks a configured algorithm name.
func ParseAlgorithm(s string) (Algorithm, error) {
	for _, a := range Algorithms {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("%w: unknown algorithm %q (want one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072)", ErrUnsupported, s)
}

// Curve returns the elliptic curve of an ECDSA algorithm, or nil.
func (a Algorithm) Curve() elliptic.Curve {
	switch a {
	case ECDSAP256:
		return elliptic.P256()
	case ECDSAP384:
		return elliptic.P384()
	}
	return nil
}

// RSABits returns the modulus size of an RSA algorithm, or 0.
func (a Algorithm) RSABits() int {
	switch a {
	case RSA2048:
		return 2048
	case RSA3072:
		return 3072
	}
	return 0
}

// AlgorithmOf returns the Algorithm of a public key.
func AlgorithmOf(pub crypto.PublicKey) (Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return ECDSAP256, nil
		case elliptic.P384():
			return ECDSAP384, nil
		}
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return RSA2048, nil
		case 3072:
			return RSA3072, nil
		}
	}
	return "", fmt.Errorf("%w: public key %T", ErrUnsupported, pub)
}

// KeyInfo describes a stored key.
type KeyInfo struct {
	Name      string
	Algorithm Algorithm
	Public    crypto.PublicKey
}

// Store holds named signing keys. Implementations are safe for concurrent
// use, and so are the Signers they return.
type Store interface {
	// Generate creates a key inside the backend and returns its Signer.
	// It returns ErrExists if the name is taken, ErrInvalidName for a bad
	// name and ErrUnsupported for an algorithm the backend cannot make.
	Generate(ctx context.Context, name string, alg Algorithm) (crypto.Signer, error)
	// Load returns the Signer of a stored key, or ErrNotFound.
	Load(ctx context.Context, name string) (crypto.Signer, error)
	// Public returns the public key of a stored key, or ErrNotFound. It
	// needs no PIN-protected operation where the backend allows.
	Public(ctx context.Context, name string) (crypto.PublicKey, error)
	// List returns the stored keys sorted by name.
	List(ctx context.Context) ([]KeyInfo, error)
	// Delete destroys a key, or returns ErrNotFound. Signers of the key
	// fail afterwards.
	Delete(ctx context.Context, name string) error
	// Close releases the backend. Signers fail afterwards.
	Close() error
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateName checks a key name: 1 to 64 characters, letters, digits,
// '.', '_' and '-', starting with a letter or digit. Names become file
// names and token labels, so nothing else is allowed.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %q (want 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", ErrInvalidName, name)
	}
	return nil
}

// Importer is implemented by stores that can take in an existing private
// key (an imported CA). Hardware stores that generate keys on the device
// usually do not offer it.
type Importer interface {
	// Import stores key under name; ErrExists if the name is taken.
	Import(ctx context.Context, name string, key crypto.Signer) error
}
