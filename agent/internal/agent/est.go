package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/internal/csrcheck"
	"github.com/outpost-pki/outpost/internal/est"
	"github.com/outpost-pki/outpost/internal/ratelimit"
	"github.com/outpost-pki/outpost/internal/tlspolicy"
)

// The EST server (RFC 7030) devices enroll with. Errors are 400, 401,
// 403, 404, 405, 413, 415, 429, 501 or 503 with a one-line text body that
// names the problem; a queued request is 202 with Retry-After. While the
// control plane has disabled the DMS, every enrollment is 403
// DisabledMessage.

var allIPs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

const estRealm = "outpost-est"

// estServer is the EST endpoint of a running agent.
type estServer struct {
	a        *Agent
	byAddr   *ratelimit.Limiter
	byDevice *ratelimit.Limiter
	http     *http.Client // webhook calls
	tlsCache atomic.Pointer[clientCAs]
	stats    estStats
}

// clientCAs is the acceptable-CA list of the TLS handshake for one policy
// and edge CA.
type clientCAs struct {
	policy *policyState
	edge   *slotCert
	pool   *x509.CertPool
}

func newESTServer(a *Agent) (*estServer, error) {
	c := a.cfg.EST
	tc := &tls.Config{}
	if c.WebhookCAFile != "" {
		b, err := os.ReadFile(c.WebhookCAFile)
		if err != nil {
			return nil, fmt.Errorf("est.webhook_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, errors.New("est.webhook_ca_file: no PEM certificates")
		}
		tc.RootCAs = pool
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: tlspolicy.HTTPTransport(tc)}
	return &estServer{a: a,
		byAddr:   ratelimit.New(*c.RatePerAddress, c.BurstPerAddress, 100_000),
		byDevice: ratelimit.New(*c.RatePerDevice, c.BurstPerDevice, 100_000),
		http:     hc,
	}, nil
}

// tlsConfig asks for (does not require) client certificates and lists the
// bootstrap CAs, the authorized CAs and the edge CA as acceptable, so that
// clients that send only a certificate whose issuer is listed send it.
// Verification happens per request, against the pool that applies.
func (s *estServer) tlsConfig() *tls.Config {
	base := tlspolicy.Server(&tls.Config{
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c := s.a.server.current()
			if c == nil {
				return nil, errors.New("no EST server certificate yet")
			}
			return &tls.Certificate{Certificate: c.derChain(), PrivateKey: c.Key, Leaf: c.Cert}, nil
		},
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384},
	})
	return tlspolicy.Server(&tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cfg := base.Clone()
			cfg.ClientCAs = s.acceptableCAs()
			return cfg, nil
		},
	})
}

func (s *estServer) acceptableCAs() *x509.CertPool {
	ps, edge := s.a.state.policy.Load(), s.a.edge.current()
	if c := s.tlsCache.Load(); c != nil && c.policy == ps && c.edge == edge {
		return c.pool
	}
	pool := x509.NewCertPool()
	if ps != nil {
		for _, der := range ps.Policy.GetBootstrapCaDers() {
			if c, err := x509.ParseCertificate(der); err == nil {
				pool.AddCert(c)
			}
		}
		for _, b := range ps.Bundles {
			for _, c := range b {
				pool.AddCert(c)
			}
		}
	}
	if edge != nil {
		pool.AddCert(edge.Cert)
	}
	s.tlsCache.Store(&clientCAs{policy: ps, edge: edge, pool: pool})
	return pool
}

// estStats counts answers per operation and status, for /metrics.
type estStats struct {
	mu sync.Mutex
	n  map[[2]string]int64
}

func (st *estStats) add(op string, code int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.n == nil {
		st.n = map[[2]string]int64{}
	}
	st.n[[2]string{op, fmt.Sprint(code)}]++
}

func (st *estStats) write(w io.Writer) {
	st.mu.Lock()
	defer st.mu.Unlock()
	keys := make([][2]string, 0, len(st.n))
	for k := range st.n {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return strings.Compare(a[0]+a[1], b[0]+b[1]) })
	fmt.Fprintf(w, "# HELP outpost_agent_est_requests_total EST requests by operation and HTTP status.\n# TYPE outpost_agent_est_requests_total counter\n")
	for _, k := range keys {
		fmt.Fprintf(w, "outpost_agent_est_requests_total{op=%q,code=%q} %d\n", k[0], k[1], st.n[k])
	}
}

// statusRecorder remembers the status written.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *estServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	label, op, ok := est.ParsePath(r.URL.Path)
	defer func() {
		if v := recover(); v != nil {
			s.a.log.Error("panic in the EST handler", "op", op, "panic", v)
			est.WriteError(rec, http.StatusServiceUnavailable, "the gateway hit an internal error; retry later")
		}
		s.stats.add(op, rec.code)
	}()
	if !ok {
		op = "unknown"
		est.WriteError(rec, http.StatusNotFound, "not an EST operation: use /.well-known/est/[label/]{cacerts,csrattrs,simpleenroll,simplereenroll,serverkeygen}")
		return
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if ok, after := s.byAddr.Allow(host); !ok {
		tooMany(rec, after, "too many requests from this address")
		return
	}
	if s.a.disabled() && op != "cacerts" && op != "csrattrs" {
		// Before any credential is looked at: a one-time secret stays
		// unused.
		est.WriteError(rec, http.StatusForbidden, DisabledMessage)
		return
	}
	ps := s.a.state.policy.Load()
	if ps == nil {
		est.WriteError(rec, http.StatusServiceUnavailable, "this gateway has no policy from the control plane yet; retry later")
		return
	}
	caID, profile, ok := ps.caFor(label)
	if !ok {
		est.WriteError(rec, http.StatusNotFound, fmt.Sprintf("unknown EST label %q", label))
		return
	}
	wantMethod := http.MethodPost
	if op == "cacerts" || op == "csrattrs" {
		wantMethod = http.MethodGet
	}
	if r.Method != wantMethod {
		rec.Header().Set("Allow", wantMethod)
		est.WriteError(rec, http.StatusMethodNotAllowed, op+" takes "+wantMethod)
		return
	}
	switch op {
	case "cacerts":
		s.cacerts(rec, ps, caID)
	case "csrattrs":
		der, err := est.EncodeCSRAttrs(est.DefaultCSRAttrs())
		if err != nil {
			est.WriteError(rec, http.StatusServiceUnavailable, "csrattrs unavailable")
			return
		}
		_ = est.WriteCSRAttrs(rec, der)
	default:
		s.enroll(rec, r, ps, op, label, caID, profile)
	}
}

func tooMany(w http.ResponseWriter, after time.Duration, msg string) {
	w.Header().Set("Retry-After", fmt.Sprint(max(1, int(after.Seconds()+0.999))))
	est.WriteError(w, http.StatusTooManyRequests, msg)
}

// cacerts serves the CA certificates devices of this label get their
// certificates from: in local mode the edge CA and its chain, otherwise
// the label's CA and its chain.
func (s *estServer) cacerts(w http.ResponseWriter, ps *policyState, caID string) {
	var ders [][]byte
	if edge := s.a.edge.current(); ps.Policy.GetMode() == "local" && edge != nil {
		ders = edge.derChain()
	} else {
		for _, c := range ps.Bundles[caID] {
			ders = append(ders, c.Raw)
		}
	}
	if len(ders) == 0 {
		est.WriteError(w, http.StatusServiceUnavailable, "this gateway has not received its CA certificates yet; retry later")
		return
	}
	_ = est.WriteCerts(w, ders...)
}

// enroll handles simpleenroll, simplereenroll and serverkeygen.
func (s *estServer) enroll(w http.ResponseWriter, r *http.Request, ps *policyState, op, label, caID, profile string) {
	der, err := est.ReadCSR(r, est.MaxRequestBody)
	if err != nil {
		writeESTError(w, err)
		return
	}
	csr, err := csrcheck.Parse(der, csrcheck.DefaultPolicy())
	if err != nil {
		var ce *csrcheck.Error
		msg := "the CSR could not be read"
		if errors.As(err, &ce) {
			msg = "bad CSR: " + ce.Public()
		}
		est.WriteError(w, http.StatusBadRequest, msg)
		return
	}
	req := enrollRequest{Label: label, CAID: caID, Profile: profile, CSR: csr}
	var release func()
	if op == "simplereenroll" {
		if e := s.authReenroll(r, ps, &req); e != nil {
			writeESTError(w, e)
			return
		}
	} else {
		rel, e := s.authEnroll(r, ps, &req)
		if e != nil {
			writeESTError(w, e)
			return
		}
		release = rel
	}
	if ok, after := s.byDevice.Allow(req.DeviceID); !ok {
		if release != nil {
			release()
		}
		tooMany(w, after, "too many requests for this device")
		return
	}
	var keyDER []byte
	if op == "serverkeygen" {
		req.LocalOnly = true
		k, newCSR, err := serverKeygenCSR(csr)
		if err != nil {
			est.WriteError(w, http.StatusBadRequest, "serverkeygen: "+err.Error())
			return
		}
		req.CSR, keyDER = newCSR, k
	}
	out := s.a.enroll(r.Context(), ps, req)
	switch {
	case out.Err != nil:
		if release != nil && (out.Err.Status >= 500 || out.Retryable) {
			release() // not the device's fault: let it retry with the same secret
		}
		writeESTError(w, out.Err)
	case out.Later:
		est.WriteRetryLater(w, int(time.Duration(s.a.cfg.EST.RetryAfter).Seconds()), "request accepted; retry the same request later")
	case keyDER != nil:
		_ = est.WriteServerKeygen(w, keyDER, out.Cert)
	default:
		_ = est.WriteCerts(w, out.Cert)
	}
}

func writeESTError(w http.ResponseWriter, err error) {
	var e *est.Error
	if errors.As(err, &e) {
		if e.Status == http.StatusUnauthorized {
			est.WriteUnauthorized(w, estRealm, e.Message)
			return
		}
		est.WriteError(w, e.Status, e.Message)
		return
	}
	est.WriteError(w, http.StatusBadRequest, err.Error())
}

func estErr(status int, format string, args ...any) *est.Error {
	return &est.Error{Status: status, Message: fmt.Sprintf(format, args...)}
}

// authEnroll authenticates a first enrollment per the policy's device
// authentication and sets req.DeviceID. release, if not nil, gives back a
// one-time secret when the enrollment fails for a reason that is not the
// device's.
func (s *estServer) authEnroll(r *http.Request, ps *policyState, req *enrollRequest) (release func(), _ *est.Error) {
	var peer *x509.Certificate
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		peer = r.TLS.PeerCertificates[0]
	}
	auth := ps.deviceAuthFor(req.Label)
	if auth == "client_cert_or_secret" {
		// A manufacturer certificate if the device presents one, else a
		// one-time secret.
		auth = "basic_secret"
		if peer != nil {
			auth = "client_cert"
		}
	}
	switch auth {
	case "client_cert":
		if peer == nil {
			return nil, estErr(http.StatusUnauthorized, "a client certificate from a trusted bootstrap CA is required")
		}
		roots := x509.NewCertPool()
		for _, der := range ps.Policy.GetBootstrapCaDers() {
			if c, err := x509.ParseCertificate(der); err == nil {
				roots.AddCert(c)
			}
		}
		if _, err := peer.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates(r), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, estErr(http.StatusForbidden, "the client certificate is not from a trusted bootstrap CA")
		}
		req.DeviceID = peer.Subject.CommonName
	case "basic_secret":
		user, pass, ok := r.BasicAuth()
		if !ok {
			return nil, estErr(http.StatusUnauthorized, "enrollment credentials required (HTTP Basic: device id and one-time secret)")
		}
		// The request id is fixed now: serverkeygen replaces req.CSR with
		// the CSR of the key it makes, and release must give back what
		// this consumed.
		rid := requestID(req.CSR)
		if err := s.a.store.ConsumeSecret(user, pass, req.Label, rid); err != nil {
			switch {
			case errors.Is(err, store.ErrSecretUnknown):
				return nil, estErr(http.StatusUnauthorized, "unknown device %q", user)
			case errors.Is(err, store.ErrSecretWrong), errors.Is(err, store.ErrSecretUsed), errors.Is(err, store.ErrSecretExpired), errors.Is(err, store.ErrSecretLabel):
				return nil, estErr(http.StatusUnauthorized, "%s", err.Error())
			}
			s.a.log.Error("checking an enrollment secret", "err", err)
			return nil, estErr(http.StatusServiceUnavailable, "the gateway could not check the secret; retry later")
		}
		req.DeviceID = user
		release = func() {
			if err := s.a.store.ReleaseSecret(user, rid); err != nil {
				s.a.log.Error("releasing an enrollment secret", "err", err)
			}
		}
	case "webhook":
		if peer != nil {
			req.DeviceID = peer.Subject.CommonName
		} else if user, _, ok := r.BasicAuth(); ok {
			req.DeviceID = user
		}
		if req.DeviceID == "" {
			return nil, estErr(http.StatusUnauthorized, "a client certificate or HTTP Basic credentials are required")
		}
		if e := s.askWebhook(r, ps, req, peer); e != nil {
			return nil, e
		}
	default:
		return nil, estErr(http.StatusForbidden, "device authentication %q is not supported by this agent", auth)
	}
	if req.DeviceID == "" {
		return release, estErr(http.StatusForbidden, "no device id: the credential names no device")
	}
	if cn := req.CSR.Subject.CommonName; cn != "" && cn != req.DeviceID {
		if release != nil {
			release()
		}
		return nil, estErr(http.StatusForbidden, "the CSR's common name %q is not the authenticated device %q", cn, req.DeviceID)
	}
	return release, nil
}

func intermediates(r *http.Request) *x509.CertPool {
	p := x509.NewCertPool()
	if r.TLS != nil {
		for _, c := range r.TLS.PeerCertificates[1:] {
			p.AddCert(c)
		}
	}
	return p
}

// authReenroll authenticates a re-enrollment (RFC 7030 4.2.2): the device
// presents its current certificate, which must chain to an authorized CA
// or the edge CA, be unexpired, not revoked as far as the cached CRLs and
// revocations say (failing closed in local mode when they are stale), be
// inside the re-enrollment window, and have exactly the CSR's subject and
// subjectAltNames.
func (s *estServer) authReenroll(r *http.Request, ps *policyState, req *enrollRequest) *est.Error {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return estErr(http.StatusUnauthorized, "re-enrollment needs the current certificate as TLS client certificate")
	}
	cur := r.TLS.PeerCertificates[0]
	now := time.Now()
	roots := x509.NewCertPool()
	issuers := map[string]string{} // issuing CA raw subject+key -> CA id
	for id, b := range ps.Bundles {
		for _, c := range b {
			roots.AddCert(c)
		}
		if len(b) > 0 {
			issuers[string(b[0].Raw)] = id
		}
	}
	edge := s.a.edge.current()
	if edge != nil {
		roots.AddCert(edge.Cert)
	}
	chains, err := cur.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates(r), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return estErr(http.StatusForbidden, "the client certificate was not issued by a CA of this gateway, or has expired")
	}
	issuer := chains[0][1]
	serial := strings.ToLower(cur.SerialNumber.Text(16))
	caID, fromEdge := "", edge != nil && bytes.Equal(issuer.Raw, edge.Cert.Raw)
	if fromEdge {
		caID = edge.edgeCAID()
	} else {
		caID = issuers[string(issuer.Raw)]
	}
	if caID == "" {
		return estErr(http.StatusForbidden, "the client certificate was not issued by an authorized CA of this DMS")
	}
	if revoked, err := s.a.store.IsRevoked(caID, serial); err != nil {
		return estErr(http.StatusServiceUnavailable, "the gateway could not check revocation; retry later")
	} else if revoked {
		return estErr(http.StatusForbidden, "the current certificate is revoked")
	}
	if !fromEdge {
		crl := s.a.state.crls.get(caID)
		fresh := crl != nil && now.Before(crl.NextUpdate.Add(time.Duration(*s.a.cfg.EST.CRLGrace)))
		if fresh {
			for _, e := range crl.RevokedCertificateEntries {
				if e.SerialNumber.Cmp(cur.SerialNumber) == 0 {
					return estErr(http.StatusForbidden, "the current certificate is revoked")
				}
			}
		} else if ps.Policy.GetMode() == "local" {
			return estErr(http.StatusForbidden, "the revocation status of the current certificate is unknown (no fresh CRL of its CA on this gateway); retry when the gateway is back online")
		}
	}
	if w := time.Duration(ps.Policy.GetReenrollWindowSeconds()) * time.Second; w > 0 && now.Before(cur.NotAfter.Add(-w)) {
		return estErr(http.StatusForbidden, "not inside the re-enrollment window: it opens at %s", cur.NotAfter.Add(-w).UTC().Format(time.RFC3339))
	}
	if !sameName(req.CSR.RawSubject, cur.RawSubject) {
		return estErr(http.StatusBadRequest, "the CSR's subject must be identical to the certificate being renewed (RFC 7030 4.2.2)")
	}
	if !sameSANs(req.CSR, cur) {
		return estErr(http.StatusBadRequest, "the CSR's subjectAltNames must be identical to the certificate being renewed (RFC 7030 4.2.2)")
	}
	req.DeviceID = cur.Subject.CommonName
	req.ReenrollSerial = serial
	if req.DeviceID == "" {
		return estErr(http.StatusForbidden, "the current certificate names no device")
	}
	return nil
}

// sameName reports whether two DER distinguished names are the same
// name: the same attributes in the same order with the same values,
// whatever string type encodes each value (RFC 5280, section 7.1). The
// issuer re-encodes the CSR's subject (Go writes PrintableString where it
// can), while openssl writes UTF8String: a byte comparison would refuse a
// device that builds its re-enrollment CSR from its certificate's subject
// text (openssl req -subj), as device scripts do.
func sameName(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var na, nb pkix.RDNSequence
	if rest, err := asn1.Unmarshal(a, &na); err != nil || len(rest) != 0 {
		return false
	}
	if rest, err := asn1.Unmarshal(b, &nb); err != nil || len(rest) != 0 {
		return false
	}
	if len(na) != len(nb) {
		return false
	}
	for i := range na {
		if len(na[i]) != len(nb[i]) {
			return false
		}
		for j := range na[i] {
			x, y := na[i][j], nb[i][j]
			xs, ok1 := x.Value.(string)
			ys, ok2 := y.Value.(string)
			if !x.Type.Equal(y.Type) || !ok1 || !ok2 || xs != ys {
				return false
			}
		}
	}
	return true
}

func sameSANs(csr *x509.CertificateRequest, c *x509.Certificate) bool {
	norm := func(dns, email []string, ips []net.IP, uris int, uriStr func(int) string) []string {
		var out []string
		out = append(out, dns...)
		out = append(out, email...)
		for _, ip := range ips {
			out = append(out, ip.String())
		}
		for i := 0; i < uris; i++ {
			out = append(out, uriStr(i))
		}
		slices.Sort(out)
		return out
	}
	a := norm(csr.DNSNames, csr.EmailAddresses, csr.IPAddresses, len(csr.URIs), func(i int) string { return csr.URIs[i].String() })
	b := norm(c.DNSNames, c.EmailAddresses, c.IPAddresses, len(c.URIs), func(i int) string { return c.URIs[i].String() })
	return slices.Equal(a, b)
}

// askWebhook asks the policy's webhook whether the device may enroll.
func (s *estServer) askWebhook(r *http.Request, ps *policyState, req *enrollRequest, peer *x509.Certificate) *est.Error {
	u := ps.Policy.GetWebhookUrl()
	if u == "" {
		return estErr(http.StatusForbidden, "the policy's webhook is not configured")
	}
	body := map[string]string{"device_id": req.DeviceID, "label": req.Label, "csr": base64.StdEncoding.EncodeToString(req.CSR.Raw), "remote_addr": r.RemoteAddr}
	if peer != nil {
		body["client_certificate"] = base64.StdEncoding.EncodeToString(peer.Raw)
	}
	if _, pass, ok := r.BasicAuth(); ok {
		body["password"] = pass // the decision service checks it
	}
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	hr.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(hr)
	if err != nil {
		s.a.log.Warn("enrollment webhook unreachable", "err", err)
		return estErr(http.StatusServiceUnavailable, "the enrollment decision service is unreachable; retry later")
	}
	defer resp.Body.Close()
	var ans struct {
		Allow  bool   `json:"allow"`
		Reason string `json:"reason"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<10)).Decode(&ans); err != nil {
		// Fail closed: a decision that does not decode is a refusal, even
		// when the fields read before the error said allow.
		ans.Allow = false
	}
	if resp.StatusCode != http.StatusOK || !ans.Allow {
		msg := "the enrollment decision service refused the device"
		if ans.Reason != "" {
			msg += ": " + ans.Reason
		}
		return estErr(http.StatusForbidden, "%s", msg)
	}
	return nil
}

// serverKeygenCSR makes the key for serverkeygen (RFC 7030 4.4) and a CSR
// for it with the device's CSR's subject and names. It returns the key as
// PKCS#8 DER.
func serverKeygenCSR(csr *x509.CertificateRequest) ([]byte, *x509.CertificateRequest, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), randReader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.CertificateRequest{Subject: csr.Subject, DNSNames: csr.DNSNames, EmailAddresses: csr.EmailAddresses, IPAddresses: csr.IPAddresses, URIs: csr.URIs}
	tmpl.Subject.ExtraNames = nil
	der, err := x509.CreateCertificateRequest(randReader, tmpl, key)
	if err != nil {
		return nil, nil, err
	}
	out, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, nil, err
	}
	k8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return k8, out, nil
}

// serveEST runs the EST server once its certificate is there, until ctx
// ends.
func (s *estServer) run(ctx context.Context) {
	logged := false
	for s.a.server.current() == nil {
		if !logged {
			s.a.log.Info("EST server waiting for its certificate from the control plane", "listen", s.a.cfg.EST.Listen)
			logged = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	ln, err := net.Listen("tcp", s.a.cfg.EST.Listen)
	if err != nil {
		s.a.log.Error("EST listener", "listen", s.a.cfg.EST.Listen, "err", err)
		return
	}
	srv := &http.Server{
		Handler:           s,
		TLSConfig:         s.tlsConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      90 * time.Second, // online mode waits up to a minute
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          nil,
	}
	s.a.estAddr.Store(ln.Addr().String())
	s.a.log.Info("EST server listening", "addr", ln.Addr().String())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.a.log.Error("EST server", "err", err)
	}
}
