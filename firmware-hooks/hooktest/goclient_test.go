package hooktest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-pki/outpost/internal/keystore/tpmkeys"
	"github.com/outpost-pki/outpost/testbed"
)

// TestGoClientSoftwareKey: outpost-device enrolls with a one-time secret,
// finds nothing to do, renews (same key, new serial), re-keys, and
// reports a wrong secret (4) and an unreachable server (3).
func TestGoClientSoftwareKey(t *testing.T) {
	dir := t.TempDir()
	s := deviceEnv(dir)
	var device, secret string
	s["OUTPOST_SECRET_FILE"], device, secret = secretFile(t, dir)
	out, code := runDevice(t, s)
	noSecret(t, out, secret)
	if code != 0 || !strings.Contains(out, "enrolled") {
		t.Fatalf("enroll: exit %d:\n%s", code, out)
	}
	first := checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)

	if out, code := runDevice(t, s); code != 0 || !strings.Contains(out, "nothing to do") {
		t.Fatalf("second run: exit %d, want nothing to do:\n%s", code, out)
	}
	out, code = runDevice(t, s, "--renew-percent", "100")
	if code != 0 || !strings.Contains(out, "renewed") {
		t.Fatalf("renew: exit %d:\n%s", code, out)
	}
	second := checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 || !samePub(second.PublicKey, first.PublicKey) {
		t.Errorf("renewal: want a new serial for the same key")
	}
	out, code = runDevice(t, s, "--rekey")
	if code != 0 {
		t.Fatalf("rekey: exit %d:\n%s", code, out)
	}
	third := checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
	if samePub(third.PublicKey, second.PublicKey) {
		t.Errorf("--rekey kept the key")
	}
	if got, want := listDir(t, dir), []string{"device.key", "device.pem", "secret"}; !slices.Equal(got, want) {
		t.Errorf("files: got %v, want %v", got, want)
	}
	// The sh hook takes over the same files.
	if out, code := runSh(t, s, hookPath(), "status"); code != 0 || !strings.Contains(out, "subject: "+device) {
		t.Errorf("sh hook status on the Go client's files: exit %d:\n%s", code, out)
	}

	bad := t.TempDir()
	b := deviceEnv(bad)
	dev2, _ := cred(t)
	b["OUTPOST_DEVICE_ID"] = dev2
	b["OUTPOST_SECRET_FILE"] = filepath.Join(bad, "secret")
	if err := os.WriteFile(b["OUTPOST_SECRET_FILE"], []byte("wrong-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := runDevice(t, b); code != 4 || !strings.Contains(out, "401") {
		t.Errorf("wrong secret: exit %d, want 4:\n%s", code, out)
	}
	b["OUTPOST_EST_CA"] = "/etc/ssl/certs/ca-certificates.crt"
	if out, code := runDevice(t, b); code != 3 || !strings.Contains(out, "could not be verified") {
		t.Errorf("EST server not verified by OUTPOST_EST_CA: exit %d, want 3:\n%s", code, out)
	}
	b["OUTPOST_EST_CA"] = env["OUTPOST_EST_CA"]
	b["OUTPOST_EST_URL"] = closedURL(t)
	if out, code := runDevice(t, b); code != 3 {
		t.Errorf("unreachable server: exit %d, want 3:\n%s", code, out)
	}
	if out, code := runDevice(t, b, "--renew-percent", "x"); code != 2 {
		t.Errorf("bad flag value: exit %d, want 2:\n%s", code, out)
	}
}

// TestGoClientBootstrap: the first enrollment with the bootstrap
// certificate, device id from its CN.
func TestGoClientBootstrap(t *testing.T) {
	dir := t.TempDir()
	s := deviceEnv(dir)
	s["OUTPOST_BOOTSTRAP_CERT"] = env["OUTPOST_BOOTSTRAP_CERT"]
	s["OUTPOST_BOOTSTRAP_KEY"] = env["OUTPOST_BOOTSTRAP_KEY"]
	if out, code := runDevice(t, s); code != 0 {
		t.Fatalf("enroll with the bootstrap certificate: exit %d:\n%s", code, out)
	}
	checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], "bootstrap-device-1")
}

// TestGoClientTPM: the device key lives in a TPM (swtpm): enrollment,
// renewal with the same TPM key, re-key to a new TPM key with the old one
// deleted; no private key file is ever written.
func TestGoClientTPM(t *testing.T) {
	tpm := testbed.NewSwtpm(t)
	dir := t.TempDir()
	s := deviceEnv(dir)
	var device string
	s["OUTPOST_SECRET_FILE"], device, _ = secretFile(t, dir)
	s["OUTPOST_SWTPM"] = tpm.Addr()
	tpmDir := filepath.Join(dir, "tpm")
	s["OUTPOST_TPM_DIR"] = tpmDir

	out, code := runDevice(t, s)
	if code != 0 {
		t.Fatalf("enroll with a TPM key: exit %d:\n%s", code, out)
	}
	first := readCert(t, s["OUTPOST_CERT"])
	if first.Subject.CommonName != device {
		t.Errorf("CN %q, want %q", first.Subject.CommonName, device)
	}
	if _, err := os.Stat(s["OUTPOST_KEY"]); !os.IsNotExist(err) {
		t.Errorf("a key file was written with the key in the TPM: %v", err)
	}
	tpmPublic := func() []string {
		t.Helper()
		st, err := tpmkeys.Open(tpmkeys.Config{Open: tpmkeys.DialSwtpm(tpm.Addr()), Dir: tpmDir})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		keys, err := st.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, k := range keys {
			names = append(names, k.Name)
			if !samePub(k.Public, readCert(t, s["OUTPOST_CERT"]).PublicKey) {
				t.Errorf("TPM key %s is not the certificate's key", k.Name)
			}
		}
		return names
	}
	if got := tpmPublic(); !slices.Equal(got, []string{"device-1"}) {
		t.Errorf("TPM keys after enrollment: %v, want [device-1]", got)
	}

	out, code = runDevice(t, s, "--renew-days", "3650")
	if code != 0 || !strings.Contains(out, "renewed") {
		t.Fatalf("renew with a TPM key: exit %d:\n%s", code, out)
	}
	second := readCert(t, s["OUTPOST_CERT"])
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 || !samePub(second.PublicKey, first.PublicKey) {
		t.Errorf("TPM renewal: want a new serial for the same key")
	}
	out, code = runDevice(t, s, "--rekey")
	if code != 0 {
		t.Fatalf("rekey with a TPM key: exit %d:\n%s", code, out)
	}
	third := readCert(t, s["OUTPOST_CERT"])
	if samePub(third.PublicKey, second.PublicKey) {
		t.Errorf("TPM --rekey kept the key")
	}
	if got := tpmPublic(); !slices.Equal(got, []string{"device-2"}) {
		t.Errorf("TPM keys after the re-key: %v, want [device-2] (the old key deleted)", got)
	}
}
