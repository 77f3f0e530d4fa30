// Package apiclient is the Go client of the control plane's REST API
// (/api/v1), whose JSON shapes live in apitypes. outpostctl is built on it;
// so can be any other Go program that manages an Outpost control plane.
//
// Every method takes a context first and returns the decoded response.
// A response outside 2xx becomes an [*Error] carrying the RFC 9457 problem
// the server sent; check for it with errors.As or [StatusCode]. A Client
// is safe for concurrent use.
package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/buildinfo"
	"github.com/outpost-pki/outpost/internal/tlspolicy"
)

// MaxResponseSize caps the body of a successful response. The largest
// legitimate one is a page of 500 certificates with their PEMs (about
// 2 MiB) or a device with a long certificate history; 32 MiB is far above
// that, yet stops a misbehaving server, or a proxy answering with
// something else entirely, from making the client read without end.
const MaxResponseSize = 32 << 20

// maxProblemSize caps the body of an error response: a problem document
// is a few hundred bytes, and an HTML error page from a proxy is only
// worth a snippet.
const maxProblemSize = 64 << 10

// maxCAFileSize caps the CA bundle read by [WithCACertFile]: a bundle of a
// few hundred certificates fits, a wrong path to a large file is refused.
const maxCAFileSize = 1 << 20

// DefaultPageSize is the page size the All* walkers ask for unless
// [WithPageSize] says otherwise: the API's maximum, for the fewest round
// trips.
const DefaultPageSize = 500

// DefaultTimeout bounds one request (connection, headers and body) of a
// Client built without [WithHTTPClient].
const DefaultTimeout = 60 * time.Second

// ErrResponseTooLarge is returned when a response body exceeds
// [MaxResponseSize].
var ErrResponseTooLarge = errors.New("apiclient: response body too large")

// Client talks to one control plane with one API token.
type Client struct {
	base      string // scheme://host[:port][/prefix], no trailing slash
	token     string
	hc        *http.Client
	userAgent string
	pageSize  int
}

type config struct {
	hc        *http.Client
	caFile    string
	userAgent string
	pageSize  int
}

// Option configures a Client.
type Option func(*config)

// WithHTTPClient makes the Client send its requests with hc instead of a
// client of its own (whose timeout is [DefaultTimeout]).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *config) { c.hc = hc }
}

// WithCACertFile trusts the PEM certificates in path, and only those, for
// the server's TLS certificate: for a control plane under a private CA.
// Combined with [WithHTTPClient], that client's transport must be an
// *http.Transport (or nil); a copy of it is changed, not the original.
func WithCACertFile(path string) Option {
	return func(c *config) { c.caFile = path }
}

// WithUserAgent sets the User-Agent header, e.g. "outpostctl/v1.2.3".
// The default is "outpost-apiclient/<version>".
func WithUserAgent(ua string) Option {
	return func(c *config) { c.userAgent = ua }
}

// WithPageSize sets the page size (1-500) the All* walkers ask for.
// Values out of range leave the default, [DefaultPageSize].
func WithPageSize(n int) Option {
	return func(c *config) {
		if n >= 1 && n <= 500 {
			c.pageSize = n
		}
	}
}

// New returns a Client for the control plane at baseURL, e.g.
// https://cp.example:8443 (a path prefix is kept for a control plane
// behind a reverse proxy; a trailing /api/v1 is tolerated). token is the
// API bearer token; it may be empty for [Client.BootstrapDMS], the only
// route that does not need one.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	base, err := normalizeBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if strings.ContainsFunc(token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		// Never echo the token: it is a secret.
		return nil, errors.New("apiclient: token contains whitespace or control characters")
	}
	cfg := config{
		userAgent: "outpost-apiclient/" + buildinfo.Version,
		pageSize:  DefaultPageSize,
	}
	for _, o := range opts {
		o(&cfg)
	}
	hc, err := httpClient(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{base: base, token: token, hc: hc, userAgent: cfg.userAgent, pageSize: cfg.pageSize}, nil
}

// BaseURL returns the normalized base URL the Client talks to.
func (c *Client) BaseURL() string { return c.base }

func normalizeBaseURL(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("apiclient: empty base URL")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("apiclient: base URL: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", fmt.Errorf("apiclient: base URL %q: scheme must be https or http", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("apiclient: base URL %q has no host", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("apiclient: base URL %q must not carry user info, a query or a fragment", u.Redacted())
	}
	p := strings.TrimRight(u.EscapedPath(), "/")
	p = strings.TrimSuffix(p, "/api/v1")
	return u.Scheme + "://" + u.Host + p, nil
}

func httpClient(cfg config) (*http.Client, error) {
	if cfg.caFile == "" {
		if cfg.hc != nil {
			return cfg.hc, nil
		}
		return &http.Client{Timeout: DefaultTimeout}, nil
	}
	pool, err := loadCAFile(cfg.caFile)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: DefaultTimeout}
	if cfg.hc != nil {
		cp := *cfg.hc
		hc = &cp
	}
	var tr *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("apiclient: WithCACertFile needs an *http.Transport, the HTTP client has a %T", t)
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = tlspolicy.Client(&tls.Config{})
	}
	tr.TLSClientConfig.RootCAs = pool
	hc.Transport = tr
	return hc, nil
}

func loadCAFile(path string) (*x509.CertPool, error) {
	data, err := readCapped(path, maxCAFileSize)
	if err != nil {
		return nil, fmt.Errorf("apiclient: reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("apiclient: CA file %s: %w", path, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("apiclient: CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// readCapped reads a whole file of at most max bytes.
func readCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return data, nil
}

// request describes one API call.
type request struct {
	method string
	path   string     // already escaped, starting with /api/v1/
	query  url.Values // may be nil
	body   any        // JSON-encoded when non-nil
	accept string     // default JSON
	noAuth bool       // do not send the bearer token
}

// endpoint joins /api/v1 and the path segments, each escaped with
// url.PathEscape. Segments that are empty or dot segments are refused: a
// client must never let an ID like ".." turn into a different route.
func endpoint(segments ...string) (string, error) {
	var b strings.Builder
	b.WriteString("/api/v1")
	for _, s := range segments {
		if s == "" || s == "." || s == ".." {
			return "", fmt.Errorf("apiclient: invalid path parameter %q", s)
		}
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String(), nil
}

// do sends r and returns the body of a 2xx response. Other statuses come
// back as *Error.
func (c *Client) do(ctx context.Context, r request) ([]byte, error) {
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("apiclient: encoding %s %s request: %w", r.method, r.path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("apiclient: %w", err)
	}
	accept := r.accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept+", application/problem+json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" && !r.noAuth {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err // *url.Error names the method and URL
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, problemError(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if err != nil {
		return nil, fmt.Errorf("apiclient: reading %s %s response: %w", r.method, r.path, err)
	}
	if len(data) > MaxResponseSize {
		return nil, fmt.Errorf("%w: %s %s sent more than %d bytes", ErrResponseTooLarge, r.method, r.path, MaxResponseSize)
	}
	return data, nil
}

// doJSON sends r and decodes a 2xx JSON response into out (unless nil).
func (c *Client) doJSON(ctx context.Context, r request, out any) error {
	data, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("apiclient: decoding %s %s response: %w", r.method, r.path, err)
	}
	return nil
}

// problemError turns a non-2xx response into an *Error, decoding a
// problem document when there is one and keeping a short, printable
// snippet of anything else.
func problemError(resp *http.Response) error {
	e := &Error{Status: resp.StatusCode}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblemSize))
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" || mt == "application/json" {
		var p apitypes.Problem
		if json.Unmarshal(data, &p) == nil {
			e.Problem = p
		}
	}
	if e.Problem.Title == "" && e.Problem.Detail == "" {
		e.Problem.Detail = snippet(data)
	}
	if e.Problem.Status == 0 {
		e.Problem.Status = resp.StatusCode
	}
	if e.Problem.Title == "" {
		e.Problem.Title = http.StatusText(resp.StatusCode)
	}
	if e.Problem.Title == "" {
		e.Problem.Title = "HTTP " + strconv.Itoa(resp.StatusCode)
	}
	return e
}

// snippet returns the start of a non-problem error body on one line,
// without control characters, or "" for an HTML page.
func snippet(data []byte) string {
	s := strings.TrimSpace(string(data))
	if strings.HasPrefix(s, "<") {
		return ""
	}
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	const max = 200
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "..."
	}
	return s
}

// pageQuery returns the ?cursor= and ?limit= parameters added to q.
func pageQuery(q url.Values, cursor string, limit int) url.Values {
	if q == nil {
		q = url.Values{}
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return q
}

// walk fetches successive pages from first to last and calls fn for each
// item, stopping at the first error fn returns. A server that hands back
// a cursor it already gave is an error rather than an endless loop.
func walk[T any](ctx context.Context, fetch func(cursor string) (apitypes.Page[T], error), fn func(T) error) error {
	seen := map[string]bool{}
	cursor := ""
	for {
		page, err := fetch(cursor)
		if err != nil {
			return err
		}
		for _, it := range page.Items {
			if err := fn(it); err != nil {
				return err
			}
		}
		if page.NextCursor == "" {
			return nil
		}
		if seen[page.NextCursor] {
			return fmt.Errorf("apiclient: server repeated cursor %q; stopping", page.NextCursor)
		}
		seen[page.NextCursor] = true
		cursor = page.NextCursor
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
