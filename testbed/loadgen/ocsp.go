package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSP outcomes: the certificate statuses (ok), the responder's error
// statuses, and what went wrong otherwise.
const (
	outcomeGood         = "good"
	outcomeRevoked      = "revoked"
	outcomeUnknown      = "unknown"
	outcomeUnauthorized = "unauthorized"
	outcomeMalformed    = "malformed_request"
	outcomeInternal     = "internal_error"
	outcomeTryLater     = "try_later"
	outcomeSigRequired  = "sig_required"
	outcomeBadSignature = "bad_signature"
	outcomeBadResponse  = "bad_response"
	outcomeHTTP5xx      = "http_5xx"
)

// maxOCSPResponse caps the answers read: a response with a responder
// certificate is a couple of kilobytes.
const maxOCSPResponse = 64 << 10

// ocspTarget is one certificate to ask about, with its request.
type ocspTarget struct {
	cert, issuer *x509.Certificate
	req          []byte
}

// classifyOCSP names the outcome of an HTTP 200 answer about t and
// whether it carries a certificate status.
func classifyOCSP(body []byte, t ocspTarget) (string, bool, error) {
	resp, err := ocsp.ParseResponseForCert(body, t.cert, t.issuer)
	if err != nil {
		var re ocsp.ResponseError
		if errors.As(err, &re) {
			switch re.Status {
			case ocsp.Unauthorized:
				return outcomeUnauthorized, false, err
			case ocsp.Malformed:
				return outcomeMalformed, false, err
			case ocsp.InternalError:
				return outcomeInternal, false, err
			case ocsp.TryLater:
				return outcomeTryLater, false, err
			case ocsp.SignatureRequired:
				return outcomeSigRequired, false, err
			}
			return outcomeBadResponse, false, err
		}
		if strings.Contains(err.Error(), "signature") {
			return outcomeBadSignature, false, err
		}
		return outcomeBadResponse, false, err
	}
	if resp.SerialNumber == nil || resp.SerialNumber.Cmp(t.cert.SerialNumber) != 0 {
		return outcomeBadResponse, false, fmt.Errorf("the response is about serial %v, not %v", resp.SerialNumber, t.cert.SerialNumber)
	}
	switch resp.Status {
	case ocsp.Good:
		return outcomeGood, true, nil
	case ocsp.Revoked:
		return outcomeRevoked, true, nil
	case ocsp.Unknown:
		return outcomeUnknown, true, nil
	}
	return outcomeBadResponse, false, fmt.Errorf("certificate status %d", resp.Status)
}

// findIssuer returns the certificate of cas that issued cert.
func findIssuer(cert *x509.Certificate, cas []*x509.Certificate) *x509.Certificate {
	for _, ca := range cas {
		if bytes.Equal(ca.RawSubject, cert.RawIssuer) && cert.CheckSignatureFrom(ca) == nil {
			return ca
		}
	}
	return nil
}

// ocspTargets enrolls certs devices and builds an OCSP request for each
// certificate, with its issuer from the EST server's CA certificates.
func ocspTargets(ctx context.Context, env *sysEnv, o options, stderr io.Writer) ([]ocspTarget, error) {
	e, _, err := newEnroller(env, "secret", true, o.timeout)
	if err != nil {
		return nil, err
	}
	devs, err := mintSecrets(ctx, env, o.certs)
	if err != nil {
		return nil, err
	}
	rec := newRecorder(time.Now())
	certs := e.run(ctx, devs, min(o.c, 16), rec, "ocsp (enrolling the certificates to ask about)", stderr)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if rec.ok.Load() == 0 {
		s := rec.summary("est", o.certs, time.Now())
		return nil, fmt.Errorf("none of the %d certificates to ask about could be enrolled: %v", o.certs, s.Errors)
	}
	// The edge CA signs at once but the control plane, which answers
	// OCSP, learns of the certificates through the sync: wait until the
	// agent's queue is empty, or the answers would be "unknown".
	if u := env.get(envAgentAdminURL); u != "" {
		agent := &statusClient{url: u, hc: &http.Client{Timeout: 10 * time.Second}}
		if _, err := agent.waitStatus(ctx, time.Minute, func(st agentStatus) bool { return st.Online && st.QueueDepth == 0 }); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			fmt.Fprintf(stderr, "loadgen ocsp: the agent's queue did not empty (%v): some certificates may be unknown to the responder\n", err)
		}
	}
	w := e.newWorker()
	cas, err := w.c.CACerts(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetching the EST CA certificates (the issuers): %w", err)
	}
	hash := crypto.SHA1
	if o.hash == "sha256" {
		hash = crypto.SHA256
	}
	var targets []ocspTarget
	for _, c := range certs {
		if c == nil {
			continue
		}
		iss := findIssuer(c, cas)
		if iss == nil {
			return nil, fmt.Errorf("no issuer of %q (issuer %q) among the EST CA certificates", c.Subject.CommonName, c.Issuer.CommonName)
		}
		req, err := ocsp.CreateRequest(c, iss, &ocsp.RequestOptions{Hash: hash})
		if err != nil {
			return nil, fmt.Errorf("building an OCSP request: %w", err)
		}
		targets = append(targets, ocspTarget{cert: c, issuer: iss, req: req})
	}
	fmt.Fprintf(stderr, "loadgen ocsp: %d certificates enrolled (%d failed) from %q\n", len(targets), rec.failed.Load(), targets[0].issuer.Subject.CommonName)
	return targets, nil
}

// runOCSP is the ocsp mode.
func runOCSP(ctx context.Context, env *sysEnv, o options, stderr io.Writer) (*Summary, error) {
	if err := env.require(envOCSPURL); err != nil {
		return nil, err
	}
	url := env.get(envOCSPURL)
	targets, err := ocspTargets(ctx, env, o, stderr)
	if err != nil {
		return nil, err
	}
	newWorker := func() *http.Client {
		tr := &http.Transport{DisableKeepAlives: !o.reuse, MaxIdleConnsPerHost: 1, DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
		return &http.Client{Transport: tr, Timeout: o.timeout}
	}
	rec := newRecorder(time.Now())
	var stopAt time.Time
	if o.duration > 0 {
		stopAt = rec.start.Add(o.duration)
	}
	stop := progress(stderr, time.Second, (&rateLine{r: rec, what: "ocsp", total: o.n}).String)
	pool(ctx, o.c, o.n, stopAt, newWorker, func(ctx context.Context, hc *http.Client, i int) {
		t := targets[i%len(targets)]
		queryOCSP(ctx, hc, url, t, rec)
	})
	stop()
	s := rec.summary("ocsp", o.n, time.Now())
	workers := o.c
	if o.n > 0 {
		workers = min(o.c, o.n)
	}
	s.Settings = map[string]any{"concurrency": workers, "reuse": o.reuse, "certs": len(targets), "hash": o.hash}
	if o.duration > 0 {
		s.Settings["duration"] = o.duration.String()
	}
	if s.Outcomes[outcomeUnknown] > 0 {
		s.Notes = append(s.Notes, "unknown: the responder has no record of these serials (certificates not yet synced to the registry)")
	}
	if s.Outcomes[outcomeUnauthorized] > 0 {
		s.Notes = append(s.Notes, "unauthorized: the responder does not answer for the certificates' issuer, the gateway's edge CA (expected until the control plane runs delegated OCSP responders for edge CAs)")
	}
	return s, nil
}

// queryOCSP sends one request and records its outcome; latency is kept
// for every HTTP answer.
func queryOCSP(ctx context.Context, hc *http.Client, url string, t ocspTarget, rec *recorder) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(t.req))
	if err != nil {
		rec.record(outcomeTransport, false, 0, err)
		return
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		rec.record(classifyErr(err), false, 0, err)
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPResponse))
	resp.Body.Close()
	lat := time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		rec.record(classifyErr(err), false, 0, err)
		return
	}
	switch {
	case resp.StatusCode >= 500:
		rec.record(outcomeHTTP5xx, false, lat, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body[:min(len(body), 200)]))))
		return
	case resp.StatusCode != http.StatusOK:
		rec.record(fmt.Sprintf("http_%d", resp.StatusCode), false, lat, fmt.Errorf("%s", resp.Status))
		return
	}
	outcome, ok, err := classifyOCSP(body, t)
	rec.record(outcome, ok, lat, err)
}
