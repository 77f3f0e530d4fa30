// Package estclient is an EST (RFC 7030) client: it fetches CA
// certificates and CSR attributes, enrolls and re-enrolls CSRs, and asks for
// server-generated keys. Tests and the device client use it against the
// agent's EST server, and it follows the same interoperability rules as
// the server side in package est.
//
// A Client is configured by its fields and safe for concurrent use as long
// as they are not changed while requests run. It authenticates with the
// TLS client certificate of its HTTPClient and, if set, HTTP Basic
// credentials, which it sends with every request rather than waiting for a
// 401 challenge, saving a round trip.
package estclient

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outpost-pki/outpost/internal/est"
	"github.com/outpost-pki/outpost/internal/pkcs7"
)

// MaxResponseSize caps the response bodies the client reads. EST answers
// carry a chain, a key or a few attributes, a few kilobytes; the cap
// bounds what a hostile or broken server can make the client hold.
const MaxResponseSize = 1 << 20

// Bounds on the wait between enrollment attempts in Enroll, whatever
// Retry-After says: at least MinRetryWait so a server sending 0 (or
// nothing) does not cause a tight loop, at most MaxRetryWait so a typo on
// the server does not park a device for days.
const (
	MinRetryWait = time.Second
	MaxRetryWait = time.Hour
)

// maxMessage caps the server text kept in HTTPError and RetryError.
const maxMessage = 512

// Client talks to one EST server, or one CA label of it.
type Client struct {
	// BaseURL is https://host:port/.well-known/est, or
	// https://host:port/.well-known/est/<label> for a labelled CA. A
	// trailing slash is ignored. Only https is accepted.
	BaseURL string
	// HTTPClient does the requests, with its TLS configuration: root CAs
	// to verify the server, and a client certificate for mutual TLS.
	// Nil means http.DefaultClient.
	HTTPClient *http.Client
	// Username and Password, if either is set, are sent as HTTP Basic
	// credentials with every request.
	Username, Password string

	// now and sleep replace the clock in tests; nil means the real one.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// RetryError is a 202 Accepted answer: the server queued the request, for
// instance for manual approval, and the client should send the same
// request again after After. Enroll does so.
type RetryError struct {
	// After is the wait from Retry-After, in seconds or as an HTTP date;
	// zero if the header is missing or unreadable.
	After time.Duration
	// Message is the server's text, if any.
	Message string
}

// Error describes the pending request.
func (e *RetryError) Error() string {
	s := "est: request accepted but not yet processed, retry after " + e.After.String()
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// HTTPError is an answer with a status other than 2xx, such as 400 (bad
// CSR), 401 (credentials needed), 403 (not allowed) or 415.
type HTTPError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the server's text, trimmed and cut to 512 bytes; it may
	// be empty.
	Message string
}

// Error describes the answer.
func (e *HTTPError) Error() string {
	s := fmt.Sprintf("est: server answered %d %s", e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// CACerts fetches the CA certificates (RFC 7030, section 4.1) in the order
// the server sent them. They are not verified: the caller checks them, for
// example against a trust anchor it already has.
func (c *Client) CACerts(ctx context.Context) ([]*x509.Certificate, error) {
	resp, err := c.do(ctx, http.MethodGet, est.OpCACerts, nil)
	if err != nil {
		return nil, err
	}
	if resp.status != http.StatusOK {
		return nil, resp.unexpected(est.OpCACerts)
	}
	certs, err := decodeCerts(resp.body)
	if err != nil {
		return nil, fmt.Errorf("est: reading %s response: %w", est.OpCACerts, err)
	}
	return certs, nil
}

// CSRAttrs fetches the attributes the server wants in CSRs (RFC 7030,
// section 4.5). A server with none answers 204 or 404; both give nil and
// no error, as does an empty 200 answer.
func (c *Client) CSRAttrs(ctx context.Context) ([]est.CSRAttr, error) {
	resp, err := c.do(ctx, http.MethodGet, est.OpCSRAttrs, nil)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.status == http.StatusNoContent, resp.status == http.StatusNotFound:
		return nil, nil
	case resp.status != http.StatusOK:
		return nil, resp.unexpected(est.OpCSRAttrs)
	case len(bytes.TrimSpace(resp.body)) == 0:
		return nil, nil
	}
	der, err := decodeDER(resp.body)
	if err != nil {
		return nil, fmt.Errorf("est: reading %s response: %w", est.OpCSRAttrs, err)
	}
	attrs, err := est.ParseCSRAttrs(der)
	if err != nil {
		return nil, fmt.Errorf("est: reading %s response: %w", est.OpCSRAttrs, err)
	}
	return attrs, nil
}

// SimpleEnroll sends csrDER, a DER PKCS#10 request, for a first
// certificate (RFC 7030, section 4.2.1) and returns the certificate: the
// first non-CA certificate of the answer, or its only certificate. A 202
// answer returns a *RetryError (see Enroll), any other non-2xx answer an
// *HTTPError.
func (c *Client) SimpleEnroll(ctx context.Context, csrDER []byte) (*x509.Certificate, error) {
	return c.enroll(ctx, est.OpSimpleEnroll, csrDER)
}

// SimpleReenroll is SimpleEnroll for renewal or rekeying (RFC 7030,
// section 4.2.2). The server usually requires the HTTPClient to present
// the current certificate for mutual TLS.
func (c *Client) SimpleReenroll(ctx context.Context, csrDER []byte) (*x509.Certificate, error) {
	return c.enroll(ctx, est.OpSimpleReenroll, csrDER)
}

// Enroll calls SimpleEnroll until it answers with something other than a
// RetryError, waiting between attempts for what Retry-After says, but at
// least MinRetryWait and at most MaxRetryWait. When ctx ends first it
// returns an error wrapping both the last RetryError and ctx.Err().
func (c *Client) Enroll(ctx context.Context, csrDER []byte) (*x509.Certificate, error) {
	for {
		cert, err := c.SimpleEnroll(ctx, csrDER)
		var retry *RetryError
		if !errors.As(err, &retry) {
			return cert, err
		}
		wait := min(max(retry.After, MinRetryWait), MaxRetryWait)
		if err := c.wait(ctx, wait); err != nil {
			return nil, fmt.Errorf("est: enrollment still pending when waiting stopped: %w: %w", retry, err)
		}
	}
}

// ServerKeygen asks the server to generate a key pair and certify it
// (RFC 7030, section 4.4). csrDER is a CSR signed by any key the client
// holds, carrying the subject and names wanted; the server replaces its
// key. It returns the certificate (chosen as in SimpleEnroll) and the
// private key, which must match the certificate's public key. Keys that
// the server encrypted (application/pkcs7-mime with
// smime-type=server-generated-key) are not supported.
func (c *Client) ServerKeygen(ctx context.Context, csrDER []byte) (cert *x509.Certificate, key crypto.PrivateKey, err error) {
	if len(csrDER) == 0 {
		return nil, nil, errors.New("est: empty csr")
	}
	resp, err := c.do(ctx, http.MethodPost, est.OpServerKeygen, csrDER)
	if err != nil {
		return nil, nil, err
	}
	if resp.status != http.StatusOK {
		return nil, nil, resp.unexpected(est.OpServerKeygen)
	}
	cert, key, err = parseServerKeygen(resp.contentType, resp.body)
	if err != nil {
		return nil, nil, fmt.Errorf("est: reading %s response: %w", est.OpServerKeygen, err)
	}
	return cert, key, nil
}

// enroll runs simpleenroll or simplereenroll.
func (c *Client) enroll(ctx context.Context, op string, csrDER []byte) (*x509.Certificate, error) {
	if len(csrDER) == 0 {
		return nil, errors.New("est: empty csr")
	}
	resp, err := c.do(ctx, http.MethodPost, op, csrDER)
	if err != nil {
		return nil, err
	}
	if resp.status != http.StatusOK {
		return nil, resp.unexpected(op)
	}
	certs, err := decodeCerts(resp.body)
	if err != nil {
		return nil, fmt.Errorf("est: reading %s response: %w", op, err)
	}
	return pickLeaf(certs)
}

// pickLeaf returns the first certificate that is not a CA, or the only
// certificate.
func pickLeaf(certs []*x509.Certificate) (*x509.Certificate, error) {
	for _, cert := range certs {
		if !cert.IsCA {
			return cert, nil
		}
	}
	if len(certs) == 1 {
		return certs[0], nil
	}
	return nil, fmt.Errorf("est: none of the %d certificates in the response is an end-entity certificate", len(certs))
}

// response is a fully read answer.
type response struct {
	status      int
	contentType string
	retryAfter  time.Duration
	body        []byte
}

// unexpected returns the error for an answer of op that is not 200: a
// RetryError for 202, an HTTPError for non-2xx, and a plain error for
// other 2xx statuses.
func (r *response) unexpected(op string) error {
	msg := message(r.body)
	switch {
	case r.status == http.StatusAccepted:
		return &RetryError{After: r.retryAfter, Message: msg}
	case r.status < 200 || r.status > 299:
		return &HTTPError{Status: r.status, Message: msg}
	default:
		return fmt.Errorf("est: unexpected status %d for %s", r.status, op)
	}
}

// do sends one request for op, with body base64-encoded if not nil, and
// reads the answer.
func (c *Client) do(ctx context.Context, method, op string, body []byte) (*response, error) {
	u, err := c.url(op)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(est.EncodeBase64(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("est: building %s request: %w", op, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", est.MediaTypePKCS10)
		req.Header.Set("Content-Transfer-Encoding", "base64")
	}
	if c.Username != "" || c.Password != "" {
		req.SetBasicAuth(c.Username, c.Password)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("est: %s: %w", op, err)
	}
	defer resp.Body.Close()
	// Cap before reading: see MaxResponseSize.
	if resp.ContentLength > MaxResponseSize {
		return nil, fmt.Errorf("est: %s response of %d bytes exceeds the %d byte limit", op, resp.ContentLength, MaxResponseSize)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if err != nil {
		return nil, fmt.Errorf("est: reading %s response: %w", op, err)
	}
	if len(b) > MaxResponseSize {
		return nil, fmt.Errorf("est: %s response exceeds the %d byte limit", op, MaxResponseSize)
	}
	return &response{
		status:      resp.StatusCode,
		contentType: resp.Header.Get("Content-Type"),
		retryAfter:  c.retryAfter(resp.Header.Get("Retry-After")),
		body:        b,
	}, nil
}

// url returns the URL of op under BaseURL, checking BaseURL.
func (c *Client) url(op string) (string, error) {
	base := strings.TrimRight(c.BaseURL, "/")
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("est: invalid base url: %w", err)
	}
	switch {
	case u.Scheme != "https":
		return "", fmt.Errorf("est: base url %q must use https", c.BaseURL)
	case u.Host == "":
		return "", fmt.Errorf("est: base url %q has no host", c.BaseURL)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "", fmt.Errorf("est: base url %q must not have a query or fragment", c.BaseURL)
	}
	return base + "/" + op, nil
}

// retryAfter parses a Retry-After value, delay-seconds or an HTTP date,
// returning 0 if it is missing or unreadable.
func (c *Client) retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		// Clamp before multiplying so a huge value cannot overflow.
		return time.Duration(min(secs, uint64(MaxRetryWait/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		now := time.Now
		if c.now != nil {
			now = c.now
		}
		return min(max(t.Sub(now()), 0), MaxRetryWait)
	}
	return 0
}

// wait sleeps for d or until ctx ends.
func (c *Client) wait(ctx context.Context, d time.Duration) error {
	if c.sleep != nil {
		return c.sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// message returns a server's text answer made fit for an error: valid
// UTF-8, whitespace runs and control characters folded into single spaces,
// cut to maxMessage bytes.
func message(body []byte) string {
	s := strings.ToValidUTF8(string(body[:min(len(body), 4*maxMessage)]), "?")
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r <= ' ' || r == 0x7f
	}), " ")
	if len(s) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// decodeDER decodes a base64 body as EST servers send it, or returns it
// as it is if it is not base64 but looks like DER: some servers send
// binary despite RFC 7030.
func decodeDER(b []byte) ([]byte, error) {
	der, err := est.DecodeBase64(b)
	if err != nil {
		if len(b) > 0 && b[0] == 0x30 {
			return b, nil
		}
		return nil, err
	}
	return der, nil
}

// decodeCerts decodes a certs-only body: base64 with any line breaks, PEM,
// or binary DER.
func decodeCerts(b []byte) ([]*x509.Certificate, error) {
	certs, err := pkcs7.DecodeBase64CertsOnly(b)
	if err != nil && len(b) > 0 && b[0] == 0x30 {
		if certs, derErr := pkcs7.DecodeCertsOnly(b); derErr == nil {
			return certs, nil
		}
	}
	return certs, err
}

// parseServerKeygen reads the multipart answer of serverkeygen.
func parseServerKeygen(contentType string, body []byte) (*x509.Certificate, crypto.PrivateKey, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, nil, fmt.Errorf("content type %q: %w", contentType, err)
	}
	if !strings.HasPrefix(mt, "multipart/") || params["boundary"] == "" {
		return nil, nil, fmt.Errorf("content type %q is not multipart with a boundary", mt)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var (
		key   crypto.PrivateKey
		certs []*x509.Certificate
	)
	// Every part must be the key or the certificates, each at most once, so
	// the loop ends by the third part at the latest.
	for i := 0; ; i++ {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("part %d: %w", i, err)
		}
		// The whole body is already capped; parts cannot exceed it.
		data, err := io.ReadAll(part)
		if err != nil {
			return nil, nil, fmt.Errorf("part %d: %w", i, err)
		}
		pt, pparams, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			return nil, nil, fmt.Errorf("part %d: content type: %w", i, err)
		}
		switch {
		case pt == est.MediaTypePKCS8:
			if key != nil {
				return nil, nil, errors.New("more than one private key part")
			}
			der, err := decodeDER(data)
			if err != nil {
				return nil, nil, fmt.Errorf("private key part: %w", err)
			}
			if key, err = x509.ParsePKCS8PrivateKey(der); err != nil {
				return nil, nil, fmt.Errorf("private key part: %w", err)
			}
		case pt == "application/pkcs7-mime" && strings.EqualFold(pparams["smime-type"], "server-generated-key"):
			return nil, nil, errors.New("the server encrypted the private key, which is not supported")
		case pt == "application/pkcs7-mime":
			if certs != nil {
				return nil, nil, errors.New("more than one certificate part")
			}
			if certs, err = decodeCerts(data); err != nil {
				return nil, nil, fmt.Errorf("certificate part: %w", err)
			}
		default:
			return nil, nil, fmt.Errorf("part %d has unexpected content type %q", i, pt)
		}
	}
	switch {
	case key == nil:
		return nil, nil, errors.New("no private key part")
	case certs == nil:
		return nil, nil, errors.New("no certificate part")
	}
	cert, err := pickLeaf(certs)
	if err != nil {
		return nil, nil, err
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	signer, isSigner := key.(crypto.Signer)
	if !ok || !isSigner || !pub.Equal(signer.Public()) {
		return nil, nil, errors.New("the private key does not match the certificate")
	}
	return cert, key, nil
}
