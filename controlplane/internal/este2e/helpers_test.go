package este2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/crl"
	"github.com/outpost-pki/outpost/internal/est/estclient"
)

// agentBin is outpost-agent, built once for the package.
var agentBin string

func TestMain(m *testing.M) { cptest.Main(m, map[string]*string{cptest.AgentPkg: &agentBin}) }

// estEnv is a control plane with its broker, a devices CA authorized for
// one DMS, and the DMS's agent serving EST.
type estEnv struct {
	t      testing.TB
	e      *cptest.Env
	agent  *cptest.Agent
	caID   string
	estURL string // https://127.0.0.1:port/.well-known/est
	// adminURL is the agent's admin server (http://127.0.0.1:port).
	adminURL string
	// trust verifies the EST server certificate (the DMS manager CA and
	// the root).
	trust    *x509.CertPool
	trustPEM []byte
}

type agentStatus struct {
	Online         bool      `json:"online"`
	Mode           string    `json:"mode"`
	ESTAddr        string    `json:"est_addr"`
	EdgeCANotAfter time.Time `json:"edge_ca_not_after"`
	QueueDepth     int       `json:"queue_depth"`
	LocalIssued    int64     `json:"local_issued_since_sync"`
}

// status is the running agent's status from its admin server.
func (v *estEnv) status() agentStatus {
	v.t.Helper()
	s, err := v.tryStatus()
	if err != nil {
		v.t.Fatalf("agent status: %v\n%s", err, v.agent.Tail())
	}
	return s
}

// tryStatus asks the admin server for the status. It reads /status
// directly rather than running `outpost-agent status`: the command fails
// while the agent holds its store but does not listen yet (at start).
func (v *estEnv) tryStatus() (agentStatus, error) {
	var s agentStatus
	resp, err := adminClient.Get(v.adminURL + "/status")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /status: %d %s", resp.StatusCode, b)
	}
	return s, json.Unmarshal(b, &s)
}

var adminClient = &http.Client{Timeout: 10 * time.Second}

// healthz reports the status and body of the agent's /healthz.
func (v *estEnv) healthz() (int, string) {
	v.t.Helper()
	resp, err := adminClient.Get(v.adminURL + "/healthz")
	if err != nil {
		v.t.Fatalf("GET /healthz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

// cutUplink stops the broker and waits until the agent knows.
func (v *estEnv) cutUplink() {
	v.t.Helper()
	v.e.StopSync()
	eventually(v.t, 30*time.Second, "the agent sees the broker down", func() bool { return !v.status().Online }, v.agent.Tail)
}

// restoreUplink starts the broker again and waits until the agent is
// back online.
func (v *estEnv) restoreUplink() {
	v.t.Helper()
	v.e.StartSync()
	eventually(v.t, time.Minute, "the agent reconnects", func() bool { return v.status().Online }, v.agent.Tail)
}

// eventually is cptest.Eventually.
var eventually = cptest.Eventually

// newEnv starts everything for a DMS with policy (mode, device_auth, ...);
// the devices CA is added to authorized_cas.
func newEnv(t testing.TB, policy apitypes.DMSPolicy) *estEnv {
	t.Helper()
	return newEnvWith(t, policy, "")
}

// newEnvWith is newEnv with more lines for the agent's est section
// (each indented by two spaces).
func newEnvWith(t testing.TB, policy apitypes.DMSPolicy, estLines string) *estEnv {
	t.Helper()
	start := time.Now()
	e := cptest.Start(t, nil)
	// CRLs as the binary makes them: on revocation, and pushed to agents.
	e.App.AttachCRL(&crl.Service{Reg: e.App.Svc.Reg, Keys: e.App.Keys}, crl.PathPrefix)
	e.StartSync()
	v := &estEnv{t: t, e: e}
	var rootID string
	rootID, v.trustPEM = e.DMSTrust()
	v.trust = x509.NewCertPool()
	v.trust.AppendCertsFromPEM(v.trustPEM)
	one := 1
	var ca apitypes.CA
	e.MustDo("POST", "/api/v1/cas", e.AdminToken, apitypes.CreateCARequest{Name: "devices", ParentID: rootID, CommonName: "Outpost Test Devices CA", MaxPathLen: &one}, &ca, 201)
	v.caID = ca.ID
	port := cptest.FreePort(t)
	v.estURL = fmt.Sprintf("https://127.0.0.1:%d/.well-known/est", port)
	// Rate limits off (a rate of 0 is unlimited): the bulk tests would hit
	// the defaults.
	extra := fmt.Sprintf("est:\n  listen: 127.0.0.1:%d\n  hostnames: [127.0.0.1, localhost]\n  retry_after: 1s\n  rate_per_address: 0\n  rate_per_device: 0\n%s", port, estLines)
	v.agent = cptest.NewAgentFor(t, agentBin, e, cptest.Broker{URL: e.BrokerURL},
		apitypes.CreateDMSRequest{Name: "gw-" + strings.ToLower(t.Name()), Policy: &policy, AuthorizedCAs: []string{v.caID}},
		"keystore:\n  backend: file\n  file:\n    passphrase:\n      value: est-e2e", extra, nil)
	v.adminURL = "http://" + configValue(t, v.agent.Config, "admin_addr")
	v.agent.Start()
	eventually(t, time.Minute, "the agent serves EST", func() bool {
		s, err := v.tryStatus() // fails until the admin server listens
		return err == nil && s.ESTAddr != "" && s.Mode == policy.Mode && (policy.Mode != "local" || !s.EdgeCANotAfter.IsZero())
	}, v.agent.Tail)
	t.Logf("control plane, broker and agent ready in %v", time.Since(start).Round(100*time.Millisecond))
	return v
}

// client is an EST client for the agent (label "" or a label), optionally
// with a TLS client certificate.
func (v *estEnv) client(label string, cert *tls.Certificate) *estclient.Client {
	tc := &tls.Config{RootCAs: v.trust, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	u := v.estURL
	if label != "" {
		u += "/" + label
	}
	return &estclient.Client{BaseURL: u, HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 64}}}
}

// mint mints n one-time secrets through the agent; it returns user -> secret.
func (v *estEnv) mint(n int, prefix string) map[string]string {
	v.t.Helper()
	out := v.agent.Run("secrets", "--count", fmt.Sprint(n), "--prefix", prefix)
	creds := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		u, p, ok := strings.Cut(line, ":")
		if !ok {
			v.t.Fatalf("secrets output line %q", line)
		}
		creds[u] = p
	}
	if len(creds) != n {
		v.t.Fatalf("minted %d secrets, want %d", len(creds), n)
	}
	return creds
}

// newCSR makes a P-256 key and a CSR with common name cn.
func newCSR(t testing.TB, cn string, dns ...string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// configValue reads a top-level "key: value" line of an agent config.
func configValue(t testing.TB, file, key string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s: no %s", file, key)
	return ""
}

// setPolicy replaces the DMS's policy, and its authorized CAs when cas is
// not nil, and waits until the agent has applied that policy version (and
// in local mode holds an edge CA).
func (v *estEnv) setPolicy(p apitypes.DMSPolicy, cas []string) {
	v.t.Helper()
	req := apitypes.UpdateDMSRequest{Policy: &p}
	if cas != nil {
		req.AuthorizedCAs = &cas
	}
	v.e.MustDo("PATCH", "/api/v1/dmss/"+v.agent.DMSID, v.e.AdminToken, req, nil, 200)
	var at time.Time
	if err := v.e.DB().QueryRow(context.Background(), `SELECT updated_at FROM dmss WHERE id = $1`, uuid.MustParse(v.agent.DMSID)).Scan(&at); err != nil {
		v.t.Fatal(err)
	}
	version := fmt.Sprint(at.UnixMilli()) // syncsvc.DMSState's Policy.version
	eventually(v.t, 30*time.Second, "the agent applies policy version "+version, func() bool {
		if !v.appliedPolicy(version) {
			return false
		}
		s := v.status()
		return s.Mode == p.Mode && (p.Mode != "local" || !s.EdgeCANotAfter.IsZero())
	}, v.agent.Tail)
}

// appliedPolicy reports whether the agent logged that it applied policy
// version (agent.applyPolicy logs each policy it stores).
func (v *estEnv) appliedPolicy(version string) bool {
	for line := range strings.Lines(v.agent.Log.String()) {
		var l struct {
			Msg     string      `json:"msg"`
			Version json.Number `json:"version"`
		}
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		if d.Decode(&l) == nil && l.Msg == "policy from the control plane" && l.Version.String() == version {
			return true
		}
	}
	return false
}

// newCA creates a CA under the bootstrap root and returns its id.
func (v *estEnv) newCA(name string) apitypes.CA {
	v.t.Helper()
	var cas apitypes.Page[apitypes.CA]
	v.e.MustDo("GET", "/api/v1/cas", v.e.AdminToken, nil, &cas, 200)
	for _, ca := range cas.Items {
		if ca.Role == "bootstrap_root" {
			zero := 0
			var out apitypes.CA
			v.e.MustDo("POST", "/api/v1/cas", v.e.AdminToken, apitypes.CreateCARequest{Name: name, ParentID: ca.ID, CommonName: "Outpost Test " + name, MaxPathLen: &zero}, &out, 201)
			return out
		}
	}
	v.t.Fatal("no bootstrap root CA")
	return apitypes.CA{}
}

// caByRole returns the control plane's CA with role (bootstrap_root,
// issuing, dms_manager, ...).
func (v *estEnv) caByRole(role string) apitypes.CA {
	v.t.Helper()
	var cas apitypes.Page[apitypes.CA]
	v.e.MustDo("GET", "/api/v1/cas", v.e.AdminToken, nil, &cas, 200)
	var roles []string
	for _, ca := range cas.Items {
		if ca.Role == role {
			return ca
		}
		roles = append(roles, ca.Role)
	}
	v.t.Fatalf("no CA with role %q (roles: %v)", role, roles)
	return apitypes.CA{}
}

// issueFromCA has the control plane issue a certificate from CA caID for
// csrDER (the API, not EST).
func (v *estEnv) issueFromCA(caID string, csrDER []byte) *x509.Certificate {
	v.t.Helper()
	var c apitypes.Certificate
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})
	v.e.MustDo("POST", "/api/v1/certificates", v.e.AdminToken, apitypes.IssueRequest{CAID: caID, CSRPEM: string(csrPEM)}, &c, 201)
	return mustParsePEM(v.t, []byte(c.CertPEM))
}

// waitInRegistry waits until every certificate is in the control plane's
// registry, byte for byte.
func (v *estEnv) waitInRegistry(certs []*x509.Certificate) {
	v.t.Helper()
	var missing string
	eventually(v.t, 2*time.Minute, "every certificate issued reaches the registry", func() bool {
		for _, c := range certs {
			var der []byte
			err := v.e.DB().QueryRow(context.Background(), `SELECT der FROM certificates WHERE serial = $1`, serialHex(c)).Scan(&der)
			if err != nil || !bytes.Equal(der, c.Raw) {
				missing = fmt.Sprintf("%s (%s): %v", serialHex(c), c.Subject.CommonName, err)
				return false
			}
		}
		return true
	}, func() string { return "missing: " + missing + "\n" + v.agent.Tail() })
}

func serialHex(c *x509.Certificate) string { return strings.ToLower(c.SerialNumber.Text(16)) }

func mustParsePEM(t testing.TB, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM block in %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tlsCert makes a TLS client certificate of cert (then chain) and key.
func tlsCert(key any, cert *x509.Certificate, chain ...*x509.Certificate) *tls.Certificate {
	tc := &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// estAnswer is an EST server's answer as a device sees it.
type estAnswer struct {
	Status int
	Header http.Header
	Body   string
}

func (a estAnswer) String() string {
	return fmt.Sprintf("%d %s", a.Status, strings.TrimSpace(a.Body))
}

// estReq is a raw request to the agent's EST server, for the cases the EST
// client does not send (wrong media types, broken bodies, ...).
type estReq struct {
	Method string // default POST
	Path   string // after /.well-known/est/, such as "simpleenroll"
	// ContentType is sent unless empty; Body is sent as is.
	ContentType string
	Body        []byte
	// Chunked sends the body with chunked transfer encoding.
	Chunked    bool
	User, Pass string
	Cert       *tls.Certificate
}

func (v *estEnv) do(r estReq) estAnswer {
	v.t.Helper()
	if r.Method == "" {
		r.Method = http.MethodPost
	}
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
		if r.Chunked {
			body = io.MultiReader(body) // hides the length: chunked
		}
	}
	req, err := http.NewRequest(r.Method, v.estURL+"/"+r.Path, body)
	if err != nil {
		v.t.Fatal(err)
	}
	if r.ContentType != "" {
		req.Header.Set("Content-Type", r.ContentType)
	}
	if r.User != "" {
		req.SetBasicAuth(r.User, r.Pass)
	}
	tc := &tls.Config{RootCAs: v.trust, MinVersion: tls.VersionTLS12}
	if r.Cert != nil {
		// Present the certificate whatever CAs the server lists as
		// acceptable, as OpenSSL clients do (Go's would send none for a
		// certificate from a CA the server does not list).
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return r.Cert, nil }
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		v.t.Fatalf("%s %s: %v", r.Method, r.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		v.t.Fatalf("%s %s: reading the answer: %v", r.Method, r.Path, err)
	}
	return estAnswer{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}
