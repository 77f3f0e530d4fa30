package pkcs11keys

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/ThalesIgnite/crypto11"

	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/keystore/keystoretest"
	"github.com/outpost-pki/outpost/internal/secret"
	"github.com/outpost-pki/outpost/testbed"
)

func open(t *testing.T, h *testbed.SoftHSM) *Store {
	t.Helper()
	s, err := Open(Config{Module: h.Module, TokenLabel: h.Label, PIN: secret.Secret(h.PIN)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	h := testbed.NewSoftHSM(t)
	keystoretest.Run(t, keystoretest.Harness{
		Open:       func(t *testing.T) keystore.Store { return open(t, h) },
		Algorithms: keystore.Algorithms,
	})
}

func TestWrongPIN(t *testing.T) {
	h := testbed.NewSoftHSM(t)
	_, err := Open(Config{Module: h.Module, TokenLabel: h.Label, PIN: "00000000"})
	if !errors.Is(err, keystore.ErrLocked) {
		t.Fatalf("got %v, want ErrLocked", err)
	}
	if strings.Contains(err.Error(), h.PIN) || strings.Contains(err.Error(), "00000000") {
		t.Errorf("error reveals a PIN: %v", err)
	}
	if _, err := Open(Config{Module: h.Module, TokenLabel: h.Label}); !errors.Is(err, keystore.ErrLocked) {
		t.Errorf("no PIN: got %v, want ErrLocked", err)
	}
	if _, err := Open(Config{Module: h.Module, TokenLabel: "no-such-token", PIN: secret.Secret(h.PIN)}); err == nil {
		t.Error("opening a token that does not exist succeeded")
	}
}

// TestPrivateKeysNotExtractable asks OpenSC's pkcs11-tool, an independent
// PKCS#11 client, what the token says about our keys.
func TestPrivateKeysNotExtractable(t *testing.T) {
	h := testbed.NewSoftHSM(t)
	s := open(t, h)
	ctx := context.Background()
	for _, alg := range []keystore.Algorithm{keystore.ECDSAP256, keystore.RSA2048} {
		if _, err := s.Generate(ctx, "nx-"+string(alg), alg); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	tool, err := exec.LookPath("pkcs11-tool")
	if err != nil {
		t.Fatalf("pkcs11-tool (opensc) not found: run make deps: %v", err)
	}
	base := []string{"--module", h.Module, "--token-label", h.Label, "--login", "--pin", h.PIN}
	cmd := exec.Command(tool, append(base, "--list-objects", "--type", "privkey")...)
	cmd.Env = append(cmd.Environ(), h.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool --list-objects: %v\n%s", err, out)
	}
	objects := regexp.MustCompile(`(?m)^Private Key Object`).Split(string(out), -1)[1:]
	if len(objects) != 2 {
		t.Fatalf("pkcs11-tool lists %d private keys, want 2:\n%s", len(objects), out)
	}
	for _, obj := range objects {
		access := regexp.MustCompile(`Access:\s*(.*)`).FindStringSubmatch(obj)
		if access == nil {
			t.Errorf("no Access line for object:\n%s", obj)
			continue
		}
		for _, want := range []string{"sensitive", "always sensitive", "never extractable", "local"} {
			if !strings.Contains(access[1], want) {
				t.Errorf("key access %q lacks %q", access[1], want)
			}
		}
	}

	// Asking the token for the private values must fail: the token, not
	// our code, refuses.
	s2 := open(t, h)
	defer s2.Close()
	for _, c := range []struct {
		name string
		attr crypto11.AttributeType
	}{
		{"nx-ecdsa-p256", crypto11.CkaValue},
		{"nx-rsa-2048", crypto11.CkaPrivateExponent},
	} {
		k, err := s2.Load(ctx, c.name)
		if err != nil {
			t.Fatal(err)
		}
		a, err := s2.ctx.GetAttribute(k.(*signer).k, c.attr)
		if err == nil {
			t.Errorf("%s: token returned the private value (%d bytes)", c.name, len(a.Value))
		} else if !strings.Contains(err.Error(), "CKR_ATTRIBUTE_SENSITIVE") {
			t.Errorf("%s: got %v, want CKR_ATTRIBUTE_SENSITIVE", c.name, err)
		}
	}
}
