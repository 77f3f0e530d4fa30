package device

import (
	"bytes"
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
	"strconv"
	"strings"

	"github.com/outpost-pki/outpost/internal/fsutil"
	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/keystore/tpmkeys"
)

// maxPEMSize caps key and certificate files read from disk: a key or a
// certificate with its chain is a few kilobytes; the cap keeps a wrong
// path from being read whole.
const maxPEMSize = 64 << 10

// maxCABundleSize caps OUTPOST_EST_CA: usually the DMS manager chain,
// but an operator may point it at a bundle (Debian's is about 200 KiB).
const maxCABundleSize = 4 << 20

// errNoKey: the keyring holds no key of the kind asked for.
var errNoKey = errors.New("no key")

// slotKey is a key of the keyring and where its pending request lives.
type slotKey struct {
	signer crypto.Signer
	// csrPath is where the CSR for this key waits while the server
	// answers 202 (base64 DER, as the sh hook writes it).
	csrPath string
	// next is true for the key of a re-key, not yet the device key.
	next bool
	// name identifies the key for logs: a file or a TPM key name.
	name string
}

// keyring holds the device key and, during a re-key, the next one.
// Implementations are not safe for concurrent use; a run holds the lock.
type keyring interface {
	// Current returns the key cert certifies, or with cert nil the key
	// of a first enrollment, made when there is none and create is set.
	// It returns errNoKey when there is no such key.
	Current(ctx context.Context, cert *x509.Certificate, create bool) (*slotKey, error)
	// Next returns the key of a re-key (one that cert does not certify),
	// made when there is none and create is set, else errNoKey.
	Next(ctx context.Context, cert *x509.Certificate, create bool) (*slotKey, error)
	// Install makes certPEM the device certificate and k the device key,
	// so that a power cut leaves either the old pair or the new one.
	Install(ctx context.Context, k *slotKey, certPEM []byte) error
	// Recover finishes an Install that a power cut interrupted.
	Recover(ctx context.Context) error
	// Close releases the keyring.
	Close() error
}

// fileKeys keeps keys in PEM files: the device key in Key, the next key
// in Key.next, as the sh hook does. An install writes Cert.new, renames
// Key.next to Key (re-key only), then Cert.new to Cert.
type fileKeys struct {
	key, cert string
	alg       keystore.Algorithm
}

func (f *fileKeys) Current(_ context.Context, cert *x509.Certificate, create bool) (*slotKey, error) {
	s, err := readKeyFile(f.key)
	if errors.Is(err, fs.ErrNotExist) {
		if cert != nil || !create {
			return nil, errNoKey
		}
		if s, err = f.generate(f.key); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if cert != nil && !samePublic(cert.PublicKey, s.Public()) {
		return nil, fmt.Errorf("%s does not belong to the key %s", f.cert, f.key)
	}
	return &slotKey{signer: s, csrPath: f.key + ".csr", name: f.key}, nil
}

func (f *fileKeys) Next(_ context.Context, _ *x509.Certificate, create bool) (*slotKey, error) {
	path := f.key + ".next"
	s, err := readKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, errNoKey
		}
		s, err = f.generate(path)
	}
	if err != nil {
		return nil, err
	}
	return &slotKey{signer: s, csrPath: path + ".csr", next: true, name: path}, nil
}

func (f *fileKeys) generate(path string) (crypto.Signer, error) {
	s, err := generateKey(f.alg)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(s)
	if err != nil {
		return nil, fmt.Errorf("encoding the new key: %w", err)
	}
	if err := fsutil.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600, false); err != nil {
		return nil, fmt.Errorf("writing the new key %s: %w", path, err)
	}
	return s, nil
}

func (f *fileKeys) Install(_ context.Context, k *slotKey, certPEM []byte) error {
	if err := fsutil.WriteFile(f.cert+".new", certPEM, 0o644, true); err != nil {
		return fmt.Errorf("writing %s.new: %w", f.cert, err)
	}
	if k.next {
		if err := os.Rename(f.key+".next", f.key); err != nil {
			return fmt.Errorf("installing the new key: %w", err)
		}
	}
	if err := os.Rename(f.cert+".new", f.cert); err != nil {
		return fmt.Errorf("installing %s: %w", f.cert, err)
	}
	return fsutil.SyncDir(filepath.Dir(f.cert))
}

func (f *fileKeys) Recover(context.Context) error {
	b, err := readCapped(f.cert + ".new")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	cert, err := parseCertPEM(b)
	if err != nil {
		return os.Remove(f.cert + ".new")
	}
	if s, err := readKeyFile(f.key + ".next"); err == nil && samePublic(cert.PublicKey, s.Public()) {
		if err := os.Rename(f.key+".next", f.key); err != nil {
			return err
		}
	}
	if s, err := readKeyFile(f.key); err == nil && samePublic(cert.PublicKey, s.Public()) {
		if err := os.Rename(f.cert+".new", f.cert); err != nil {
			return err
		}
		for _, p := range []string{f.key + ".csr", f.key + ".csr.pem", f.key + ".next.csr", f.key + ".next.csr.pem"} {
			_ = os.Remove(p)
		}
		return fsutil.SyncDir(filepath.Dir(f.cert))
	}
	return os.Remove(f.cert + ".new")
}

func (f *fileKeys) Close() error { return nil }

// tpmKeys keeps keys in a TPM through tpmkeys: blobs named device-<n> in
// dir. The device key is the one the certificate certifies; any other is
// the next key of a re-key. An install writes the certificate, then
// deletes the keys it does not certify.
type tpmKeys struct {
	store *tpmkeys.Store
	dir   string
	cert  string
	alg   keystore.Algorithm
}

const tpmKeyPrefix = "device-"

func openTPMKeys(cfg *Config) (*tpmKeys, error) {
	open := tpmkeys.DialSwtpm(cfg.SwtpmAddr)
	if cfg.TPMDevice != "" {
		open = tpmkeys.OpenDevice(cfg.TPMDevice)
	}
	st, err := tpmkeys.Open(tpmkeys.Config{Open: open, Dir: cfg.TPMDir})
	if err != nil {
		return nil, err
	}
	return &tpmKeys{store: st, dir: cfg.TPMDir, cert: cfg.Cert, alg: cfg.KeyType}, nil
}

// keys lists the device keys, oldest generation first.
func (t *tpmKeys) keys(ctx context.Context) ([]keystore.KeyInfo, error) {
	all, err := t.store.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []keystore.KeyInfo
	for _, k := range all {
		if _, ok := generation(k.Name); ok {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := generation(out[i].Name)
		b, _ := generation(out[j].Name)
		return a < b
	})
	return out, nil
}

func generation(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, tpmKeyPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0
}

func (t *tpmKeys) slot(ctx context.Context, name string, next bool) (*slotKey, error) {
	s, err := t.store.Load(ctx, name)
	if err != nil {
		return nil, err
	}
	return &slotKey{signer: s, csrPath: filepath.Join(t.dir, name+".csr"), next: next, name: "tpm:" + name}, nil
}

func (t *tpmKeys) generate(ctx context.Context, keys []keystore.KeyInfo, next bool) (*slotKey, error) {
	n := 1
	if len(keys) > 0 {
		last, _ := generation(keys[len(keys)-1].Name)
		n = last + 1
	}
	name := tpmKeyPrefix + strconv.Itoa(n)
	if _, err := t.store.Generate(ctx, name, t.alg); err != nil {
		return nil, err
	}
	return t.slot(ctx, name, next)
}

func (t *tpmKeys) Current(ctx context.Context, cert *x509.Certificate, create bool) (*slotKey, error) {
	keys, err := t.keys(ctx)
	if err != nil {
		return nil, err
	}
	if cert != nil {
		for _, k := range keys {
			if samePublic(cert.PublicKey, k.Public) {
				return t.slot(ctx, k.Name, false)
			}
		}
		return nil, fmt.Errorf("no key in the TPM (blobs in %s) belongs to %s", t.dir, t.cert)
	}
	if len(keys) > 0 {
		return t.slot(ctx, keys[0].Name, false)
	}
	if !create {
		return nil, errNoKey
	}
	return t.generate(ctx, keys, false)
}

func (t *tpmKeys) Next(ctx context.Context, cert *x509.Certificate, create bool) (*slotKey, error) {
	keys, err := t.keys(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if cert == nil || !samePublic(cert.PublicKey, k.Public) {
			return t.slot(ctx, k.Name, true)
		}
	}
	if !create {
		return nil, errNoKey
	}
	return t.generate(ctx, keys, true)
}

func (t *tpmKeys) Install(ctx context.Context, _ *slotKey, certPEM []byte) error {
	if err := fsutil.WriteFile(t.cert, certPEM, 0o644, true); err != nil {
		return fmt.Errorf("installing %s: %w", t.cert, err)
	}
	return t.Recover(ctx)
}

// Recover deletes the keys the certificate does not certify, except one
// with a request still pending (a re-key the server answered 202 for).
func (t *tpmKeys) Recover(ctx context.Context) error {
	b, err := readCapped(t.cert)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	cert, err := parseCertPEM(b)
	if err != nil {
		return fmt.Errorf("reading %s: %w", t.cert, err)
	}
	keys, err := t.keys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if samePublic(cert.PublicKey, k.Public) {
			_ = os.Remove(filepath.Join(t.dir, k.Name+".csr"))
			continue
		}
		if _, err := os.Stat(filepath.Join(t.dir, k.Name+".csr")); err == nil {
			continue
		}
		if err := t.store.Delete(ctx, k.Name); err != nil {
			return fmt.Errorf("deleting the old key %s: %w", k.Name, err)
		}
	}
	return nil
}

func (t *tpmKeys) Close() error { return t.store.Close() }

func generateKey(alg keystore.Algorithm) (crypto.Signer, error) {
	if c := alg.Curve(); c != nil {
		return ecdsa.GenerateKey(c, rand.Reader)
	}
	if bits := alg.RSABits(); bits > 0 {
		return rsa.GenerateKey(rand.Reader, bits)
	}
	return nil, fmt.Errorf("%w: %s", keystore.ErrUnsupported, alg)
}

// readCapped reads a file of at most maxPEMSize bytes.
func readCapped(path string) ([]byte, error) { return readCappedN(path, maxPEMSize) }

// readCappedN reads a file of at most limit bytes.
func readCappedN(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Cap before reading: see maxPEMSize and maxCABundleSize.
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// readKeyFile reads a PEM private key: PKCS#8 (openssl genpkey, Go), SEC 1
// or PKCS#1.
func readKeyFile(path string) (crypto.Signer, error) {
	b, err := readCapped(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s holds no PEM private key", path)
		}
		var key any
		switch blk.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: %T cannot sign", path, key)
		}
		return s, nil
	}
}

// parseCertPEM returns the first certificate of a PEM file.
func parseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM certificate")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

func certPEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

func samePublic(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

var (
	_ keyring = (*fileKeys)(nil)
	_ keyring = (*tpmKeys)(nil)
)
