package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// SoftHSM is a SoftHSM2 token store with its own configuration file, so
// tests never touch the system's tokens. The PKCS#11 module reads the
// configuration from $SOFTHSM2_CONF when it is initialised: pass Env() to
// child processes; NewSoftHSM sets it for the test process.
type SoftHSM struct {
	// Module is the path of the PKCS#11 module (libsofthsm2.so).
	Module string
	// Label is the label of the token created at start; select the token
	// by label, never by slot number (SoftHSM2 assigns random slot ids).
	Label string
	// PIN is the user PIN of the token.
	PIN string
	// SOPIN is the security officer PIN of the token.
	SOPIN string
	// ConfPath is the softhsm2.conf to put in $SOFTHSM2_CONF.
	ConfPath string

	dir  string
	util string
}

// NewSoftHSM creates a token store with one initialised token for t, sets
// SOFTHSM2_CONF for the rest of the test (so the test may not call
// t.Parallel), and removes everything when t ends.
func NewSoftHSM(t testing.TB) *SoftHSM {
	t.Helper()
	h, err := StartSoftHSM(context.Background(), "outpost-test")
	if err != nil {
		t.Fatalf("starting softhsm: %v", err)
	}
	register(t, "softhsm", h)
	t.Setenv("SOFTHSM2_CONF", h.ConfPath)
	return h
}

// softHSMModule finds libsofthsm2.so: $OUTPOST_SOFTHSM_MODULE, then the
// Debian locations.
func softHSMModule() (string, error) {
	return lookBinary("softhsm2 PKCS#11 module", "OUTPOST_SOFTHSM_MODULE",
		"/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so")
}

// StartSoftHSM creates a new token store in a temporary directory and
// initialises a token labelled label with random PINs.
func StartSoftHSM(ctx context.Context, label string) (*SoftHSM, error) {
	module, err := softHSMModule()
	if err != nil {
		return nil, err
	}
	util, err := lookBinary("softhsm2-util", "OUTPOST_SOFTHSM_UTIL", "softhsm2-util")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "outpost-softhsm-")
	if err != nil {
		return nil, fmt.Errorf("softhsm: creating directory: %w", err)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("softhsm: writing config: %w", err)
	}
	h := &SoftHSM{Module: module, ConfPath: conf, dir: dir, util: util}
	h.Label = label
	if h.PIN, err = randomPIN(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if h.SOPIN, err = randomPIN(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := h.InitToken(ctx, label, h.PIN, h.SOPIN); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return h, nil
}

// InitToken initialises one more token in the store (in the first free
// slot) with the given label and PINs.
func (h *SoftHSM) InitToken(ctx context.Context, label, pin, soPIN string) error {
	cmd := exec.CommandContext(ctx, h.util, "--init-token", "--free",
		"--label", label, "--pin", pin, "--so-pin", soPIN)
	cmd.Env = append(os.Environ(), h.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("softhsm: initialising token %q: %w\n%s", label, err, out)
	}
	return nil
}

// Env returns the environment a process needs to see this token store.
func (h *SoftHSM) Env() []string { return []string{"SOFTHSM2_CONF=" + h.ConfPath} }

// Close removes the token store. A PKCS#11 context using it should be
// closed first.
func (h *SoftHSM) Close() error { return os.RemoveAll(h.dir) }

func (h *SoftHSM) logs() []string { return nil }

// randomPIN returns 16 random hex digits: test PINs are random so that no
// test passes by accident with a well-known PIN.
func randomPIN() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}
