// Package tpmkeys keeps keys in a TPM 2.0 through github.com/google/go-tpm
// (the tpm2 API). Keys are created inside the TPM under the standard ECC
// P-256 storage root key (SRK, re-derived from the owner seed at every
// start) with fixedTPM and fixedParent set: their private part exists
// outside the TPM only as a blob encrypted by the SRK, which no other TPM
// can load and this TPM refuses to duplicate. The blobs live in the state
// directory, so keys survive restarts; a TPM2_Clear (new owner seed) makes
// them unusable, which Load reports clearly.
//
// Transports: OpenDevice for /dev/tpmrm0 (the kernel resource manager),
// DialSwtpm for an swtpm socket, or any transport.TPMCloser (tests use the
// in-process simulator). An swtpm socket serves one connection at a time:
// use one Store per swtpm.
package tpmkeys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/outpost-pki/outpost/internal/fsutil"
	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/secret"
	"github.com/outpost-pki/outpost/internal/tpmconn"
)

const (
	blobSuffix = ".tpmkey"
	blobMagic  = "OTK1"
	// maxBlobSize caps what is read from a key blob: a TPM2B_PUBLIC plus
	// a TPM2B_PRIVATE plus a name are well under 4 KiB.
	maxBlobSize = 16 << 10
	// maxLoaded bounds the keys kept loaded in the TPM. Without a resource
	// manager (swtpm socket, simulator) a TPM holds only a few transient
	// objects, one of which is the SRK.
	maxLoaded = 2
)

// Config opens a TPM key store.
type Config struct {
	// Open returns a connection to the TPM. The store calls it at start
	// and again after a transport failure (a restarted swtpm, a
	// reconnected device), so keys keep working without a restart.
	Open func() (transport.TPMCloser, error)
	// Dir holds the key blobs; created if missing, mode 0700.
	Dir string
	// KeyAuth, if set, is the auth value of new keys and is presented
	// when using keys. Keys with an auth value are protected by the TPM's
	// dictionary-attack lockout.
	KeyAuth secret.Secret
	// OwnerAuth is the owner hierarchy auth, needed to create the SRK;
	// empty on most machines.
	OwnerAuth secret.Secret
}

// OpenDevice opens a TPM character device, normally /dev/tpmrm0.
func OpenDevice(path string) func() (transport.TPMCloser, error) {
	return func() (transport.TPMCloser, error) {
		t, err := linuxtpm.Open(path)
		if err != nil {
			return nil, fmt.Errorf("tpmkeys: opening %s: %w", path, err)
		}
		return t, nil
	}
}

// DialSwtpm connects to an swtpm server socket ("host:port").
func DialSwtpm(addr string) func() (transport.TPMCloser, error) {
	return func() (transport.TPMCloser, error) { return tpmconn.Dial(addr) }
}

// Store is a TPM-backed key store. All TPM commands are serialised.
type Store struct {
	cfg  Config
	auth []byte

	mu      sync.Mutex
	tpm     transport.TPMCloser
	srk     tpm2.TPMHandle
	srkName tpm2.TPM2BName
	loaded  map[string]*loadedKey
	order   []string // load order, oldest first
	closed  bool
}

type loadedKey struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
}

// Open connects to the TPM and creates the SRK.
func Open(cfg Config) (*Store, error) {
	if cfg.Open == nil {
		return nil, errors.New("tpmkeys: no TPM transport configured")
	}
	if cfg.Dir == "" {
		return nil, errors.New("tpmkeys: no state directory configured")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("tpmkeys: creating %s: %w", cfg.Dir, err)
	}
	s := &Store{cfg: cfg, auth: []byte(cfg.KeyAuth.Reveal()), loaded: map[string]*loadedKey{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.connect(); err != nil {
		return nil, err
	}
	return s, nil
}

// connect (re)opens the transport and re-creates the SRK. Caller holds mu.
func (s *Store) connect() error {
	if s.tpm != nil {
		s.tpm.Close()
		s.tpm = nil
	}
	s.loaded = map[string]*loadedKey{}
	s.order = nil
	t, err := s.cfg.Open()
	if err != nil {
		return fmt.Errorf("tpmkeys: connecting to the TPM: %w", err)
	}
	// Without a resource manager (swtpm's socket, /dev/tpm0) transient
	// objects outlive the connection that loaded them: a process killed
	// before Close (SIGKILL, the OOM killer), or our own connection that
	// failed, leaves an SRK and keys loaded, and the TPM has room for only
	// a few, so the SRK or the next key load would fail with
	// TPM_RC_OBJECT_MEMORY. Such a TPM serves one user at a time, so what
	// is loaded now is left over: flush it. Behind a resource manager
	// (/dev/tpmrm0) a new connection sees no transient objects.
	flushTransient(t)
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth([]byte(s.cfg.OwnerAuth.Reveal()))},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t)
	if err != nil {
		t.Close()
		if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
			return fmt.Errorf("tpmkeys: creating the storage root key: %w: owner auth (%v)", keystore.ErrLocked, err)
		}
		return fmt.Errorf("tpmkeys: creating the storage root key: %w", err)
	}
	s.tpm, s.srk, s.srkName = t, rsp.ObjectHandle, rsp.Name
	return nil
}

// flushTransient flushes every transient object loaded in the TPM (best
// effort).
func flushTransient(t transport.TPM) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(tpm2.TPMHTTransient) << 24, PropertyCount: 64}.Execute(t)
	if err != nil {
		return
	}
	handles, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		return
	}
	for _, h := range handles.Handle {
		_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t)
	}
}

// isTPMError reports whether err came from the TPM itself (a response
// code) rather than from the transport.
func isTPMError(err error) bool {
	var rc tpm2.TPMRC
	return errors.As(err, &rc)
}

// do runs f with the TPM. When the TPM is out of object slots it unloads
// our cached keys and tries again; when the transport failed it
// reconnects once and tries again; after a failed reconnect, the next
// call reconnects first. Caller holds mu.
func (s *Store) do(f func() error) error {
	if s.closed {
		return keystore.ErrClosed
	}
	if s.tpm == nil {
		// An earlier reconnect failed (the TPM or its socket went away):
		// try again now rather than use no transport at all.
		if err := s.connect(); err != nil {
			return err
		}
	}
	err := f()
	if errors.Is(err, tpm2.TPMRCObjectMemory) {
		for len(s.order) > 0 {
			s.evict(s.order[0])
		}
		err = f()
	}
	if err == nil || isTPMError(err) || errors.Is(err, keystore.ErrNotFound) {
		return err
	}
	if cerr := s.connect(); cerr != nil {
		return fmt.Errorf("%w (reconnect failed: %v)", err, cerr)
	}
	return f()
}

func (s *Store) blobPath(name string) string { return filepath.Join(s.cfg.Dir, name+blobSuffix) }

func keyTemplate(alg keystore.Algorithm, withAuth bool) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		SignEncrypt:         true,
		NoDA:                !withAuth,
	}
	switch alg {
	case keystore.ECDSAP256, keystore.ECDSAP384:
		curve := tpm2.TPMECCNistP256
		if alg == keystore.ECDSAP384 {
			curve = tpm2.TPMECCNistP384
		}
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
				CurveID:   curve,
				KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}, nil
	case keystore.RSA2048, keystore.RSA3072:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
				KeyBits:   tpm2.TPMKeyBits(alg.RSABits()),
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("tpmkeys: %w: %q", keystore.ErrUnsupported, alg)
}

// blob is a key as stored on disk.
type blob struct {
	srkName []byte
	public  tpm2.TPM2BPublic
	private tpm2.TPM2BPrivate
}

func (b *blob) marshal() []byte {
	var buf bytes.Buffer
	buf.WriteString(blobMagic)
	for _, part := range [][]byte{b.srkName, tpm2.Marshal(b.public), tpm2.Marshal(b.private)} {
		_ = binary.Write(&buf, binary.BigEndian, uint32(len(part)))
		buf.Write(part)
	}
	return buf.Bytes()
}

func parseBlob(data []byte) (*blob, error) {
	if !bytes.HasPrefix(data, []byte(blobMagic)) {
		return nil, errors.New("not an Outpost TPM key blob")
	}
	r := bytes.NewReader(data[len(blobMagic):])
	var parts [3][]byte
	for i := range parts {
		var n uint32
		if err := binary.Read(r, binary.BigEndian, &n); err != nil {
			return nil, fmt.Errorf("truncated key blob: %w", err)
		}
		if int64(n) > int64(r.Len()) {
			return nil, errors.New("truncated key blob")
		}
		parts[i] = make([]byte, n)
		if _, err := io.ReadFull(r, parts[i]); err != nil {
			return nil, err
		}
	}
	if r.Len() != 0 {
		return nil, errors.New("trailing data after key blob")
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](parts[1])
	if err != nil {
		return nil, fmt.Errorf("key blob public area: %w", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](parts[2])
	if err != nil {
		return nil, fmt.Errorf("key blob private area: %w", err)
	}
	return &blob{srkName: parts[0], public: *pub, private: *priv}, nil
}

func (b *blob) publicKey() (crypto.PublicKey, error) {
	pub, err := b.public.Contents()
	if err != nil {
		return nil, err
	}
	return tpm2.Pub(*pub)
}

func (s *Store) readBlob(name string) (*blob, error) {
	f, err := os.Open(s.blobPath(name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("tpmkeys: %w: %s", keystore.ErrNotFound, name)
		}
		return nil, fmt.Errorf("tpmkeys: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBlobSize+1))
	if err != nil {
		return nil, fmt.Errorf("tpmkeys: reading %s: %w", name, err)
	}
	if len(data) > maxBlobSize {
		return nil, fmt.Errorf("tpmkeys: key blob %s larger than %d bytes", name, maxBlobSize)
	}
	b, err := parseBlob(data)
	if err != nil {
		return nil, fmt.Errorf("tpmkeys: key %s: %w", name, err)
	}
	return b, nil
}

// Generate creates a key inside the TPM and stores its blob.
func (s *Store) Generate(_ context.Context, name string, alg keystore.Algorithm) (crypto.Signer, error) {
	if err := keystore.ValidateName(name); err != nil {
		return nil, err
	}
	tmpl, err := keyTemplate(alg, len(s.auth) > 0)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(s.blobPath(name)); err == nil {
		return nil, fmt.Errorf("tpmkeys: %w: %s", keystore.ErrExists, name)
	}
	var b *blob
	err = s.do(func() error {
		rsp, err := tpm2.Create{
			ParentHandle: tpm2.AuthHandle{Handle: s.srk, Name: s.srkName, Auth: tpm2.PasswordAuth(nil)},
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
				UserAuth: tpm2.TPM2BAuth{Buffer: s.auth},
			}},
			InPublic: tpm2.New2B(tmpl),
		}.Execute(s.tpm)
		if err != nil {
			return err
		}
		b = &blob{srkName: s.srkName.Buffer, public: rsp.OutPublic, private: rsp.OutPrivate}
		return nil
	})
	if err != nil {
		if errors.Is(err, tpm2.TPMRCValue) || errors.Is(err, tpm2.TPMRCKeySize) || errors.Is(err, tpm2.TPMRCCurve) || errors.Is(err, tpm2.TPMRCAsymmetric) {
			return nil, fmt.Errorf("tpmkeys: %w: this TPM cannot create %s keys (%v)", keystore.ErrUnsupported, alg, err)
		}
		return nil, fmt.Errorf("tpmkeys: creating %s key %s: %w", alg, name, err)
	}
	if err := fsutil.WriteFile(s.blobPath(name), b.marshal(), 0o600, false); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("tpmkeys: %w: %s", keystore.ErrExists, name)
		}
		return nil, fmt.Errorf("tpmkeys: storing key %s: %w", name, err)
	}
	return s.signerFor(name, b)
}

func (s *Store) signerFor(name string, b *blob) (*Signer, error) {
	pub, err := b.publicKey()
	if err != nil {
		return nil, fmt.Errorf("tpmkeys: key %s: %w", name, err)
	}
	alg, err := keystore.AlgorithmOf(pub)
	if err != nil {
		return nil, fmt.Errorf("tpmkeys: key %s: %w", name, err)
	}
	return &Signer{store: s, name: name, blob: b, pub: pub, alg: alg}, nil
}

// Load returns the Signer of a stored key. It loads the key into the TPM
// once, so a key from another TPM or from before a TPM clear fails here.
func (s *Store) Load(_ context.Context, name string) (crypto.Signer, error) {
	if err := keystore.ValidateName(name); err != nil {
		return nil, err
	}
	b, err := s.readBlob(name)
	if err != nil {
		return nil, err
	}
	sg, err := s.signerFor(name, b)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.do(func() error { _, err := s.ensureLoaded(name, b); return err }); err != nil {
		return nil, err
	}
	return sg, nil
}

// ensureLoaded loads a key blob under the SRK if it is not loaded yet,
// evicting the oldest loaded key when the TPM is full. Caller holds mu.
func (s *Store) ensureLoaded(name string, b *blob) (*loadedKey, error) {
	if lk, ok := s.loaded[name]; ok {
		return lk, nil
	}
	if !bytes.Equal(b.srkName, s.srkName.Buffer) {
		return nil, fmt.Errorf("tpmkeys: key %s was made under another storage root key: this TPM was cleared or the blob comes from another TPM; the key is lost", name)
	}
	for len(s.order) >= maxLoaded {
		s.evict(s.order[0])
	}
	rsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: s.srk, Name: s.srkName, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    b.private,
		InPublic:     b.public,
	}.Execute(s.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpmkeys: loading key %s into the TPM: %w", name, err)
	}
	lk := &loadedKey{handle: rsp.ObjectHandle, name: rsp.Name}
	s.loaded[name] = lk
	s.order = append(s.order, name)
	return lk, nil
}

func (s *Store) evict(name string) {
	if lk, ok := s.loaded[name]; ok {
		_, _ = tpm2.FlushContext{FlushHandle: lk.handle}.Execute(s.tpm)
		delete(s.loaded, name)
	}
	for i, n := range s.order {
		if n == name {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}

// Public returns a key's public part from its blob.
func (s *Store) Public(_ context.Context, name string) (crypto.PublicKey, error) {
	if err := keystore.ValidateName(name); err != nil {
		return nil, err
	}
	b, err := s.readBlob(name)
	if err != nil {
		return nil, err
	}
	return b.publicKey()
}

// List returns the keys in the state directory.
func (s *Store) List(_ context.Context) ([]keystore.KeyInfo, error) {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("tpmkeys: listing %s: %w", s.cfg.Dir, err)
	}
	var out []keystore.KeyInfo
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), blobSuffix)
		if !ok || keystore.ValidateName(name) != nil {
			continue
		}
		b, err := s.readBlob(name)
		if err != nil {
			return nil, err
		}
		pub, err := b.publicKey()
		if err != nil {
			return nil, fmt.Errorf("tpmkeys: key %s: %w", name, err)
		}
		alg, err := keystore.AlgorithmOf(pub)
		if err != nil {
			return nil, fmt.Errorf("tpmkeys: key %s: %w", name, err)
		}
		out = append(out, keystore.KeyInfo{Name: name, Algorithm: alg, Public: pub})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete removes the blob (and unloads the key). Without its blob the key
// cannot be loaded again: it is destroyed.
func (s *Store) Delete(_ context.Context, name string) error {
	if err := keystore.ValidateName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return keystore.ErrClosed
	}
	if err := os.Remove(s.blobPath(name)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("tpmkeys: %w: %s", keystore.ErrNotFound, name)
		}
		return fmt.Errorf("tpmkeys: deleting %s: %w", name, err)
	}
	s.evict(name)
	return fsutil.SyncDir(s.cfg.Dir)
}

// Close flushes loaded keys and the SRK and closes the transport.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, n := range append([]string(nil), s.order...) {
		s.evict(n)
	}
	if s.tpm == nil {
		return nil
	}
	_, _ = tpm2.FlushContext{FlushHandle: s.srk}.Execute(s.tpm)
	return s.tpm.Close()
}

// Signer signs with a TPM-resident key.
type Signer struct {
	store *Store
	name  string
	blob  *blob
	pub   crypto.PublicKey
	alg   keystore.Algorithm
}

// Public returns the public key.
func (k *Signer) Public() crypto.PublicKey { return k.pub }

// Name returns the key's name in the store.
func (k *Signer) Name() string { return k.name }

// PublicArea returns the TPM public area of the key, whose attributes
// (fixedTPM, fixedParent, sensitiveDataOrigin) state that the private key
// was made in, and cannot leave, this TPM.
func (k *Signer) PublicArea() (*tpm2.TPMTPublic, error) { return k.blob.public.Contents() }

var hashAlgs = map[crypto.Hash]tpm2.TPMAlgID{
	crypto.SHA256: tpm2.TPMAlgSHA256,
	crypto.SHA384: tpm2.TPMAlgSHA384,
	crypto.SHA512: tpm2.TPMAlgSHA512,
}

// Sign signs a digest inside the TPM. ECDSA signatures are returned
// ASN.1-encoded, as crypto.Signer requires; RSA keys sign PKCS#1 v1.5, or
// PSS when opts is *rsa.PSSOptions.
func (k *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	h := opts.HashFunc()
	alg, ok := hashAlgs[h]
	if !ok {
		return nil, fmt.Errorf("tpmkeys: unsupported hash %v", h)
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("tpmkeys: digest is %d bytes, want %d for %v", len(digest), h.Size(), h)
	}
	scheme := tpm2.TPMAlgECDSA
	pss, isPSS := opts.(*rsa.PSSOptions)
	if k.alg.RSABits() != 0 {
		scheme = tpm2.TPMAlgRSASSA
		if isPSS {
			scheme = tpm2.TPMAlgRSAPSS
		}
	}

	s := k.store
	s.mu.Lock()
	var rsp *tpm2.SignResponse
	err := s.do(func() error {
		lk, err := s.ensureLoaded(k.name, k.blob)
		if err != nil {
			return err
		}
		rsp, err = tpm2.Sign{
			KeyHandle: tpm2.AuthHandle{Handle: lk.handle, Name: lk.name, Auth: tpm2.PasswordAuth(s.auth)},
			Digest:    tpm2.TPM2BDigest{Buffer: digest},
			InScheme: tpm2.TPMTSigScheme{
				Scheme:  scheme,
				Details: tpm2.NewTPMUSigScheme(scheme, &tpm2.TPMSSchemeHash{HashAlg: alg}),
			},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(s.tpm)
		return err
	})
	s.mu.Unlock()
	if err != nil {
		if errors.Is(err, tpm2.TPMRCAuthFail) || errors.Is(err, tpm2.TPMRCBadAuth) {
			return nil, fmt.Errorf("tpmkeys: signing with %s: %w (%v)", k.name, keystore.ErrLocked, err)
		}
		return nil, fmt.Errorf("tpmkeys: signing with %s: %w", k.name, err)
	}

	switch scheme {
	case tpm2.TPMAlgECDSA:
		sig, err := rsp.Signature.Signature.ECDSA()
		if err != nil {
			return nil, fmt.Errorf("tpmkeys: %w", err)
		}
		return asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(sig.SignatureR.Buffer),
			new(big.Int).SetBytes(sig.SignatureS.Buffer),
		})
	case tpm2.TPMAlgRSAPSS:
		sig, err := rsp.Signature.Signature.RSAPSS()
		if err != nil {
			return nil, fmt.Errorf("tpmkeys: %w", err)
		}
		// The TPM picks the salt length; check it is one the caller
		// will accept rather than hand out a signature that fails later.
		if err := rsa.VerifyPSS(k.pub.(*rsa.PublicKey), h, digest, sig.Sig.Buffer, pss); err != nil {
			return nil, fmt.Errorf("tpmkeys: the TPM's PSS salt length does not match the requested options: %w", err)
		}
		return sig.Sig.Buffer, nil
	default:
		sig, err := rsp.Signature.Signature.RSASSA()
		if err != nil {
			return nil, fmt.Errorf("tpmkeys: %w", err)
		}
		return sig.Sig.Buffer, nil
	}
}

var (
	_ keystore.Store = (*Store)(nil)
	_ crypto.Signer  = (*Signer)(nil)
)
