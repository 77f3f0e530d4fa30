package est

import (
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenSSLReadsOutput proves that an independent parser reads what the
// encoders write: "openssl asn1parse" the csrattrs DER and
// "openssl pkcs7 -print_certs" the certs-only DER. OpenSSL is part of the
// build environment, so its absence fails the test rather than skipping it.
func TestOpenSSLReadsOutput(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required for this test and was not found in PATH: %v", err)
	}
	dir := t.TempDir()
	run := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := exec.Command(openssl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	t.Run("csrattrs", func(t *testing.T) {
		der, err := EncodeCSRAttrs(DefaultCSRAttrs())
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "csrattrs.der")
		if err := os.WriteFile(file, der, 0o600); err != nil {
			t.Fatal(err)
		}
		out := run(t, "asn1parse", "-inform", "DER", "-in", file)
		for _, want := range []string{"challengePassword", "id-ecPublicKey", "prime256v1", "ecdsa-with-SHA256", "SET"} {
			if !strings.Contains(out, want) {
				t.Errorf("openssl asn1parse output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("certs-only", func(t *testing.T) {
		certs, _ := testChain(t)
		file := filepath.Join(dir, "certs.p7")
		rec := httptest.NewRecorder()
		if err := WriteCerts(rec, raws(certs)...); err != nil {
			t.Fatal(err)
		}
		der, err := DecodeBase64(rec.Body.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, der, 0o600); err != nil {
			t.Fatal(err)
		}
		out := run(t, "pkcs7", "-inform", "DER", "-in", file, "-print_certs", "-noout")
		var subjects []string
		for line := range strings.Lines(out) {
			if s, ok := strings.CutPrefix(line, "subject="); ok {
				subjects = append(subjects, strings.TrimSpace(s))
			}
		}
		want := []string{"CN = device-1.outpost.test", "CN = Outpost EST Test Issuing CA", "CN = Outpost EST Test Root"}
		if strings.Join(subjects, "|") != strings.Join(want, "|") {
			t.Errorf("got subjects %q, want %q\n%s", subjects, want, out)
		}
	})
}
