package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/outpost-pki/outpost/internal/est/estclient"
)

// Outcomes of an enrollment besides ok, transport and timeout; an HTTP
// refusal is "http_<status>".
const (
	outcomeRetryTimeout = "still_pending_at_timeout"
	outcomeWrongKey     = "wrong_key"
	outcomeWrongSubject = "wrong_subject"
	outcomeCSR          = "csr"
)

// device is one simulated device: its id (the CSR's common name) and,
// with secret authentication, its one-time secret.
type device struct {
	id, secret string
}

// enroller enrolls devices over EST the way a device does: a new P-256
// key and CSR, then simpleenroll, honouring 202 and 429 Retry-After.
type enroller struct {
	baseURL string
	roots   *x509.CertPool
	// clientCert, if set, is presented for mutual TLS (cert
	// authentication).
	clientCert *tls.Certificate
	reuse      bool
	// timeout bounds one device's enrollment, Retry-After waits included.
	timeout time.Duration
}

// newEnroller reads the EST coordinates of env; auth "cert" also loads
// the bootstrap certificate and returns its common name, which every
// device of the run must use.
func newEnroller(env *sysEnv, auth string, reuse bool, timeout time.Duration) (*enroller, string, error) {
	keys := []string{envESTURL, envESTCA}
	if auth == "cert" {
		keys = append(keys, envBootstrapCert, envBootstrapKey)
	} else {
		keys = append(keys, envBin, envAgentConfig)
	}
	if err := env.require(keys...); err != nil {
		return nil, "", err
	}
	e := &enroller{baseURL: env.get(envESTURL), reuse: reuse, timeout: timeout}
	pemCA, err := os.ReadFile(env.get(envESTCA))
	if err != nil {
		return nil, "", fmt.Errorf("reading the EST server CA: %w", err)
	}
	e.roots = x509.NewCertPool()
	if !e.roots.AppendCertsFromPEM(pemCA) {
		return nil, "", fmt.Errorf("%s: no PEM certificates", env.get(envESTCA))
	}
	if auth != "cert" {
		return e, "", nil
	}
	kp, err := tls.LoadX509KeyPair(env.get(envBootstrapCert), env.get(envBootstrapKey))
	if err != nil {
		return nil, "", fmt.Errorf("loading the bootstrap certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		return nil, "", fmt.Errorf("parsing the bootstrap certificate: %w", err)
	}
	if leaf.Subject.CommonName == "" {
		return nil, "", errors.New("the bootstrap certificate has no common name: the agent would have no device id")
	}
	e.clientCert = &kp
	return e, leaf.Subject.CommonName, nil
}

// estWorker is one worker's client: one transport, kept alive or not.
type estWorker struct {
	c  *estclient.Client
	ra *retryAfterTransport
}

func (e *enroller) newWorker() *estWorker {
	tc := &tls.Config{RootCAs: e.roots, MinVersion: tls.VersionTLS12}
	if e.clientCert != nil {
		tc.Certificates = []tls.Certificate{*e.clientCert}
	}
	tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: !e.reuse, MaxIdleConnsPerHost: 1, TLSHandshakeTimeout: 10 * time.Second,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}
	ra := &retryAfterTransport{next: tr}
	return &estWorker{c: &estclient.Client{BaseURL: e.baseURL, HTTPClient: &http.Client{Transport: ra, Timeout: 30 * time.Second}}, ra: ra}
}

// run enrolls devs on c workers into rec, with a progress line on stderr
// every second; certs[i] is devs[i]'s certificate, nil if it failed.
func (e *enroller) run(ctx context.Context, devs []device, c int, rec *recorder, what string, stderr io.Writer) []*x509.Certificate {
	certs := make([]*x509.Certificate, len(devs))
	stop := progress(stderr, time.Second, (&rateLine{r: rec, what: what, total: len(devs)}).String)
	defer stop()
	pool(ctx, c, len(devs), time.Time{}, e.newWorker, func(ctx context.Context, w *estWorker, i int) {
		certs[i] = e.enrollOne(ctx, w, devs[i], rec)
	})
	return certs
}

// enrollOne enrolls one device and records the outcome; an enrollment cut
// short by ctx is not recorded.
func (e *enroller) enrollOne(ctx context.Context, w *estWorker, d device, rec *recorder) *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var csr []byte
	if err == nil {
		csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: d.id}}, key)
	}
	if err != nil {
		rec.record(outcomeCSR, false, 0, err)
		return nil
	}
	if d.secret != "" {
		w.c.Username, w.c.Password = d.id, d.secret
	} else {
		w.c.Username, w.c.Password = "", ""
	}
	dctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	start := time.Now()
	for {
		cert, err := w.c.SimpleEnroll(dctx, csr)
		var retry *estclient.RetryError
		var he *estclient.HTTPError
		var wait time.Duration
		switch {
		case err == nil:
			lat := time.Since(start)
			if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
				rec.record(outcomeWrongKey, false, 0, fmt.Errorf("device %s: the certificate is not for the CSR's key", d.id))
				return nil
			}
			if cert.Subject.CommonName != d.id {
				rec.record(outcomeWrongSubject, false, 0, fmt.Errorf("device %s: the certificate's common name is %q", d.id, cert.Subject.CommonName))
				return nil
			}
			rec.record(outcomeOK, true, lat, nil)
			return cert
		case errors.As(err, &retry):
			rec.retry("202")
			wait = min(max(retry.After, estclient.MinRetryWait), estclient.MaxRetryWait)
		case errors.As(err, &he) && he.Status == http.StatusTooManyRequests:
			rec.retry("429")
			wait = w.ra.lastRetryAfter(estclient.MinRetryWait)
		default:
			if ctx.Err() != nil {
				return nil
			}
			rec.record(classifyErr(err), false, 0, fmt.Errorf("device %s: %w", d.id, err))
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-dctx.Done():
			t.Stop()
			if ctx.Err() != nil {
				return nil
			}
			rec.record(outcomeRetryTimeout, false, 0, fmt.Errorf("device %s: still pending after --timeout %v: %w", d.id, e.timeout, err))
			return nil
		}
	}
}

// classifyErr names the failure reason of an error from a request:
// http_<status> for a refusal, timeout, or transport.
func classifyErr(err error) string {
	var he *estclient.HTTPError
	if errors.As(err, &he) {
		return "http_" + strconv.Itoa(he.Status)
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return outcomeTimeout
	}
	return outcomeTransport
}

// retryAfterTransport remembers the Retry-After header of the last
// answer, which estclient.HTTPError does not carry (429 answers).
type retryAfterTransport struct {
	next http.RoundTripper
	last atomic.Value // string
}

func (t *retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		t.last.Store(resp.Header.Get("Retry-After"))
	}
	return resp, err
}

// lastRetryAfter is the last answer's Retry-After as a wait, at least
// floor, at most a minute.
func (t *retryAfterTransport) lastRetryAfter(floor time.Duration) time.Duration {
	v, _ := t.last.Load().(string)
	return min(max(parseRetryAfter(v, time.Now()), floor), time.Minute)
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 if neither.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if secs, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// mintSecrets mints n one-time secrets with the agent's CLI, for devices
// loadgen-<random>-<time>-<n>.
func mintSecrets(ctx context.Context, env *sysEnv, n int) ([]device, error) {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	prefix := "loadgen-" + hex.EncodeToString(rnd[:]) + "-"
	cmd := exec.CommandContext(ctx, filepath.Join(env.get(envBin), "outpost-agent"), "secrets", "--config", env.get(envAgentConfig),
		"--count", strconv.Itoa(n), "--prefix", prefix)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("minting %d enrollment secrets (outpost-agent secrets): %w: %s", n, err, strings.TrimSpace(stderr.String()))
	}
	devs, err := parseSecrets(out)
	if err != nil {
		return nil, fmt.Errorf("reading outpost-agent secrets: %w", err)
	}
	if len(devs) != n {
		return nil, fmt.Errorf("outpost-agent secrets printed %d secrets, want %d", len(devs), n)
	}
	return devs, nil
}

// parseSecrets reads `outpost-agent secrets` output: device:secret lines.
func parseSecrets(out []byte) ([]device, error) {
	var devs []device
	for i, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		id, secret, ok := strings.Cut(line, ":")
		if !ok || id == "" || secret == "" {
			return nil, fmt.Errorf("line %d is not device:secret", i+1)
		}
		devs = append(devs, device{id: id, secret: secret})
	}
	return devs, nil
}

// prepareDevices returns the n devices of a run: minted secrets, or with
// cert authentication n devices all named cn.
func prepareDevices(ctx context.Context, env *sysEnv, auth, cn string, n int) ([]device, error) {
	if auth == "cert" {
		devs := make([]device, n)
		for i := range devs {
			devs[i] = device{id: cn}
		}
		return devs, nil
	}
	return mintSecrets(ctx, env, n)
}

// certAuthNote explains 429 retries in cert mode.
func certAuthNote(cn string) string {
	return fmt.Sprintf("with --auth cert every device is %q (the agent takes the device id from the client certificate and the CSR's common name must match it), so the agent's per-device rate limit (est.rate_per_device, default 1/s with a burst of 10) paces the run; --auth secret measures the EST server instead", cn)
}

// runEST is the est mode.
func runEST(ctx context.Context, env *sysEnv, o options, stderr io.Writer) (*Summary, error) {
	e, cn, err := newEnroller(env, o.auth, o.reuse, o.timeout)
	if err != nil {
		return nil, err
	}
	mintStart := time.Now()
	devs, err := prepareDevices(ctx, env, o.auth, cn, o.n)
	if err != nil {
		return nil, err
	}
	if o.auth == "secret" {
		fmt.Fprintf(stderr, "loadgen est: minted %d one-time secrets in %.2f s\n", o.n, time.Since(mintStart).Seconds())
	}
	rec := newRecorder(time.Now())
	e.run(ctx, devs, o.c, rec, "est", stderr)
	s := rec.summary("est", o.n, time.Now())
	s.Settings = map[string]any{"concurrency": min(o.c, o.n), "reuse": o.reuse, "auth": o.auth}
	if o.auth == "cert" {
		s.Notes = append(s.Notes, certAuthNote(cn))
	}
	return s, nil
}
