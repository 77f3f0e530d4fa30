// Package pkcs11keys keeps keys in a PKCS#11 token (an HSM, or SoftHSM2 in
// tests) through github.com/ThalesIgnite/crypto11. Keys are generated on
// the token as sensitive, non-extractable, private token objects; the
// returned Signers ask the token to sign. The token is selected by label,
// never by slot number (SoftHSM2 numbers slots at random).
//
// A key's name is its CKA_LABEL; its CKA_ID is random, as PKCS#11 pairs
// the private and public objects by id.
package pkcs11keys

import (
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/ThalesIgnite/crypto11"

	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/secret"
)

// Config opens a token.
type Config struct {
	// Module is the path of the vendor's PKCS#11 library, e.g.
	// /usr/lib/softhsm/libsofthsm2.so.
	Module string
	// TokenLabel selects the token.
	TokenLabel string
	// PIN is the user PIN.
	PIN secret.Secret
	// MaxSessions bounds concurrent sessions; 0 lets crypto11 decide
	// within the token's limit.
	MaxSessions int
}

// Store is a logged-in PKCS#11 token.
type Store struct {
	ctx *crypto11.Context
	// mu is held exclusively by Generate, Delete and Close, and shared
	// by every other use of the token (finding, listing, signing).
	// Generate and Delete check then act on labels. More than that,
	// SoftHSM2's file object store fails object creation with
	// CKR_GENERAL_ERROR, and listing with CKR_OBJECT_HANDLE_INVALID, when
	// another session of the process searches the token at that moment
	// (TestGenerateWhileSigning); key creation is rare, so excluding
	// everything else while it runs costs nothing measurable.
	mu     sync.RWMutex
	closed bool
}

// Open loads the module, finds the token by label and logs in. A wrong or
// missing PIN gives keystore.ErrLocked; the PIN never appears in errors.
func Open(cfg Config) (*Store, error) {
	if cfg.Module == "" || cfg.TokenLabel == "" {
		return nil, errors.New("pkcs11keys: module and token label are required")
	}
	if cfg.PIN == "" {
		return nil, fmt.Errorf("pkcs11keys: %w: no PIN configured for token %q", keystore.ErrLocked, cfg.TokenLabel)
	}
	ctx, err := crypto11.Configure(&crypto11.Config{
		Path:        cfg.Module,
		TokenLabel:  cfg.TokenLabel,
		Pin:         cfg.PIN.Reveal(),
		MaxSessions: cfg.MaxSessions,
	})
	if err != nil {
		if isPINError(err) {
			return nil, fmt.Errorf("pkcs11keys: token %q: %w (%v)", cfg.TokenLabel, keystore.ErrLocked, err)
		}
		return nil, fmt.Errorf("pkcs11keys: opening token %q with module %s: %w", cfg.TokenLabel, cfg.Module, err)
	}
	return &Store{ctx: ctx}, nil
}

// isPINError recognises login failures. crypto11 wraps pkcs11 errors with
// an errors package that predates Unwrap, so match by name.
func isPINError(err error) bool {
	s := err.Error()
	for _, code := range []string{"CKR_PIN_INCORRECT", "CKR_PIN_LEN_RANGE", "CKR_PIN_LOCKED", "CKR_PIN_EXPIRED", "CKR_USER_PIN_NOT_INITIALIZED"} {
		if strings.Contains(s, code) {
			return true
		}
	}
	return false
}

// find looks a key pair up by label; the caller holds mu (either way).
func (s *Store) find(name string) (crypto11.Signer, error) {
	if err := keystore.ValidateName(name); err != nil {
		return nil, err
	}
	if s.closed {
		return nil, keystore.ErrClosed
	}
	k, err := s.ctx.FindKeyPair(nil, []byte(name))
	if err != nil {
		return nil, fmt.Errorf("pkcs11keys: finding %s: %w", name, err)
	}
	if k == nil {
		return nil, fmt.Errorf("pkcs11keys: %w: %s", keystore.ErrNotFound, name)
	}
	return k, nil
}

// Generate creates a key pair on the token.
func (s *Store) Generate(_ context.Context, name string, alg keystore.Algorithm) (crypto.Signer, error) {
	if err := keystore.ValidateName(name); err != nil {
		return nil, err
	}
	if alg.Curve() == nil && alg.RSABits() == 0 {
		return nil, fmt.Errorf("pkcs11keys: %w: %q", keystore.ErrUnsupported, alg)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.find(name); err == nil {
		return nil, fmt.Errorf("pkcs11keys: %w: %s", keystore.ErrExists, name)
	} else if !errors.Is(err, keystore.ErrNotFound) {
		return nil, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	pub, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(name))
	if err != nil {
		return nil, err
	}
	priv := pub.Copy()
	// Explicit, whatever crypto11's defaults are: the private key never
	// leaves the token, in clear or wrapped.
	for _, a := range []struct {
		t crypto11.AttributeType
		v bool
	}{
		{crypto11.CkaSensitive, true},
		{crypto11.CkaExtractable, false},
		{crypto11.CkaPrivate, true},
		{crypto11.CkaToken, true},
		{crypto11.CkaSign, true},
		{crypto11.CkaDecrypt, false},
		{crypto11.CkaUnwrap, false},
		{crypto11.CkaDerive, false},
	} {
		if err := priv.Set(a.t, a.v); err != nil {
			return nil, err
		}
	}
	var k crypto11.Signer
	if c := alg.Curve(); c != nil {
		k, err = s.ctx.GenerateECDSAKeyPairWithAttributes(pub, priv, c)
	} else {
		k, err = s.ctx.GenerateRSAKeyPairWithAttributes(pub, priv, alg.RSABits())
	}
	if err != nil {
		return nil, fmt.Errorf("pkcs11keys: generating %s key %s: %w", alg, name, err)
	}
	return &signer{k: k, s: s}, nil
}

// Load finds a key pair by label.
func (s *Store) Load(_ context.Context, name string) (crypto.Signer, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, err := s.find(name)
	if err != nil {
		return nil, err
	}
	return &signer{k: k, s: s}, nil
}

// Public returns the public key of a stored pair.
func (s *Store) Public(_ context.Context, name string) (crypto.PublicKey, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, err := s.find(name)
	if err != nil {
		return nil, err
	}
	return k.Public(), nil
}

// signer is a key pair on the token whose signatures share the store's
// lock, so that none runs while a key is being created or destroyed.
type signer struct {
	k crypto11.Signer
	s *Store
}

func (k *signer) Public() crypto.PublicKey { return k.k.Public() }

func (k *signer) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.s.mu.RLock()
	defer k.s.mu.RUnlock()
	if k.s.closed {
		return nil, keystore.ErrClosed
	}
	return k.k.Sign(r, digest, opts)
}

// List returns every key pair on the token that has a valid name.
func (s *Store) List(_ context.Context) ([]keystore.KeyInfo, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, keystore.ErrClosed
	}
	keys, err := s.ctx.FindAllKeyPairs()
	if err != nil {
		return nil, fmt.Errorf("pkcs11keys: listing: %w", err)
	}
	var out []keystore.KeyInfo
	for _, k := range keys {
		attr, err := s.ctx.GetAttribute(k, crypto11.CkaLabel)
		if err != nil || attr == nil {
			continue
		}
		name := string(attr.Value)
		if keystore.ValidateName(name) != nil {
			continue
		}
		alg, err := keystore.AlgorithmOf(k.Public())
		if err != nil {
			continue // a key of another application, of a type we do not use
		}
		out = append(out, keystore.KeyInfo{Name: name, Algorithm: alg, Public: k.Public()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete destroys both objects of the pair.
func (s *Store) Delete(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.find(name)
	if err != nil {
		return err
	}
	if err := k.Delete(); err != nil {
		return fmt.Errorf("pkcs11keys: deleting %s: %w", name, err)
	}
	return nil
}

// Close logs out and unloads the module when no other store uses it.
// Closing twice is harmless.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.ctx.Close()
}

var _ keystore.Store = (*Store)(nil)
