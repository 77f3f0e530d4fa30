package badinput

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/testbed/system"
)

// estCase is one malformed EST request and the answer it must get: a
// 4xx status with a one-line text body holding keyword.
type estCase struct {
	name   string
	method string // default POST
	path   string // after https://host:port
	ctype  string // Content-Type; "" none
	header map[string]string
	body   []byte
	// chunked sends the body without Content-Length.
	chunked bool
	// basic sets HTTP Basic credentials.
	basic *system.Cred
	// cert is sent as TLS client certificate whatever CAs the server
	// lists as acceptable.
	cert *tls.Certificate
	want int
	// keyword must appear in the body (case-insensitive).
	keyword string
}

func b64(der []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(der)) }

// newCSR makes a P-256 CSR for cn.
func newCSR(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// selfSigned makes a self-signed client certificate for cn (a device
// certificate from nobody the gateway trusts).
func selfSigned(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// estCases are the malformed EST requests. creds are unused one-time
// secrets: spare is sent with requests that must fail before any
// credential is looked at (it must still work afterwards), wrong and
// mismatch get a wrong secret and a CSR naming another device; used is
// a device enrolled before the suite.
func estCases(t *testing.T, b *bed, spare, wrong, mismatch system.Cred, used *enrolledDevice) []estCase {
	const p = "/.well-known/est/"
	good := b64(newCSR(t, spare.Device))
	csrDER := newCSR(t, spare.Device)
	badSig := bytes.Clone(csrDER)
	badSig[len(badSig)-1] ^= 0x55
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: spare.Device}}, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	pemCSR := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})
	big := bytes.Repeat([]byte("A"), 65<<10+4) // valid base64 alphabet, over 64 KiB
	foreign := selfSigned(t, spare.Device)
	usedCert := tls.Certificate{Certificate: [][]byte{used.Cert.Raw}, PrivateKey: used.Key}
	boot, err := tls.LoadX509KeyPair(b.s.Path("bootstrap-device.pem"), b.s.Path("bootstrap-device.key"))
	if err != nil {
		t.Fatal(err)
	}
	wrongCred := system.Cred{Device: wrong.Device, Secret: "wrong-" + strings.Repeat("9Qz", 6)}
	b.secret("wrong EST secret", wrongCred.Secret)
	reusedCred := system.Cred{Device: used.ID, Secret: b.secrets["EST secret "+used.ID]}
	pk := "application/pkcs10"
	return []estCase{
		{name: "unknown operation", method: "GET", path: p + "certs", want: 404, keyword: "not an EST operation"},
		{name: "path outside the EST prefix", method: "GET", path: "/est/cacerts", want: 404, keyword: "not an EST operation"},
		{name: "operation in the wrong case", method: "POST", path: p + "SimpleEnroll", ctype: pk, body: good, want: 404, keyword: "not an EST operation"},
		{name: "label with a space", method: "GET", path: p + "bad%20label/cacerts", want: 404, keyword: "not an EST operation"},
		{name: "label of 65 characters", method: "GET", path: p + strings.Repeat("l", 65) + "/cacerts", want: 404, keyword: "not an EST operation"},
		{name: "label dot-dot", method: "GET", path: p + "../cacerts", want: 404, keyword: "not an EST operation"},
		{name: "two labels", method: "GET", path: p + "a/b/cacerts", want: 404, keyword: "not an EST operation"},
		{name: "unknown label", method: "GET", path: p + "no-such-label/cacerts", want: 404, keyword: "unknown EST label"},
		{name: "GET simpleenroll", method: "GET", path: p + "simpleenroll", want: 405, keyword: "takes POST"},
		{name: "POST cacerts", method: "POST", path: p + "cacerts", ctype: pk, body: good, want: 405, keyword: "takes GET"},
		{name: "PUT simplereenroll", method: "PUT", path: p + "simplereenroll", ctype: pk, body: good, want: 405, keyword: "takes POST"},
		{name: "DELETE csrattrs", method: "DELETE", path: p + "csrattrs", want: 405, keyword: "takes GET"},
		{name: "content type text/plain", path: p + "simpleenroll", ctype: "text/plain", body: good, basic: &spare, want: 415, keyword: "application/pkcs10"},
		{name: "content type application/json", path: p + "simpleenroll", ctype: "application/json", body: []byte(`{"csr":"x"}`), basic: &spare, want: 415, keyword: "application/pkcs10"},
		{name: "unparsable content type", path: p + "simpleenroll", ctype: ";;;", body: good, basic: &spare, want: 415, keyword: "application/pkcs10"},
		{name: "empty body", path: p + "simpleenroll", ctype: pk, body: nil, basic: &spare, want: 400, keyword: "empty request body"},
		{name: "whitespace body", path: p + "simpleenroll", ctype: pk, body: []byte(" \r\n\t\r\n"), basic: &spare, want: 400, keyword: "empty request body"},
		{name: "bad base64", path: p + "simpleenroll", ctype: pk, body: []byte("!!!not*base64!!!"), basic: &spare, want: 400, keyword: "not a base64 csr"},
		{name: "base64 of garbage", path: p + "simpleenroll", ctype: pk, body: b64([]byte("this is no DER at all")), basic: &spare, want: 400, keyword: "not a der-encoded csr"},
		{name: "truncated DER CSR in base64", path: p + "simpleenroll", ctype: pk, body: b64(csrDER[:len(csrDER)/2]), basic: &spare, want: 400, keyword: "not a der-encoded csr"},
		{name: "raw DER garbage", path: p + "simpleenroll", ctype: pk, body: []byte{0x30, 0x82, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x00, 0xff}, basic: &spare, want: 400, keyword: "not a base64 csr"},
		{name: "DER SEQUENCE that is no CSR", path: p + "simpleenroll", ctype: pk, body: b64([]byte{0x30, 0x03, 0x02, 0x01, 0x05}), basic: &spare, want: 400, keyword: "bad CSR"},
		{name: "PEM with garbage inside", path: p + "simpleenroll", ctype: pk, body: []byte("-----BEGIN CERTIFICATE REQUEST-----\n!!garbage!!\n-----END CERTIFICATE REQUEST-----\n"), basic: &spare, want: 400, keyword: "invalid pem armour"},
		{name: "PEM of the wrong type", path: p + "simpleenroll", ctype: pk, body: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: csrDER}), basic: &spare, want: 400, keyword: "pem block type"},
		{name: "PEM with headers", path: p + "simpleenroll", ctype: pk, body: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: csrDER}), basic: &spare, want: 400, keyword: "pem headers"},
		{name: "PEM followed by data", path: p + "simpleenroll", ctype: pk, body: append(bytes.Clone(pemCSR), "trailing"...), basic: &spare, want: 400, keyword: "data after the pem block"},
		{name: "CSR with a bad signature", path: p + "simpleenroll", ctype: pk, body: b64(badSig), basic: &spare, want: 400, keyword: "signature"},
		{name: "CSR with an RSA-1024 key", path: p + "simpleenroll", ctype: pk, body: b64(weak), basic: &spare, want: 400, keyword: "bad CSR"},
		{name: "body over 64 KiB", path: p + "simpleenroll", ctype: pk, body: big, basic: &spare, want: 413, keyword: "too large"},
		{name: "chunked body over 64 KiB", path: p + "simpleenroll", ctype: pk, body: big, chunked: true, basic: &spare, want: 413, keyword: "too large"},
		{name: "Content-Transfer-Encoding binary with base64 garbage", path: p + "simpleenroll", ctype: pk, header: map[string]string{"Content-Transfer-Encoding": "binary"}, body: []byte("%%%%"), basic: &spare, want: 400, keyword: "not a base64 csr"},
		{name: "Content-Transfer-Encoding quoted-printable garbage", path: p + "simpleenroll", ctype: pk, header: map[string]string{"Content-Transfer-Encoding": "quoted-printable"}, body: []byte("=3D=3D=3D"), basic: &spare, want: 400, keyword: "not a base64 csr"},
		{name: "no credentials", path: p + "simpleenroll", ctype: pk, body: good, want: 401, keyword: "credentials required"},
		{name: "Basic header not base64", path: p + "simpleenroll", ctype: pk, body: good, header: map[string]string{"Authorization": "Basic %%%%"}, want: 401, keyword: "credentials required"},
		{name: "Basic credentials without a colon", path: p + "simpleenroll", ctype: pk, body: good, header: map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(spare.Device+spare.Secret))}, want: 401, keyword: "credentials required"},
		{name: "Bearer instead of Basic", path: p + "simpleenroll", ctype: pk, body: good, header: map[string]string{"Authorization": "Bearer " + spare.Secret}, want: 401, keyword: "credentials required"},
		{name: "Basic user with a NUL byte", path: p + "simpleenroll", ctype: pk, body: b64(newCSR(t, "dev-ice")), header: map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("dev\x00ice:whatever"))}, want: 401, keyword: "unknown device"},
		{name: "unknown device", path: p + "simpleenroll", ctype: pk, body: b64(newCSR(t, "nobody-42")), basic: &system.Cred{Device: "nobody-42", Secret: "guess-guess-guess"}, want: 401, keyword: "unknown device"},
		{name: "wrong secret", path: p + "simpleenroll", ctype: pk, body: b64(newCSR(t, wrong.Device)), basic: &wrongCred, want: 401, keyword: "wrong enrollment secret"},
		{name: "secret reused with another key", path: p + "simpleenroll", ctype: pk, body: b64(newCSR(t, used.ID)), basic: &reusedCred, want: 401, keyword: "already used"},
		{name: "CSR common name of another device", path: p + "simpleenroll", ctype: pk, body: b64(newCSR(t, "someone-else")), basic: &mismatch, want: 403, keyword: "common name"},
		{name: "client certificate from an unknown CA", path: p + "simpleenroll", ctype: pk, body: good, cert: &foreign, want: 403, keyword: "not from a trusted bootstrap CA"},
		{name: "serverkeygen without credentials", path: p + "serverkeygen", ctype: pk, body: good, want: 401, keyword: "credentials required"},
		{name: "simplereenroll without a client certificate", path: p + "simplereenroll", ctype: pk, body: good, want: 401, keyword: "current certificate"},
		{name: "simplereenroll with a bootstrap certificate", path: p + "simplereenroll", ctype: pk, body: b64(newCSR(t, "bootstrap-device-1")), cert: &boot, want: 403, keyword: "not issued by a CA of this gateway"},
		{name: "simplereenroll with another subject", path: p + "simplereenroll", ctype: pk, body: b64(newCSR(t, used.ID+"-renamed")), cert: &usedCert, want: 400, keyword: "subject must be identical"},
		{name: "simplereenroll with a self-signed certificate", path: p + "simplereenroll", ctype: pk, body: good, cert: &foreign, want: 403, keyword: "not issued by a CA of this gateway"},
	}
}

// runESTCase sends c and checks the answer.
func runESTCase(t *testing.T, b *bed, c estCase) {
	t.Helper()
	origin := strings.TrimSuffix(b.s.ESTURL, "/.well-known/est")
	cfg := b.estTLS()
	if c.cert != nil {
		cert := *c.cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	// Keep-alive, as devices do: a request that says Connection: close
	// gets its answer and the close before the server reads the rest of
	// its body (Go's net/http), which a client still writing a large
	// body may see as a broken pipe instead of the 413.
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Timeout: 20 * time.Second, Transport: tr}
	method := c.method
	if method == "" {
		method = "POST"
	}
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
		if c.chunked {
			body = io.MultiReader(body) // hides the length: chunked
		}
	}
	req, err := http.NewRequest(method, origin+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.chunked {
		req.ContentLength = -1
	}
	if c.ctype != "" {
		req.Header.Set("Content-Type", c.ctype)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	if c.basic != nil {
		req.SetBasicAuth(c.basic.Device, c.basic.Secret)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, c.path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	checkText(t, resp, raw, c.want, c.keyword)
}

// checkText checks a 4xx answer with a one-line text body naming the
// problem.
func checkText(t *testing.T, resp *http.Response, raw []byte, want int, keyword string) {
	t.Helper()
	text := strings.TrimRight(string(raw), "\r\n")
	if resp.StatusCode != want {
		t.Fatalf("got %d %q, want %d with %q", resp.StatusCode, text, want, keyword)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("got Content-Type %q, want text/plain", resp.Header.Get("Content-Type"))
	}
	if text == "" || strings.Contains(text, "\n") {
		t.Errorf("got body %q, want one line", text)
	}
	if !strings.Contains(strings.ToLower(text), strings.ToLower(keyword)) {
		t.Errorf("got body %q, want it to name the problem (%q)", text, keyword)
	}
	if want == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("a 401 without a Basic challenge: WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
	}
}

// estRawCases are inputs below HTTP: plain HTTP on the TLS port and a
// header block over the 16 KiB limit.
func estRawCases(t *testing.T, b *bed) {
	origin := strings.TrimSuffix(b.s.ESTURL, "/.well-known/est")
	t.Run("plain HTTP on the TLS port", func(t *testing.T) {
		b.count("est")
		resp, err := http.Get(strings.Replace(origin, "https://", "http://", 1) + "/.well-known/est/cacerts")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 400 || !strings.Contains(string(raw), "HTTPS") {
			t.Fatalf("got %d %q, want 400 naming HTTPS", resp.StatusCode, raw)
		}
	})
	t.Run("header block over 16 KiB", func(t *testing.T) {
		b.count("est")
		hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: b.estTLS()}}
		req, _ := http.NewRequest("GET", origin+"/.well-known/est/cacerts", nil)
		req.Header.Set("X-Padding", strings.Repeat("p", 32<<10))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("got %d %q, want 431", resp.StatusCode, raw)
		}
	})
}

// slowloris opens a TLS connection to the EST server and sends a request
// header one byte every 300 ms, never finishing it. The server must cut
// the connection (ReadHeaderTimeout, 10 s) without answering 2xx. It
// returns at once; wait for the result on the channel.
func slowloris(b *bed) <-chan error {
	out := make(chan error, 1)
	go func() {
		out <- func() error {
			addr := strings.TrimPrefix(strings.TrimSuffix(b.s.ESTURL, "/.well-known/est"), "https://")
			conn, err := tls.Dial("tcp", addr, b.estTLS())
			if err != nil {
				return err
			}
			defer conn.Close()
			start := time.Now()
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				head := "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: " + addr + "\r\nX-Slow: " + strings.Repeat("s", 1000)
				for i := 0; i < len(head); i++ {
					select {
					case <-stop:
						return
					case <-time.After(300 * time.Millisecond):
					}
					if _, err := conn.Write([]byte{head[i]}); err != nil {
						return
					}
				}
			}()
			_ = conn.SetReadDeadline(time.Now().Add(40 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			took := time.Since(start)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode < 400 {
					return errors.New("the server answered " + resp.Status + " to an unfinished header")
				}
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return errors.New("the server kept a trickling header connection open for 40 s")
			}
			if took > 20*time.Second {
				return errors.New("the server cut the trickling connection only after " + took.String())
			}
			return nil
		}()
	}()
	return out
}

// estCasesRun runs every EST case.
func estCasesRun(t *testing.T, b *bed, spare, wrong, mismatch system.Cred, used *enrolledDevice) {
	for _, c := range estCases(t, b, spare, wrong, mismatch, used) {
		t.Run(c.name, func(t *testing.T) {
			b.count("est")
			runESTCase(t, b, c)
		})
	}
	estRawCases(t, b)
}
