package ctlcmd_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/ctlcmd"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// TestOutpostctlEndToEnd drives the control plane's flows through
// outpostctl against a real control plane (Postgres, key store, API).
func TestOutpostctlEndToEnd(t *testing.T) {
	e := cptest.Start(t, nil)
	dir := t.TempDir()
	env := map[string]string{"OUTPOSTCTL_CONFIG": filepath.Join(dir, "outpostctl.json")}
	run := func(wantCode int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		code := ctlcmd.Run(context.Background(), args, env, &out, &errb)
		if code != wantCode {
			t.Fatalf("outpostctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, out.String(), errb.String())
		}
		if strings.Contains(out.String()+errb.String(), e.AdminToken) {
			t.Fatalf("outpostctl %s printed the API token", strings.Join(args, " "))
		}
		return out.String()
	}
	jsonOut := func(v any, args ...string) {
		t.Helper()
		if err := json.Unmarshal([]byte(run(0, append(args, "-o", "json")...)), v); err != nil {
			t.Fatalf("outpostctl %v: %v", args, err)
		}
	}

	run(0, "login", "--url", e.URL, "--token", e.AdminToken)
	if out := run(0, "whoami"); !strings.Contains(out, "admin") {
		t.Errorf("whoami: %s", out)
	}

	var root, inter apitypes.CA
	jsonOut(&root, "ca", "create", "--name", "ctl-root", "--cn", "CTL Root")
	jsonOut(&inter, "ca", "create", "--name", "ctl-line", "--cn", "CTL Line CA", "--parent", root.ID)
	if inter.ParentID != root.ID {
		t.Fatalf("intermediate parent %s, want %s", inter.ParentID, root.ID)
	}
	if out := run(0, "ca", "list"); !strings.Contains(out, "ctl-root") || !strings.Contains(out, "ctl-line") {
		t.Errorf("ca list table lacks the new CAs:\n%s", out)
	}
	if out := run(0, "ca", "chain", inter.ID); strings.Count(out, "BEGIN CERTIFICATE") != 2 {
		t.Errorf("ca chain: %s", out)
	}

	// Device and issuance from a CSR file.
	run(0, "device", "register", "plc-7", "--label", "hall=3")
	csr, _, err := testpki.CSR("plc-7", testpki.DNSNames("plc-7.hall3.example"))
	if err != nil {
		t.Fatal(err)
	}
	csrFile := filepath.Join(dir, "plc-7.csr")
	if err := os.WriteFile(csrFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	issuedPEM := run(0, "cert", "issue", "--ca", inter.ID, "--csr", csrFile, "--device", "plc-7")
	block, _ := pem.Decode([]byte(issuedPEM))
	if block == nil {
		t.Fatalf("cert issue printed no PEM: %q", issuedPEM)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var cert apitypes.Certificate
	jsonOut(&cert, "cert", "get", leaf.SerialNumber.Text(16))
	if cert.Serial == "" || cert.DeviceID != "plc-7" || cert.CertPEM != issuedPEM {
		t.Fatalf("issued: %+v", cert)
	}
	if out := run(0, "cert", "list", "--cn", "plc-7"); !strings.Contains(out, cert.Serial) {
		t.Errorf("cert list lacks %s:\n%s", cert.Serial, out)
	}
	pemFile := filepath.Join(dir, "plc-7.pem")
	run(0, "cert", "export", cert.Serial, "--out", pemFile)
	if b, _ := os.ReadFile(pemFile); !bytes.Contains(b, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("export wrote %q", b)
	}
	var dev apitypes.Device
	jsonOut(&dev, "device", "get", "plc-7")
	if len(dev.Slots) != 1 || dev.Slots[0].ActiveSerial != cert.Serial {
		t.Errorf("device slots: %+v", dev.Slots)
	}

	// Bulk import of existing certificates from a directory, with one
	// already present and one broken file.
	imp := filepath.Join(dir, "import")
	if err := os.MkdirAll(filepath.Join(imp, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	pki := testpki.New(testpki.WithClock(time.Now))
	legacy := pki.Root("Legacy Root CTL")
	run(0, "ca", "import", "--name", "legacy-ctl", "--cert", writeFile(t, dir, "legacy.pem", legacy.CertPEM()))
	for i := 0; i < 5; i++ {
		l := legacy.Leaf("legacy-device-" + string(rune('a'+i)))
		writeFile(t, filepath.Join(imp, "sub"), "d"+string(rune('a'+i))+".pem", l.CertPEM())
	}
	writeFile(t, imp, "dup.pem", []byte(cert.CertPEM))
	writeFile(t, imp, "broken.crt", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	if cert.CertPEM == "" {
		var full apitypes.Certificate
		jsonOut(&full, "cert", "get", cert.Serial)
		writeFile(t, imp, "dup.pem", []byte(full.CertPEM))
	}
	out := run(1, "cert", "import", imp)
	if !regexp.MustCompile(`imported 5, skipped 1 already present, failed 1`).MatchString(out) {
		t.Errorf("bulk import summary: %s", out)
	}
	var page apitypes.Page[apitypes.Certificate]
	jsonOut(&page, "cert", "list", "--cn", "legacy-device-")
	if len(page.Items) != 5 {
		t.Errorf("imported certificates found: %d, want 5", len(page.Items))
	}

	// Revoke and decommission.
	var rev apitypes.Certificate
	jsonOut(&rev, "cert", "revoke", page.Items[0].Serial, "--reason", "superseded")
	if rev.Status != "revoked" {
		t.Errorf("revoke: %+v", rev)
	}
	var dec apitypes.DecommissionResponse
	jsonOut(&dec, "device", "decommission", "plc-7")
	if len(dec.RevokedSerials) != 1 || dec.RevokedSerials[0] != cert.Serial {
		t.Errorf("decommission: %+v", dec)
	}

	// DMS with a one-time token.
	out = run(0, "dms", "create", "--name", "gw-ctl", "--mode", "queued", "--ca", inter.ID)
	if !regexp.MustCompile(`obt_[A-Za-z0-9_-]{20,}`).MatchString(out) {
		t.Errorf("dms create does not show the bootstrap token:\n%s", out)
	}
	if out := run(0, "dms", "list"); !strings.Contains(out, "gw-ctl") {
		t.Errorf("dms list: %s", out)
	}

	// Tokens: a viewer cannot create CAs; a revoked token is refused.
	var tok apitypes.CreateTokenResponse
	jsonOut(&tok, "token", "create", "--principal", "auditor", "--role", "viewer")
	viewerEnv := map[string]string{"OUTPOST_API_URL": e.URL, "OUTPOST_TOKEN": tok.Token}
	var errb bytes.Buffer
	if code := ctlcmd.Run(context.Background(), []string{"ca", "create", "--name", "v", "--cn", "v"}, viewerEnv, &bytes.Buffer{}, &errb); code == 0 || !strings.Contains(errb.String(), "Forbidden") {
		t.Errorf("viewer creating a CA: exit %d, stderr %s", code, errb.String())
	}
	run(0, "token", "revoke", tok.TokenID)
	errb.Reset()
	if code := ctlcmd.Run(context.Background(), []string{"whoami"}, viewerEnv, &bytes.Buffer{}, &errb); code == 0 || !strings.Contains(errb.String(), "revoked") {
		t.Errorf("revoked token: exit %d, stderr %s", code, errb.String())
	}

	// The audit chain holds everything above.
	if out := run(0, "audit", "verify"); !strings.Contains(strings.ToLower(out), "ok") {
		t.Errorf("audit verify: %s", out)
	}
	if out := run(0, "audit", "list", "--limit", "100"); !strings.Contains(out, "certificate.import") || !strings.Contains(out, "device.decommission") {
		t.Errorf("audit list lacks entries:\n%s", out)
	}
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
