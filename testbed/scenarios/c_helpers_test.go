package scenarios

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/testbed/system"
)

// apiGet fetches path from the control plane's API with the admin token
// and returns the body; it fails t unless the answer is 200.
func apiGet(t *testing.T, s *system.System, path string) []byte {
	t.Helper()
	req, err := http.NewRequest("GET", s.API+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	return httpBody(t, req)
}

// httpGet fetches url without credentials (OCSP, CRLs); it fails t
// unless the answer is 200.
func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return httpBody(t, req)
}

func httpBody(t *testing.T, req *http.Request) []byte {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", req.URL, resp.StatusCode, b)
	}
	return b
}

// parsePEMCerts parses every CERTIFICATE block of b.
func parsePEMCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("parsing a PEM certificate: %v", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no PEM certificate")
	}
	return out
}

// writeCerts writes certs as PEM to dir/name and returns the path.
func writeCerts(t *testing.T, dir, name string, certs ...*x509.Certificate) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// caChain is a CA's chain from the API (GET /api/v1/cas/:id/chain: the CA
// first, the root last).
func caChain(t *testing.T, s *system.System, caID string) []*x509.Certificate {
	t.Helper()
	return parsePEMCerts(t, apiGet(t, s, "/api/v1/cas/"+caID+"/chain"))
}

// opensslOCSP asks the control plane's /ocsp about cert with `openssl
// ocsp` (issuer: chain[0]; the response is verified against chain, whose
// last certificate is the root) and returns openssl's output, with the
// response printed (-resp_text: OpenSSL names reason codes up to 8 only,
// so privilegeWithdrawn shows as "(UNKNOWN) (0x9)"). It fails t
// when openssl fails or cannot verify the response.
func opensslOCSP(t *testing.T, s *system.System, dir, name string, cert *x509.Certificate, chain []*x509.Certificate) string {
	t.Helper()
	certFile := writeCerts(t, dir, name+".pem", cert)
	issuerFile := writeCerts(t, dir, name+"-issuer.pem", chain[0])
	chainFile := writeCerts(t, dir, name+"-chain.pem", chain...)
	out, err := exec.Command("openssl", "ocsp", "-issuer", issuerFile, "-cert", certFile, "-url", s.API+"/ocsp",
		"-CAfile", chainFile, "-no_nonce", "-timeout", "10", "-resp_text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl ocsp for %s: %v\n%s", name, err, out)
	}
	if !strings.Contains(string(out), "Response verify OK") {
		t.Errorf("openssl ocsp for %s could not verify the response:\n%s", name, out)
	}
	return string(out)
}

// opensslSerial is how `openssl crl -text` prints a serial number.
func opensslSerial(c *x509.Certificate) string {
	return strings.ToUpper(hex.EncodeToString(c.SerialNumber.Bytes()))
}

var deltaURLRE = regexp.MustCompile(`URI:(\S+-delta\.crl)`)

// crlText fetches the CRL at url and returns `openssl crl -text` of it.
func crlText(t *testing.T, url string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "crl.der")
	if err := os.WriteFile(f, httpGet(t, url), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "crl", "-inform", "DER", "-in", f, "-noout", "-text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl crl of %s: %v\n%s", url, err, out)
	}
	return string(out)
}

// crlListing waits up to within for the CRLs of cert's issuer to list
// cert: the full CRL at cert's CRL distribution point, or the delta CRL
// that full CRL names as its freshest CRL (a revocation goes into a new
// delta at once, into the full CRL when it is next issued). It returns
// which of them list it ("full", "delta" or both), and "" after within.
func crlListing(t *testing.T, cert *x509.Certificate, within time.Duration) string {
	t.Helper()
	if len(cert.CRLDistributionPoints) == 0 {
		t.Fatalf("certificate %s (%s) names no CRL distribution point", serialOf(cert), cert.Subject)
	}
	want := "Serial Number: " + opensslSerial(cert)
	deadline := time.Now().Add(within)
	for {
		var where []string
		full := crlText(t, cert.CRLDistributionPoints[0])
		if strings.Contains(full, want) {
			where = append(where, "full")
		}
		if m := deltaURLRE.FindStringSubmatch(full); m != nil && strings.Contains(crlText(t, m[1]), want) {
			where = append(where, "delta")
		}
		if len(where) > 0 {
			return strings.Join(where, "+")
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// certsInRegistry counts the serials the registry holds.
func certsInRegistry(t *testing.T, s *system.System, serials []string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM certificates WHERE serial = ANY($1)`, serials).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// sqlExec runs a statement on the registry.
func sqlExec(t *testing.T, s *system.System, stmt string, args ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, stmt, args...); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

// edgeCAIDs lists the ids of the DMS's edge CAs in the registry.
func edgeCAIDs(t *testing.T, s *system.System) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT id::text FROM cas WHERE dms_id = $1 AND kind = 'edge' ORDER BY created_at`, s.DMSID)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// waitLogLines waits up to within for logs/<name>.log to have a line
// containing every one of subs and returns those lines (nil after
// within).
func waitLogLines(t *testing.T, s *system.System, within time.Duration, name string, subs ...string) []string {
	t.Helper()
	var lines []string
	waitFor(within, func() bool { lines = logLines(t, s, name, subs...); return len(lines) > 0 })
	return lines
}

// describe is a certificate in a test log line.
func describe(c *x509.Certificate) string {
	return fmt.Sprintf("%s (serial %s)", c.Subject.CommonName, serialOf(c))
}
