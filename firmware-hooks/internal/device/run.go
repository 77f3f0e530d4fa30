package device

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/outpost-pki/outpost/internal/est"
	"github.com/outpost-pki/outpost/internal/est/estclient"
	"github.com/outpost-pki/outpost/internal/fsutil"
	"github.com/outpost-pki/outpost/internal/secret"
	"github.com/outpost-pki/outpost/internal/tlspolicy"
)

// Exit codes, the same as the sh hook's (docs/FIRMWARE-HOOKS.md).
const (
	ExitOK      = 0 // enrolled, renewed, or nothing to do
	ExitConfig  = 2 // configuration or usage error
	ExitTemp    = 3 // temporary: network, server unavailable (5xx, 429), unusable answer, lock held
	ExitRefused = 4 // refused by the server (4xx)
	ExitPending = 5 // still pending (202) after the maximum wait
	ExitLocal   = 6 // local error: files, keys, TPM
)

// Error is a failed run and the exit code it maps to.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func fail(code int, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// ExitCode maps a Run error to the process exit code.
func ExitCode(err error) int {
	var e *Error
	var ce *ConfigError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &e):
		return e.Code
	case errors.As(err, &ce):
		return ExitConfig
	}
	return ExitLocal
}

// Options change what a run does.
type Options struct {
	// Force re-enrolls even when the certificate is not due.
	Force bool
	// Rekey re-enrolls with a new key.
	Rekey bool
	// Log receives progress; nil discards it.
	Log *slog.Logger
	// Now and Sleep replace the clock in tests; nil means the real one.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// Result says what a run did.
type Result struct {
	// Action is "enrolled", "renewed" or "none".
	Action string
	// Cert is the device certificate after the run.
	Cert *x509.Certificate
	// RenewAt is when the certificate is due for renewal.
	RenewAt time.Time
}

// Log keys.
const (
	logCert     = "cert"
	logSerial   = "serial"
	logNotAfter = "not_after"
	logDevice   = "device_id"
	logKey      = "key"
	logWait     = "retry_after"
	logRenewAt  = "renew_at"
)

type runner struct {
	cfg      *Config
	opts     Options
	log      *slog.Logger
	deviceID string
	secret   secret.Secret
	roots    *x509.CertPool
	keys     keyring
}

// Run enrolls when there is no certificate yet, and re-enrolls when the
// certificate is due (or opts say so). Errors are *Error or *ConfigError;
// ExitCode maps them to exit codes.
func Run(ctx context.Context, cfg *Config, opts Options) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, opts: opts, log: opts.Log}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.opts.Now == nil {
		r.opts.Now = time.Now
	}
	if r.opts.Sleep == nil {
		r.opts.Sleep = sleep
	}
	if err := r.credentials(); err != nil {
		return nil, err
	}
	caPEM, err := readCappedN(cfg.ESTCA, maxCABundleSize)
	if err != nil {
		return nil, configErr("cannot read OUTPOST_EST_CA %s: %v", cfg.ESTCA, err)
	}
	r.roots = x509.NewCertPool()
	if !r.roots.AppendCertsFromPEM(caPEM) {
		return nil, configErr("OUTPOST_EST_CA %s holds no PEM certificate", cfg.ESTCA)
	}
	for _, d := range []string{filepath.Dir(cfg.Key), filepath.Dir(cfg.Cert)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fail(ExitLocal, "creating %s: %w", d, err)
		}
	}
	lockPath := cfg.Key + ".lock"
	if cfg.UsesTPM() {
		lockPath = cfg.Cert + ".lock"
	}
	unlock, err := lock(lockPath)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if cfg.UsesTPM() {
		tk, err := openTPMKeys(cfg)
		if err != nil {
			return nil, fail(ExitLocal, "opening the TPM: %w", err)
		}
		r.keys = tk
	} else {
		r.keys = &fileKeys{key: cfg.Key, cert: cfg.Cert, alg: cfg.KeyType}
	}
	defer r.keys.Close()
	if err := r.keys.Recover(ctx); err != nil {
		return nil, fail(ExitLocal, "finishing an interrupted installation of %s: %w", cfg.Cert, err)
	}
	b, err := readCapped(cfg.Cert)
	if errors.Is(err, fs.ErrNotExist) {
		return r.enroll(ctx)
	} else if err != nil {
		return nil, fail(ExitLocal, "reading %s: %w", cfg.Cert, err)
	}
	cert, err := parseCertPEM(b)
	if err != nil {
		return nil, fail(ExitLocal, "reading %s: %w", cfg.Cert, err)
	}
	return r.renew(ctx, cert)
}

// credentials sets the device id and the one-time secret.
func (r *runner) credentials() error {
	r.deviceID = r.cfg.DeviceID
	if r.cfg.SecretFile != "" {
		b, err := readCapped(r.cfg.SecretFile)
		if err != nil {
			return configErr("cannot read OUTPOST_SECRET_FILE %s: %v", r.cfg.SecretFile, err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		line = strings.TrimRight(line, "\r")
		if user, pass, ok := strings.Cut(line, ":"); ok {
			switch {
			case r.deviceID == "":
				r.deviceID = user
			case user != r.deviceID:
				return configErr("%s is for device '%s', not '%s'", r.cfg.SecretFile, user, r.deviceID)
			}
			line = pass
		}
		if line == "" {
			return configErr("%s holds no secret", r.cfg.SecretFile)
		}
		r.secret = secret.Secret(line)
	}
	for _, path := range []string{r.cfg.BootstrapCert, r.cfg.Cert} {
		if r.deviceID != "" || path == "" {
			continue
		}
		if b, err := readCapped(path); err == nil {
			if c, err := parseCertPEM(b); err == nil {
				r.deviceID = c.Subject.CommonName
			}
		}
	}
	if r.deviceID == "" {
		return configErr("no device id: set OUTPOST_DEVICE_ID")
	}
	return ValidateDeviceID(r.deviceID)
}

// enroll is the first enrollment, with the one-time secret or the
// bootstrap certificate.
func (r *runner) enroll(ctx context.Context) (*Result, error) {
	if r.secret == "" && r.cfg.BootstrapCert == "" {
		return nil, configErr("no certificate yet and no credentials: set OUTPOST_SECRET_FILE or OUTPOST_BOOTSTRAP_CERT and OUTPOST_BOOTSTRAP_KEY")
	}
	k, err := r.keys.Current(ctx, nil, true)
	if err != nil {
		return nil, fail(ExitLocal, "the device key: %w", err)
	}
	client, err := r.client(nil)
	if err != nil {
		return nil, err
	}
	r.log.Info("enrolling", logDevice, r.deviceID, logKey, k.name)
	cert, err := r.send(ctx, client, est.OpSimpleEnroll, k)
	if err != nil {
		return nil, err
	}
	return r.install(ctx, client, k, cert, "enrolled")
}

// renew re-enrolls when the certificate is due, forced, re-keyed, or a
// request of an earlier run is pending.
func (r *runner) renew(ctx context.Context, cert *x509.Certificate) (*Result, error) {
	cur, err := r.keys.Current(ctx, cert, false)
	if err != nil {
		if errors.Is(err, errNoKey) {
			return nil, fail(ExitLocal, "%s exists but its key does not", r.cfg.Cert)
		}
		return nil, fail(ExitLocal, "the device key: %w", err)
	}
	next, err := r.keys.Next(ctx, cert, false)
	if err != nil && !errors.Is(err, errNoKey) {
		return nil, fail(ExitLocal, "the next key: %w", err)
	}
	now := r.opts.Now()
	renewAt := RenewAt(cert.NotBefore, cert.NotAfter, r.cfg.RenewPercent, r.cfg.RenewDays)
	_, pendingErr := os.Stat(cur.csrPath)
	pending := next != nil || pendingErr == nil
	if !Due(now, cert.NotBefore, cert.NotAfter, r.cfg.RenewPercent, r.cfg.RenewDays) && !r.opts.Force && !r.opts.Rekey && !pending {
		r.log.Info("nothing to do", logCert, r.cfg.Cert, logNotAfter, cert.NotAfter.UTC(), logRenewAt, renewAt.UTC())
		return &Result{Action: "none", Cert: cert, RenewAt: renewAt}, nil
	}
	k := cur
	if r.opts.Rekey || r.cfg.RekeyAlways || next != nil {
		if k, err = r.keys.Next(ctx, cert, true); err != nil {
			return nil, fail(ExitLocal, "the next key: %w", err)
		}
	}
	op := est.OpSimpleReenroll
	var client *estclient.Client
	if !now.Before(cert.NotAfter) && r.cfg.BootstrapCert != "" {
		r.log.Info("the certificate has expired: enrolling again with the bootstrap certificate", logCert, r.cfg.Cert)
		op = est.OpSimpleEnroll
		client, err = r.client(nil)
	} else {
		r.log.Info("re-enrolling", logDevice, r.deviceID, logKey, k.name, logSerial, serialOf(cert))
		client, err = r.client(&tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: cur.signer, Leaf: cert})
		if err == nil {
			// The certificate authenticates; a used secret would not.
			client.Username, client.Password = "", ""
		}
	}
	if err != nil {
		return nil, err
	}
	newCert, err := r.send(ctx, client, op, k)
	var wc *windowClosedError
	if errors.As(err, &wc) {
		r.log.Warn("the gateway does not renew yet; the certificate stays as it is: keep OUTPOST_RENEW_PERCENT and OUTPOST_RENEW_DAYS inside the gateway's re-enrollment window (DMS policy reenroll_window_days)",
			"message", wc.msg, logCert, r.cfg.Cert)
		return &Result{Action: "none", Cert: cert, RenewAt: renewAt}, nil
	}
	if err != nil {
		return nil, err
	}
	if newCert.Equal(cert) {
		// Agents before the fix of queued/online renewals keyed requests
		// by public key alone and answered a renewal for the same key
		// with the certificate issued before.
		_ = os.Remove(k.csrPath)
		return nil, fail(ExitRefused, "%s: the server answered with the current certificate again; renew with a new key (--rekey or OUTPOST_REKEY=1)", op)
	}
	return r.install(ctx, client, k, newCert, "renewed")
}

// client returns an EST client that verifies the server with
// OUTPOST_EST_CA and authenticates with tlsCert (re-enrollment) or else
// the first-enrollment credentials.
func (r *runner) client(tlsCert *tls.Certificate) (*estclient.Client, error) {
	if tlsCert == nil && r.cfg.BootstrapCert != "" {
		c, err := tls.LoadX509KeyPair(r.cfg.BootstrapCert, r.cfg.BootstrapKey)
		if err != nil {
			return nil, configErr("the bootstrap certificate and key: %v", err)
		}
		tlsCert = &c
	}
	tc := tlspolicy.Client(&tls.Config{RootCAs: r.roots})
	if tlsCert != nil {
		// Always present it: the server decides whether it is good.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return tlsCert, nil }
	}
	c := &estclient.Client{
		BaseURL:    r.cfg.ESTURL,
		HTTPClient: &http.Client{Timeout: r.cfg.Timeout, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}},
	}
	if r.secret != "" {
		c.Username, c.Password = r.deviceID, r.secret.Reveal()
	}
	return c, nil
}

// csrFor returns the CSR for k: the one kept from a pending request for
// the same key, or a new one (kept in k.csrPath until the certificate
// arrives).
func (r *runner) csrFor(k *slotKey) ([]byte, error) {
	if b, err := readCapped(k.csrPath); err == nil {
		if der, err := est.DecodeBase64(b); err == nil {
			if csr, err := x509.ParseCertificateRequest(der); err == nil && samePublic(csr.PublicKey, k.signer.Public()) && csr.Subject.CommonName == r.deviceID {
				r.log.Info("sending again the request pending since an earlier run", "file", k.csrPath)
				return der, nil
			}
		}
	}
	san, err := ParseSAN(r.cfg.SAN)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: r.deviceID},
		DNSNames:       san.DNS,
		IPAddresses:    san.IPs,
		URIs:           san.URIs,
		EmailAddresses: san.Emails,
	}, k.signer)
	if err != nil {
		return nil, fail(ExitLocal, "building the CSR with %s: %w", k.name, err)
	}
	if err := fsutil.WriteFile(k.csrPath, est.EncodeBase64(der), 0o600, true); err != nil {
		return nil, fail(ExitLocal, "writing %s: %w", k.csrPath, err)
	}
	return der, nil
}

// send sends the CSR for k to op until the server answers with a
// certificate, waiting on 202 for what Retry-After says (at least a
// second), but at most MaxWait in all.
func (r *runner) send(ctx context.Context, c *estclient.Client, op string, k *slotKey) (*x509.Certificate, error) {
	csr, err := r.csrFor(k)
	if err != nil {
		return nil, err
	}
	var waited time.Duration
	saw202 := false
	for {
		var cert *x509.Certificate
		if op == est.OpSimpleReenroll {
			cert, err = c.SimpleReenroll(ctx, csr)
		} else {
			cert, err = c.SimpleEnroll(ctx, csr)
		}
		var retry *estclient.RetryError
		var he *estclient.HTTPError
		if op == est.OpSimpleReenroll && errors.As(err, &he) && he.Status == http.StatusForbidden && strings.Contains(he.Message, "re-enrollment window") {
			_ = os.Remove(k.csrPath)
			return nil, &windowClosedError{msg: he.Message}
		}
		if !errors.As(err, &retry) {
			if err != nil {
				if !saw202 {
					// Never queued: the next run builds a new request.
					_ = os.Remove(k.csrPath)
				}
				return nil, classify(op, r.cfg.ESTURL, err)
			}
			if !samePublic(cert.PublicKey, k.signer.Public()) {
				return nil, fail(ExitTemp, "%s: the answer holds no certificate for this device's key", op)
			}
			return cert, nil
		}
		saw202 = true
		after := max(retry.After, estclient.MinRetryWait)
		if waited+after > r.cfg.MaxWait {
			return nil, fail(ExitPending, "%s: the request is still pending after %v (server: retry in %v); the next run sends it again", op, waited, after)
		}
		r.log.Info("request pending", "op", op, logWait, after, "message", retry.Message)
		if err := r.opts.Sleep(ctx, after); err != nil {
			return nil, fail(ExitPending, "%s: stopped while the request was pending: %w", op, err)
		}
		waited += after
	}
}

// windowClosedError: the gateway refused a re-enrollment because the
// certificate is not inside its re-enrollment window yet. Not an error of
// the device: the device's renewal window opens earlier than the
// gateway's, and a later run renews.
type windowClosedError struct{ msg string }

func (e *windowClosedError) Error() string {
	return "est: not inside the re-enrollment window: " + e.msg
}

// classify maps an EST client error to an exit code.
func classify(op, url string, err error) error {
	var he *estclient.HTTPError
	if errors.As(err, &he) {
		switch {
		case he.Status == http.StatusTooManyRequests || he.Status >= 500:
			return fail(ExitTemp, "%s: the server is unavailable (%d: %s); run again later", op, he.Status, he.Message)
		case he.Status >= 400:
			return fail(ExitRefused, "%s: refused by the server (%d: %s)", op, he.Status, he.Message)
		}
		return fail(ExitTemp, "%s: unexpected answer %d: %s", op, he.Status, he.Message)
	}
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	if errors.As(err, &ua) || errors.As(err, &hn) {
		return fail(ExitTemp, "%s: the EST server's certificate could not be verified with OUTPOST_EST_CA: %w", op, err)
	}
	return fail(ExitTemp, "%s: no usable answer from %s (%w); run again later", op, url, err)
}

// install installs cert for k and, if configured, the CA chain.
func (r *runner) install(ctx context.Context, c *estclient.Client, k *slotKey, cert *x509.Certificate, action string) (*Result, error) {
	if err := r.keys.Install(ctx, k, certPEM(cert)); err != nil {
		return nil, fail(ExitLocal, "installing %s: %w", r.cfg.Cert, err)
	}
	_ = os.Remove(k.csrPath)
	if r.cfg.CAChain != "" {
		if cas, err := c.CACerts(ctx); err != nil || len(cas) == 0 {
			r.log.Warn("cacerts failed; the CA chain file is not updated", "file", r.cfg.CAChain, "error", err)
		} else if err := fsutil.WriteFile(r.cfg.CAChain, certPEM(cas...), 0o644, true); err != nil {
			return nil, fail(ExitLocal, "writing %s: %w", r.cfg.CAChain, err)
		}
	}
	renewAt := RenewAt(cert.NotBefore, cert.NotAfter, r.cfg.RenewPercent, r.cfg.RenewDays)
	r.log.Info(action, logCert, r.cfg.Cert, logSerial, serialOf(cert), logNotAfter, cert.NotAfter.UTC(), logRenewAt, renewAt.UTC())
	return &Result{Action: action, Cert: cert, RenewAt: renewAt}, nil
}

func serialOf(c *x509.Certificate) string { return strings.ToUpper(c.SerialNumber.Text(16)) }

// lock takes a lock directory as the sh hook does: path holding a pid
// file with "pid boot-id". A lock from another boot (left by a power cut;
// its pid may now be another process's) or whose process is gone is taken
// over.
func lock(path string) (func(), error) {
	boot := bootID()
	for attempt := 0; attempt < 2; attempt++ {
		if err := os.Mkdir(path, 0o700); err == nil {
			_ = os.WriteFile(filepath.Join(path, "pid"), []byte(strconv.Itoa(os.Getpid())+" "+boot+"\n"), 0o600)
			return func() { _ = os.RemoveAll(path) }, nil
		} else if !errors.Is(err, fs.ErrExist) {
			return nil, fail(ExitLocal, "taking the lock %s: %w", path, err)
		}
		b, _ := os.ReadFile(filepath.Join(path, "pid"))
		f := strings.Fields(string(b))
		if len(f) == 2 && f[1] == boot {
			if pid, err := strconv.Atoi(f[0]); err == nil && pid > 0 && syscall.Kill(pid, 0) == nil {
				return nil, fail(ExitTemp, "another run (pid %d) holds %s", pid, path)
			}
		}
		// The run that held it is gone: take it over.
		_ = os.RemoveAll(path)
	}
	return nil, fail(ExitTemp, "cannot take the lock %s", path)
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	return string(bytes.TrimSpace(b))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status is what ReadStatus finds.
type Status struct {
	// Cert is the device certificate, nil before the first enrollment.
	Cert    *x509.Certificate
	RenewAt time.Time
	Due     bool
}

// ReadStatus reads the certificate and says whether it is due at now;
// it changes nothing and talks to no server.
func ReadStatus(cfg *Config, now time.Time) (*Status, error) {
	b, err := readCapped(cfg.Cert)
	if errors.Is(err, fs.ErrNotExist) {
		return &Status{}, nil
	} else if err != nil {
		return nil, fail(ExitLocal, "reading %s: %w", cfg.Cert, err)
	}
	cert, err := parseCertPEM(b)
	if err != nil {
		return nil, fail(ExitLocal, "reading %s: %w", cfg.Cert, err)
	}
	at := RenewAt(cert.NotBefore, cert.NotAfter, cfg.RenewPercent, cfg.RenewDays)
	return &Status{Cert: cert, RenewAt: at, Due: !now.Before(at)}, nil
}
