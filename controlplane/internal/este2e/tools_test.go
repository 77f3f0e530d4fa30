package este2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The independent EST client: curl for HTTP and TLS, openssl for keys,
// CSRs, base64, PKCS#7, PKCS#8 and chain verification. Both are part of
// the build environment (as for internal/est's openssl tests): a missing
// tool fails the test, it is never skipped.

// tool returns the path of a command-line tool or fails the test.
func tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required by this test and was not found in PATH: %v", name, err)
	}
	return p
}

// run runs a tool in dir and returns its standard output; it fails the
// test with the tool's output when it fails.
func run(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(tool(t, name), args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// workDir is a scratch directory for the files of one device.
type workDir struct {
	t   testing.TB
	dir string
}

func newWorkDir(t testing.TB) *workDir { return &workDir{t: t, dir: t.TempDir()} }

func (w *workDir) path(name string) string { return filepath.Join(w.dir, name) }

func (w *workDir) write(name string, b []byte) string {
	w.t.Helper()
	if err := os.WriteFile(w.path(name), b, 0o600); err != nil {
		w.t.Fatal(err)
	}
	return w.path(name)
}

func (w *workDir) read(name string) []byte {
	w.t.Helper()
	b, err := os.ReadFile(w.path(name))
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

func (w *workDir) openssl(args ...string) string {
	w.t.Helper()
	return run(w.t, w.dir, "openssl", args...)
}

// csr makes a P-256 key (name.key, PEM) and a CSR for subject (name.der,
// DER) with openssl, as a device script would, and returns the DER.
func (w *workDir) csr(name, subject string) []byte {
	w.t.Helper()
	w.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", name+".key", "-subj", subject, "-outform", "DER", "-out", name+".der")
	return w.read(name + ".der")
}

// base64 encodes file in into out with `openssl base64` (64-character
// lines ended by LF).
func (w *workDir) base64(in, out string) []byte {
	w.t.Helper()
	w.openssl("base64", "-in", in, "-out", out)
	return w.read(out)
}

// certsOnly decodes a base64 certs-only body (file in) with openssl into
// out (PEM, with openssl's subject= and issuer= lines) and returns the
// subjects in order.
func (w *workDir) certsOnly(in, out string) []string {
	w.t.Helper()
	w.openssl("base64", "-d", "-in", in, "-out", in+".der")
	w.openssl("pkcs7", "-inform", "DER", "-in", in+".der", "-print_certs", "-out", out)
	var subjects []string
	for line := range strings.Lines(string(w.read(out))) {
		if s, ok := strings.CutPrefix(line, "subject="); ok {
			subjects = append(subjects, strings.TrimSpace(s))
		}
	}
	if len(subjects) == 0 {
		w.t.Fatalf("openssl pkcs7 found no certificates in %s", in)
	}
	return subjects
}

// bootstrapCA makes a manufacturer (bootstrap) CA with openssl: name.pem
// and name.key.
func (w *workDir) bootstrapCA(name, cn string) {
	w.t.Helper()
	w.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", name+".key", "-out", name+".pem", "-subj", "/O=Outpost Test Manufacturer/CN="+cn, "-days", "30",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
}

// deviceCert makes a key (name.key) and a certificate (name.pem) for cn
// signed by CA ca (ca.pem, ca.key) with openssl.
func (w *workDir) deviceCert(name, cn, ca string) {
	w.t.Helper()
	w.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", name+".key", "-subj", "/CN="+cn, "-out", name+".csr")
	w.write(name+".ext", []byte("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"))
	var serial [16]byte
	_, _ = rand.Read(serial[:])
	serial[0] &= 0x7f
	w.openssl("x509", "-req", "-in", name+".csr", "-CA", ca+".pem", "-CAkey", ca+".key", "-set_serial", "0x"+hex.EncodeToString(serial[:]),
		"-days", "30", "-extfile", name+".ext", "-out", name+".pem")
}

// curlAnswer is what curl got: the status, the headers and body of the
// last response, and curl's verbose trace (request headers).
type curlAnswer struct {
	Status int
	Header http.Header
	Body   []byte
	Trace  string
}

func (a curlAnswer) String() string {
	return fmt.Sprintf("%d %s", a.Status, strings.TrimSpace(string(a.Body)))
}

// curl runs curl against the EST server, verifying its certificate with
// the DMS manager chain, and returns the last response. args are curl's
// options and the URL. Every answer must carry a Content-Length that
// matches its body (the server never streams).
func (v *estEnv) curl(w *workDir, args ...string) curlAnswer {
	w.t.Helper()
	trust := w.path("est-trust.pem")
	if _, err := os.Stat(trust); err != nil {
		w.write("est-trust.pem", v.trustPEM)
	}
	base := []string{"-sS", "-v", "--cacert", trust, "-D", "curl.headers", "-o", "curl.body", "-w", "%{http_code}", "--max-time", "60"}
	cmd := exec.Command(tool(w.t, "curl"), append(base, args...)...)
	cmd.Dir = w.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		w.t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	status, err := strconv.Atoi(strings.TrimSpace(stdout.String()))
	if err != nil {
		w.t.Fatalf("curl %s: status %q", strings.Join(args, " "), stdout.String())
	}
	a := curlAnswer{Status: status, Body: w.read("curl.body"), Trace: stderr.String(), Header: lastHeaders(w.t, w.read("curl.headers"))}
	if cl := a.Header.Get("Content-Length"); cl != strconv.Itoa(len(a.Body)) {
		w.t.Errorf("curl %s: Content-Length %q, body %d bytes", strings.Join(args, " "), cl, len(a.Body))
	}
	return a
}

// lastHeaders parses the headers of the last response in a curl -D dump
// (which also holds 401 challenges and 100 Continue answers before it).
func lastHeaders(t testing.TB, dump []byte) http.Header {
	t.Helper()
	i := bytes.LastIndex(dump, []byte("HTTP/"))
	if i < 0 {
		t.Fatalf("no HTTP response in curl's header dump %q", dump)
	}
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(dump[i:])))
	if _, err := r.ReadLine(); err != nil {
		t.Fatal(err)
	}
	h, err := r.ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		t.Fatalf("curl's header dump: %v\n%s", err, dump)
	}
	return http.Header(h)
}
