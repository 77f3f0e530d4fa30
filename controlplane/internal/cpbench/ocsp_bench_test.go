package cpbench_test

// OCSP over HTTP on the data set's CA: Outpost's responder (pre-signed
// responses) next to `openssl ocsp` as a responder with an index of the
// same certificates, same requests, same run.

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/outpost-pki/outpost/controlplane/internal/ocspresponder"
)

// ocspSample is how many distinct certificates the requests cycle over.
const ocspSample = 1000

type ocspFixture struct {
	requests [][]byte
	outpost  *httptest.Server
	openssl  string // base URL
	cmd      *exec.Cmd
}

var (
	ocspOnce sync.Once
	ocspFix  *ocspFixture
	ocspErr  error
)

func ocspData(b *testing.B) *ocspFixture {
	f := pagingData(b)
	ocspOnce.Do(func() { ocspFix, ocspErr = startOCSP(f) })
	if ocspErr != nil {
		b.Fatal(ocspErr)
	}
	return ocspFix
}

func closeOCSP() {
	if ocspFix == nil {
		return
	}
	if ocspFix.outpost != nil {
		ocspFix.outpost.Close()
	}
	if ocspFix.cmd != nil && ocspFix.cmd.Process != nil {
		_ = ocspFix.cmd.Process.Kill()
		_ = ocspFix.cmd.Wait()
	}
}

func startOCSP(f *pagingFixture) (*ocspFixture, error) {
	ctx := context.Background()
	o := &ocspFixture{}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(f.caCert.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, err
	}
	h := crypto.SHA1.New()
	h.Write(f.caCert.RawSubject)
	nameHash := h.Sum(nil)
	h.Reset()
	h.Write(spki.PublicKey.RightAlign())
	keyHash := h.Sum(nil)
	rows, err := f.pool.Query(ctx, `SELECT serial FROM certificates WHERE issuer_id = $1 ORDER BY md5(serial) LIMIT $2`, f.caID, ocspSample)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		sn, _ := new(big.Int).SetString(s, 16)
		req, err := (&ocsp.Request{HashAlgorithm: crypto.SHA1, IssuerNameHash: nameHash, IssuerKeyHash: keyHash, SerialNumber: sn}).Marshal()
		if err != nil {
			return nil, err
		}
		o.requests = append(o.requests, req)
	}
	if err := rows.Err(); err != nil || len(o.requests) == 0 {
		return nil, fmt.Errorf("sampling serials: %v (%d)", err, len(o.requests))
	}

	// Outpost: the responder on a real TCP listener; every sampled
	// response is signed once up front, as the refresher keeps them.
	r := &ocspresponder.Responder{Reg: f.reg, Keys: f.keys}
	o.outpost = httptest.NewServer(r.Handler())
	warm := &http.Client{}
	for _, req := range o.requests {
		if err := post(warm, o.outpost.URL+"/ocsp", req, true); err != nil {
			return nil, err
		}
	}

	// openssl: an index.txt of every certificate of the CA.
	dir := filepath.Join(f.dir, "openssl-ocsp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := writeIndex(ctx, f, filepath.Join(dir, "index.txt")); err != nil {
		return nil, err
	}
	caFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(caFile, pemCert(f.caCert.Raw), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, f.caKeyPEM, 0o600); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	o.cmd = exec.Command("openssl", "ocsp", "-index", filepath.Join(dir, "index.txt"), "-port", fmt.Sprint(port),
		"-rsigner", caFile, "-rkey", keyFile, "-CA", caFile, "-nmin", "1440", "-ignore_err")
	o.cmd.Stdout, o.cmd.Stderr = io.Discard, io.Discard
	if err := o.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting openssl ocsp: %w", err)
	}
	o.openssl = fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if err := post(&http.Client{Timeout: 5 * time.Second}, o.openssl+"/", o.requests[0], false); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("openssl ocsp did not answer within 5 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return o, nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// writeIndex writes openssl's CA database format: V/R, expiry, revocation
// time[,reason], serial (hex, upper case), file ("unknown"), subject.
func writeIndex(ctx context.Context, f *pagingFixture, path string) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	w := bufio.NewWriterSize(out, 1<<20)
	rows, err := f.pool.Query(ctx, `SELECT serial, status, not_after, revoked_at, common_name FROM certificates WHERE issuer_id = $1`, f.caID)
	if err != nil {
		return err
	}
	defer rows.Close()
	const layout = "060102150405Z"
	for rows.Next() {
		var serial, status, cn string
		var notAfter time.Time
		var revokedAt *time.Time
		if err := rows.Scan(&serial, &status, &notAfter, &revokedAt, &cn); err != nil {
			return err
		}
		hexSerial := strings.ToUpper(serial)
		if len(hexSerial)%2 == 1 {
			hexSerial = "0" + hexSerial
		}
		if status == "revoked" && revokedAt != nil {
			fmt.Fprintf(w, "R\t%s\t%s,keyCompromise\t%s\tunknown\t/CN=%s\n", notAfter.UTC().Format(layout), revokedAt.UTC().Format(layout), hexSerial, cn)
		} else {
			fmt.Fprintf(w, "V\t%s\t\t%s\tunknown\t/CN=%s\n", notAfter.UTC().Format(layout), hexSerial, cn)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return os.WriteFile(path+".attr", []byte("unique_subject = no\n"), 0o644)
}

// post sends one OCSP request and checks the answer is a successful
// response (good or revoked).
func post(c *http.Client, url string, req []byte, keepAlive bool) error {
	r, err := http.NewRequest("POST", url, bytes.NewReader(req))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/ocsp-request")
	r.Close = !keepAlive
	resp, err := c.Do(r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || len(body) < 10 || body[0] != 0x30 {
		return fmt.Errorf("OCSP answer %d, %d bytes", resp.StatusCode, len(body))
	}
	// responseStatus successful(0) is the third byte of a short-form
	// SEQUENCE { ENUMERATED 0, ... }; long-form lengths shift it.
	if !bytes.Contains(body[:8], []byte{0x0a, 0x01, 0x00}) {
		return fmt.Errorf("OCSP error response %x", body[:min(len(body), 8)])
	}
	return nil
}

func benchOCSP(b *testing.B, url string, keepAlive bool) {
	o := ocspData(b)
	tr := &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 4}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	i := 0
	for b.Loop() {
		if err := post(c, url, o.requests[i%len(o.requests)], keepAlive); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkOutpostOCSP: pre-signed responses, over a kept-alive
// connection and over a new connection per request.
func BenchmarkOutpostOCSP(b *testing.B) {
	o := ocspData(b)
	b.Run("new_connection", func(b *testing.B) { benchOCSP(b, o.outpost.URL+"/ocsp", false) })
	b.Run("keep_alive", func(b *testing.B) { benchOCSP(b, o.outpost.URL+"/ocsp", true) })
}

// BenchmarkOpenSSLOCSP: `openssl ocsp` as a responder over the same CA and
// certificates. It signs each response on request and closes the
// connection after each one, so only the new-connection case exists.
func BenchmarkOpenSSLOCSP(b *testing.B) {
	o := ocspData(b)
	b.Run("new_connection", func(b *testing.B) { benchOCSP(b, o.openssl+"/", false) })
}
