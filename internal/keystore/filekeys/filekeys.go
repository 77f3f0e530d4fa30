// Package filekeys is the key store for hosts without a TPM or HSM: each
// private key is a passphrase-encrypted PKCS#8 file (PBES2: PBKDF2 with
// HMAC-SHA-256 and AES-256-CBC, readable by OpenSSL), mode 0600, in a
// directory of mode 0700. The public key sits beside it in clear so that
// List and Public need no passphrase work.
//
// Encryption goes through github.com/youmark/pkcs8, the maintained PKCS#8
// PBES2 implementation for Go (the standard library only reads unencrypted
// PKCS#8).
package filekeys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/youmark/pkcs8"

	"github.com/outpost-pki/outpost/internal/fsutil"
	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/secret"
)

const (
	keySuffix = ".key.pem"
	pubSuffix = ".pub.pem"
	// maxFileSize caps what is read from a key file: an RSA-3072 PKCS#8
	// file is under 3 KiB; anything bigger is not ours.
	maxFileSize = 64 << 10
	// DefaultIterations is the PBKDF2-HMAC-SHA256 work factor (OWASP's
	// 2023 recommendation). A key is decrypted once per Load.
	DefaultIterations = 600_000
	// minIterations is the floor accepted from configuration.
	minIterations = 10_000
)

// Config opens a file key store.
type Config struct {
	// Dir holds the key files; created if missing and set to mode 0700.
	Dir string
	// Passphrase encrypts every key. Required.
	Passphrase secret.Secret
	// Iterations of PBKDF2 for new keys; 0 means DefaultIterations.
	// Existing files keep the count they were written with.
	Iterations int
}

// Store is a directory of encrypted key files.
type Store struct {
	dir        string
	passphrase []byte
	iterations int

	mu     sync.Mutex
	closed bool
	wmu    sync.Mutex // serialises writes
}

// Open opens (creating if needed) the key directory.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("filekeys: no directory configured")
	}
	if cfg.Passphrase == "" {
		return nil, fmt.Errorf("filekeys: %w: a passphrase is required to encrypt keys at rest", keystore.ErrLocked)
	}
	if cfg.Iterations == 0 {
		cfg.Iterations = DefaultIterations
	}
	if cfg.Iterations < minIterations {
		return nil, fmt.Errorf("filekeys: %d PBKDF2 iterations is below the minimum of %d", cfg.Iterations, minIterations)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("filekeys: creating %s: %w", cfg.Dir, err)
	}
	// The directory is the key store's own: nobody else lists it.
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("filekeys: restricting %s to its owner: %w", cfg.Dir, err)
	}
	return &Store{dir: cfg.Dir, passphrase: []byte(cfg.Passphrase.Reveal()), iterations: cfg.Iterations}, nil
}

func (s *Store) check(name string) error {
	if err := keystore.ValidateName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return keystore.ErrClosed
	}
	return nil
}

func (s *Store) keyPath(name string) string { return filepath.Join(s.dir, name+keySuffix) }
func (s *Store) pubPath(name string) string { return filepath.Join(s.dir, name+pubSuffix) }

// Generate creates a key in memory, writes it encrypted, and returns it.
func (s *Store) Generate(_ context.Context, name string, alg keystore.Algorithm) (crypto.Signer, error) {
	if err := s.check(name); err != nil {
		return nil, err
	}
	var key crypto.Signer
	var err error
	switch {
	case alg.Curve() != nil:
		key, err = ecdsa.GenerateKey(alg.Curve(), rand.Reader)
	case alg.RSABits() != 0:
		key, err = rsa.GenerateKey(rand.Reader, alg.RSABits())
	default:
		return nil, fmt.Errorf("filekeys: %w: %q", keystore.ErrUnsupported, alg)
	}
	if err != nil {
		return nil, fmt.Errorf("filekeys: generating %s: %w", alg, err)
	}
	if err := s.write(name, key); err != nil {
		return nil, err
	}
	return key, nil
}

// Import stores an existing key (an imported CA's), encrypted like the
// generated ones.
func (s *Store) Import(_ context.Context, name string, key crypto.Signer) error {
	if err := s.check(name); err != nil {
		return err
	}
	if _, err := keystore.AlgorithmOf(key.Public()); err != nil {
		return fmt.Errorf("filekeys: importing %s: %w", name, err)
	}
	return s.write(name, key)
}

func (s *Store) write(name string, key crypto.Signer) error {
	// Check and write under one lock, so that a refused Generate never
	// touches the existing key's public file.
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := os.Stat(s.keyPath(name)); err == nil {
		return fmt.Errorf("filekeys: %w: %s", keystore.ErrExists, name)
	}
	enc, err := pkcs8.MarshalPrivateKey(key, s.passphrase, &pkcs8.Opts{
		Cipher:  pkcs8.AES256CBC,
		KDFOpts: pkcs8.PBKDF2Opts{SaltSize: 16, IterationCount: s.iterations, HMACHash: crypto.SHA256},
	})
	if err != nil {
		return fmt.Errorf("filekeys: encrypting key %s: %w", name, err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("filekeys: %w", err)
	}
	// Public part first: a crash between the two writes leaves a public
	// key without a private one, which Load reports as not found and
	// Generate overwrites; never a private key that List cannot see.
	if err := fsutil.WriteFile(s.pubPath(name), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644, true); err != nil {
		return fmt.Errorf("filekeys: writing public key %s: %w", name, err)
	}
	if err := fsutil.WriteFile(s.keyPath(name), pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: enc}), 0o600, false); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("filekeys: %w: %s", keystore.ErrExists, name)
		}
		return fmt.Errorf("filekeys: writing key %s: %w", name, err)
	}
	return nil
}

// Load decrypts a key. A wrong passphrase gives ErrLocked.
func (s *Store) Load(_ context.Context, name string) (crypto.Signer, error) {
	if err := s.check(name); err != nil {
		return nil, err
	}
	block, err := readPEM(s.keyPath(name), "ENCRYPTED PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("filekeys: key %s: %w", name, err)
	}
	key, err := pkcs8.ParsePKCS8PrivateKey(block.Bytes, s.passphrase)
	if err != nil {
		return nil, fmt.Errorf("filekeys: key %s: %w: wrong passphrase or corrupt file (%v)", name, keystore.ErrLocked, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("filekeys: key %s: %w: %T", name, keystore.ErrUnsupported, key)
	}
	if _, err := keystore.AlgorithmOf(signer.Public()); err != nil {
		return nil, fmt.Errorf("filekeys: key %s: %w", name, err)
	}
	return signer, nil
}

// Public reads the clear public key file.
func (s *Store) Public(_ context.Context, name string) (crypto.PublicKey, error) {
	if err := s.check(name); err != nil {
		return nil, err
	}
	if _, err := os.Stat(s.keyPath(name)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("filekeys: %w: %s", keystore.ErrNotFound, name)
		}
		return nil, fmt.Errorf("filekeys: %w", err)
	}
	return s.readPublic(name)
}

func (s *Store) readPublic(name string) (crypto.PublicKey, error) {
	block, err := readPEM(s.pubPath(name), "PUBLIC KEY")
	if err != nil {
		return nil, fmt.Errorf("filekeys: public key %s: %w", name, err)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("filekeys: public key %s: %w", name, err)
	}
	return pub, nil
}

// List returns the keys that have a private key file.
func (s *Store) List(_ context.Context) ([]keystore.KeyInfo, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, keystore.ErrClosed
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("filekeys: listing %s: %w", s.dir, err)
	}
	var out []keystore.KeyInfo
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), keySuffix)
		if !ok || keystore.ValidateName(name) != nil {
			continue
		}
		pub, err := s.readPublic(name)
		if err != nil {
			return nil, err
		}
		alg, err := keystore.AlgorithmOf(pub)
		if err != nil {
			return nil, fmt.Errorf("filekeys: key %s: %w", name, err)
		}
		out = append(out, keystore.KeyInfo{Name: name, Algorithm: alg, Public: pub})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete removes the key files.
func (s *Store) Delete(_ context.Context, name string) error {
	if err := s.check(name); err != nil {
		return err
	}
	if err := os.Remove(s.keyPath(name)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("filekeys: %w: %s", keystore.ErrNotFound, name)
		}
		return fmt.Errorf("filekeys: deleting %s: %w", name, err)
	}
	_ = os.Remove(s.pubPath(name))
	return fsutil.SyncDir(s.dir)
}

// Close forgets the passphrase. Signers already loaded keep working: they
// are in-memory keys.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	clear(s.passphrase)
	return nil
}

func readPEM(path, wantType string) (*pem.Block, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, keystore.ErrNotFound
		}
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxFileSize)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != wantType {
		return nil, fmt.Errorf("%s holds no %s PEM block", path, wantType)
	}
	return block, nil
}

var (
	_ keystore.Store    = (*Store)(nil)
	_ keystore.Importer = (*Store)(nil)
)
