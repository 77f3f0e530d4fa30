package filekeys

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/keystore/keystoretest"
)

// testIterations keeps the suite fast; production uses DefaultIterations.
const testIterations = minIterations

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	keystoretest.Run(t, keystoretest.Harness{
		Open: func(t *testing.T) keystore.Store {
			s, err := Open(Config{Dir: dir, Passphrase: "correct horse", Iterations: testIterations})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Algorithms: keystore.Algorithms,
	})
}

func TestKeysEncryptedAtRest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, Passphrase: "correct horse", Iterations: testIterations})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Generate(ctx, "ca", keystore.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "ca"+keySuffix)
	st, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode %o, want 600", got)
	}
	dst, _ := os.Stat(dir)
	if got := dst.Mode().Perm(); got != 0o700 {
		t.Errorf("key directory mode %o, want 700", got)
	}
	b, _ := os.ReadFile(keyFile)
	if !strings.Contains(string(b), "BEGIN ENCRYPTED PRIVATE KEY") || strings.Contains(string(b), "BEGIN PRIVATE KEY") {
		t.Errorf("key file is not an encrypted PKCS#8 PEM:\n%s", b)
	}

	// A standard format: OpenSSL decrypts it with the passphrase and
	// refuses without it.
	if out, err := exec.Command("openssl", "pkey", "-in", keyFile, "-passin", "pass:correct horse", "-noout").CombinedOutput(); err != nil {
		t.Errorf("openssl cannot read the key with the passphrase: %v\n%s", err, out)
	}
	if out, err := exec.Command("openssl", "pkey", "-in", keyFile, "-passin", "pass:wrong", "-noout").CombinedOutput(); err == nil {
		t.Errorf("openssl read the key with a wrong passphrase:\n%s", out)
	}

	// Wrong passphrase: ErrLocked, and the passphrase is not in the error.
	s2, err := Open(Config{Dir: dir, Passphrase: "wrong horse", Iterations: testIterations})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s2.Load(ctx, "ca")
	if !errors.Is(err, keystore.ErrLocked) {
		t.Errorf("load with wrong passphrase: got %v, want ErrLocked", err)
	}
	if err != nil && strings.Contains(err.Error(), "wrong horse") {
		t.Errorf("error reveals the passphrase: %v", err)
	}
	// Public needs no passphrase.
	if _, err := s2.Public(ctx, "ca"); err != nil {
		t.Errorf("public with wrong passphrase: %v", err)
	}

	if _, err := Open(Config{Dir: dir}); !errors.Is(err, keystore.ErrLocked) {
		t.Errorf("open without passphrase: got %v, want ErrLocked", err)
	}
	if _, err := Open(Config{Dir: dir, Passphrase: "x", Iterations: 10}); err == nil {
		t.Error("open with 10 PBKDF2 iterations succeeded")
	}
}
