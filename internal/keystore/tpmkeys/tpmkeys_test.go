package tpmkeys

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"

	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/keystore/keystoretest"
	"github.com/outpost-pki/outpost/testbed"
)

// algorithms the TPMs here support. RSA-3072 is checked separately: not
// every TPM has it.
var tpmAlgorithms = []keystore.Algorithm{keystore.ECDSAP256, keystore.ECDSAP384, keystore.RSA2048}

func openStore(t *testing.T, open func() (transport.TPMCloser, error), dir string) *Store {
	t.Helper()
	s, err := Open(Config{Open: open, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformanceSwtpm(t *testing.T) {
	tpm := testbed.NewSwtpm(t)
	dir := t.TempDir()
	keystoretest.Run(t, keystoretest.Harness{
		Open:       func(t *testing.T) keystore.Store { return openStore(t, DialSwtpm(tpm.Addr()), dir) },
		Algorithms: tpmAlgorithms,
	})
}

// The in-process simulator exists once per process; stores share it and
// must not close it.
var (
	simOnce sync.Once
	sim     transport.TPMCloser
	simErr  error
)

type nopCloser struct{ transport.TPM }

func (nopCloser) Close() error { return nil }

func openSimulator() (transport.TPMCloser, error) {
	simOnce.Do(func() { sim, simErr = simulator.OpenSimulator() })
	if simErr != nil {
		return nil, simErr
	}
	return nopCloser{sim}, nil
}

func TestConformanceSimulator(t *testing.T) {
	dir := t.TempDir()
	keystoretest.Run(t, keystoretest.Harness{
		Open:       func(t *testing.T) keystore.Store { return openStore(t, openSimulator, dir) },
		Algorithms: tpmAlgorithms,
	})
}

func TestRSA3072(t *testing.T) {
	tpm := testbed.NewSwtpm(t)
	s := openStore(t, DialSwtpm(tpm.Addr()), t.TempDir())
	defer s.Close()
	signer, err := s.Generate(context.Background(), "rsa3072", keystore.RSA3072)
	if errors.Is(err, keystore.ErrUnsupported) {
		// A clear, typed refusal is the contract for a TPM without it.
		t.Logf("this swtpm has no RSA-3072: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("generate RSA-3072: got %v, want a key or ErrUnsupported", err)
	}
	keystoretest.CheckSigner(t, signer)
}

// TestPrivateKeyCannotLeave shows the three ways a TPM key could get out
// all fail: its attributes pin it to this TPM, TPM2_Duplicate refuses it,
// and its blob is useless on another TPM.
func TestPrivateKeyCannotLeave(t *testing.T) {
	ctx := context.Background()
	tpmA := testbed.NewSwtpm(t)
	dirA := t.TempDir()
	s := openStore(t, DialSwtpm(tpmA.Addr()), dirA)
	defer s.Close()
	signer, err := s.Generate(ctx, "identity", keystore.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := signer.(*Signer).PublicArea()
	if err != nil {
		t.Fatal(err)
	}
	a := pub.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || a.EncryptedDuplication {
		t.Errorf("attributes %+v: want fixedTPM, fixedParent, sensitiveDataOrigin", a)
	}

	// Ask the TPM to duplicate (export) the key: it must refuse.
	s.mu.Lock()
	lk, err := s.ensureLoaded("identity", signer.(*Signer).blob)
	if err == nil {
		_, err = tpm2.Duplicate{
			ObjectHandle:    tpm2.AuthHandle{Handle: lk.handle, Name: lk.name, Auth: tpm2.PasswordAuth(nil)},
			NewParentHandle: tpm2.TPMRHNull,
			Symmetric:       tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(s.tpm)
	}
	s.mu.Unlock()
	if err == nil {
		t.Fatal("TPM2_Duplicate of the key succeeded")
	}
	if !errors.Is(err, tpm2.TPMRCAttributes) && !errors.Is(err, tpm2.TPMRCPolicyFail) && !errors.Is(err, tpm2.TPMRCAuthUnavailable) {
		t.Logf("duplicate refused with %v", err)
	}

	// The blob on disk is encrypted to this TPM's storage key: a second
	// TPM cannot load it.
	tpmB := testbed.NewSwtpm(t)
	dirB := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(dirA, "identity"+blobSuffix))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "identity"+blobSuffix), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	sB := openStore(t, DialSwtpm(tpmB.Addr()), dirB)
	defer sB.Close()
	if _, err := sB.Load(ctx, "identity"); err == nil || !strings.Contains(err.Error(), "another storage root key") {
		t.Errorf("loading the blob in another TPM: got %v, want a storage-root-key mismatch", err)
	}
	// Even bypassing our check, the other TPM's Load refuses the blob.
	sB.mu.Lock()
	b, _ := parseBlob(raw)
	_, err = tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: sB.srk, Name: sB.srkName, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    b.private,
		InPublic:     b.public,
	}.Execute(sB.tpm)
	sB.mu.Unlock()
	if err == nil {
		t.Error("another TPM loaded the key blob")
	}
}

func TestKeyAuth(t *testing.T) {
	ctx := context.Background()
	tpm := testbed.NewSwtpm(t)
	dir := t.TempDir()
	s, err := Open(Config{Open: DialSwtpm(tpm.Addr()), Dir: dir, KeyAuth: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := s.Generate(ctx, "guarded", keystore.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	keystoretest.CheckSigner(t, signer)
	s.Close()

	wrong, err := Open(Config{Open: DialSwtpm(tpm.Addr()), Dir: dir, KeyAuth: "guess"})
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	k, err := wrong.Load(ctx, "guarded")
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	if _, err := k.Sign(nil, d[:], crypto.SHA256); !errors.Is(err, keystore.ErrLocked) {
		t.Errorf("sign with a wrong auth value: got %v, want ErrLocked", err)
	}
}

// TestSurvivesTPMRestart: the swtpm restarts (a gateway reboot of the TPM
// daemon); the store reconnects and the key still signs.
func TestSurvivesTPMRestart(t *testing.T) {
	ctx := context.Background()
	tpm := testbed.NewSwtpm(t)
	addr := tpm.Addr()
	s := openStore(t, func() (transport.TPMCloser, error) { return DialSwtpm(addr)() }, t.TempDir())
	defer s.Close()
	signer, err := s.Generate(ctx, "dms", keystore.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	addr = tpm.Addr()
	keystoretest.CheckSigner(t, signer)
}

// TestTPMGoneForAWhile: the TPM stops answering and a reconnect fails
// (its daemon is down); every signature fails with an error, none panics,
// and once the TPM is back the store reconnects and the key signs again.
func TestTPMGoneForAWhile(t *testing.T) {
	ctx := context.Background()
	tpm := testbed.NewSwtpm(t)
	var down atomic.Bool
	s := openStore(t, func() (transport.TPMCloser, error) {
		if down.Load() {
			return nil, errors.New("the TPM is not there")
		}
		return DialSwtpm(tpm.Addr())()
	}, t.TempDir())
	defer s.Close()
	signer, err := s.Generate(ctx, "dms", keystore.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	down.Store(true)
	if err := tpm.Restart(ctx); err != nil { // drops the store's connection
		t.Fatal(err)
	}
	digest := make([]byte, 32)
	for i := 0; i < 3; i++ {
		if _, err := signer.Sign(rand.Reader, digest, crypto.SHA256); err == nil {
			t.Fatalf("signature %d with the TPM gone: no error", i+1)
		}
	}
	down.Store(false)
	keystoretest.CheckSigner(t, signer)
}

func TestCorruptBlob(t *testing.T) {
	tpm := testbed.NewSwtpm(t)
	dir := t.TempDir()
	s := openStore(t, DialSwtpm(tpm.Addr()), dir)
	defer s.Close()
	for name, data := range map[string][]byte{
		"empty":     {},
		"magic":     []byte("XXXX"),
		"truncated": append([]byte(blobMagic), 0, 0, 1, 0),
		"huge":      make([]byte, maxBlobSize+1),
	} {
		if err := os.WriteFile(filepath.Join(dir, name+blobSuffix), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(context.Background(), name); err == nil || errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("%s blob: got %v, want a corruption error", name, err)
		}
	}
}

// TestOpensAfterKilledProcess: a process killed before Close (SIGKILL)
// leaves its SRK and loaded keys in a TPM without a resource manager
// (swtpm's socket); the next Open flushes them instead of failing with
// TPM_RC_OBJECT_MEMORY.
func TestOpensAfterKilledProcess(t *testing.T) {
	ctx := context.Background()
	tpm := testbed.NewSwtpm(t)
	dir := t.TempDir()
	for run := 0; run < 3; run++ {
		s := openStore(t, DialSwtpm(tpm.Addr()), dir)
		signer, err := s.Generate(ctx, "k"+string(rune('a'+run)), keystore.ECDSAP256)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		keystoretest.CheckSigner(t, signer)
		// Killed: the connection closes, nothing is flushed.
		s.mu.Lock()
		s.tpm.Close()
		s.closed = true
		s.mu.Unlock()
	}
	s := openStore(t, DialSwtpm(tpm.Addr()), dir)
	defer s.Close()
	signer, err := s.Load(ctx, "ka")
	if err != nil {
		t.Fatal(err)
	}
	keystoretest.CheckSigner(t, signer)
}
