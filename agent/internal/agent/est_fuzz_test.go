package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/agent/internal/agentconfig"
	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/internal/est"
	"github.com/outpost-pki/outpost/internal/pkcs7"
	"github.com/outpost-pki/outpost/internal/ratelimit"
	"github.com/outpost-pki/outpost/internal/testpki"
	syncpb "github.com/outpost-pki/outpost/proto/syncpb"
)

// errorLog keeps the messages of the error records an agent logs.
type errorLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *errorLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelError }
func (l *errorLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *errorLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *errorLog) WithGroup(string) slog.Handler      { return l }

func (l *errorLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.msgs
	l.msgs = nil
	return m
}

// hookTransport answers the enrollment webhook in-process with the
// status and body the fuzzer chose.
type hookTransport struct {
	status int
	body   []byte
	asked  bool
	sent   []byte
}

func (h *hookTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h.asked = true
	h.sent, _ = io.ReadAll(r.Body)
	return &http.Response{StatusCode: h.status, Body: io.NopCloser(bytes.NewReader(h.body)), Header: http.Header{}, Request: r}, nil
}

// estHarness is an agent with just what its EST handler needs before it
// hands a request to the control plane: a policy in local mode (so an
// authenticated enrollment stops at "no edge CA yet", never signing or
// queueing), a CA bundle, a real store holding one enrollment secret,
// the webhook answered in-process, and no rate limits.
type estHarness struct {
	srv    *estServer
	log    *errorLog
	hook   *hookTransport
	secret string
	bundle [][]byte
	csrDER []byte
}

const (
	fuzzDevice = "dev-1"
	fuzzCA     = "ca-1"
	// The message of enrollLocal without an edge CA: seeing it means the
	// request got through authentication.
	noEdgeCA = "no valid edge CA yet"
)

func newESTHarness(tb testing.TB) *estHarness {
	tb.Helper()
	pki := testpki.NewT(tb)
	root := pki.Root("Fuzz Root")
	ca := root.Intermediate("Fuzz Issuing CA")
	csr, _, err := testpki.CSR(fuzzDevice)
	if err != nil {
		tb.Fatal(err)
	}
	// On tmpfs when there is one: a request with the right secret commits
	// twice (consume, then release when issuing fails), and fsyncs to disk
	// would be most of an exec.
	dir := tb.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "outpost-fuzz-"); err == nil {
		dir = d
		tb.Cleanup(func() { os.RemoveAll(d) })
	}
	st, err := store.Open(filepath.Join(dir, "agent.db"), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	creds, err := st.MintSecrets([]string{fuzzDevice}, "line-1", time.Hour, false)
	if err != nil {
		tb.Fatal(err)
	}
	h := &estHarness{log: &errorLog{}, hook: &hookTransport{}, secret: creds[0].Password, csrDER: csr.Raw,
		bundle: [][]byte{ca.Cert.Raw, root.Cert.Raw}}
	a := &Agent{cfg: &agentconfig.Config{}, store: st, log: slog.New(h.log), edge: &certSlot{}, server: &certSlot{}}
	a.state.policy.Store(&policyState{
		Policy: &syncpb.Policy{Mode: "local", DeviceAuth: "client_cert_or_secret", Profile: "device", LocalQuota: 10,
			AuthorizedCaIds: []string{fuzzCA}, WebhookUrl: "https://decide.example/enroll",
			Labels: []*syncpb.Label{
				{Name: "line-1", CaId: fuzzCA, DeviceAuth: "basic_secret"},
				{Name: "hook", CaId: fuzzCA, DeviceAuth: "webhook"},
				{Name: "cert", CaId: fuzzCA, DeviceAuth: "client_cert"},
				{Name: "odd", CaId: fuzzCA, DeviceAuth: "kerberos"},
			}},
		Bundles: map[string][]*x509.Certificate{fuzzCA: {ca.Cert, root.Cert}},
	})
	h.srv = &estServer{a: a, byAddr: ratelimit.New(0, 0, 1), byDevice: ratelimit.New(0, 0, 1), http: &http.Client{Transport: h.hook}}
	return h
}

// FuzzESTHandler sends fuzzed EST requests (method, path, Content-Type,
// Content-Transfer-Encoding, Authorization, body) to the agent's EST
// handler, with a fuzzed answer from the enrollment webhook. It checks
// that nothing panics (the handler's recover logs it), that every answer
// is one of the statuses EST clients expect, never a 500, with a
// WWW-Authenticate challenge on 401, that cacerts returns the CA bundle,
// and that no request gets through authentication without the right
// credential: the one-time secret of its device under a basic_secret
// label, a 200 decision with "allow": true under the webhook label, and
// never under the client_cert label (no TLS here).
func FuzzESTHandler(f *testing.F) {
	h := newESTHarness(f)
	b64 := string(est.EncodeBase64(h.csrDER))
	pemCSR := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: h.csrDER}))
	basic := func(u, p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) }
	good := basic(fuzzDevice, h.secret)
	allow := `{"allow":true}`
	for _, s := range []struct {
		method, path, ct, cte, auth, body string
		hookStatus                        uint16
		hookBody                          string
	}{
		{"GET", "/.well-known/est/cacerts", "", "", "", "", 0, ""},
		{"GET", "/.well-known/est/line-1/cacerts/", "", "", "", "", 0, ""},
		{"GET", "/.well-known/est/csrattrs", "", "", "", "", 0, ""},
		{"POST", "/.well-known/est/cacerts", "", "", "", "", 0, ""},
		{"GET", "/.well-known/est/nope/cacerts", "", "", "", "", 0, ""},
		{"GET", "/.well-known/est/../cacerts", "", "", "", "", 0, ""},
		{"GET", "/.well-known/est/fullcmc", "", "", "", "", 0, ""},
		{"POST", "/.well-known/est/line-1/simpleenroll", est.MediaTypePKCS10, "base64", good, b64, 0, ""},
		{"POST", "/.well-known/est/line-1/simpleenroll", "application/pkcs10; charset=x", "", good, pemCSR, 0, ""},
		{"POST", "/.well-known/est/line-1/simpleenroll", "", "", good, string(h.csrDER), 0, ""},
		{"POST", "/.well-known/est/line-1/simpleenroll", est.MediaTypePKCS10, "base64", basic(fuzzDevice, "wrong"), b64, 0, ""},
		{"POST", "/.well-known/est/line-1/simpleenroll", est.MediaTypePKCS10, "base64", basic("dev-2", h.secret), b64, 0, ""},
		{"POST", "/.well-known/est/line-1/simpleenroll", est.MediaTypePKCS10, "base64", "Basic !!!", b64, 0, ""},
		{"POST", "/.well-known/est/line-1/simpleenroll", est.MediaTypePKCS10, "base64", "Bearer x", b64, 0, ""},
		{"POST", "/.well-known/est/line-1/simpleenroll", "text/plain", "base64", good, b64, 0, ""},
		{"POST", "/.well-known/est/line-1/simpleenroll", est.MediaTypePKCS10, "base64", good, "", 0, ""},
		{"POST", "/.well-known/est/line-1/simpleenroll", est.MediaTypePKCS10, "base64", good, "AAAA", 0, ""},
		{"POST", "/.well-known/est/line-1/serverkeygen", est.MediaTypePKCS10, "base64", good, b64, 0, ""},
		{"POST", "/.well-known/est/simpleenroll", est.MediaTypePKCS10, "base64", good, b64, 0, ""},
		{"POST", "/.well-known/est/simplereenroll", est.MediaTypePKCS10, "base64", "", b64, 0, ""},
		{"POST", "/.well-known/est/cert/simpleenroll", est.MediaTypePKCS10, "base64", good, b64, 0, ""},
		{"POST", "/.well-known/est/odd/simpleenroll", est.MediaTypePKCS10, "base64", good, b64, 0, ""},
		{"POST", "/.well-known/est/hook/simpleenroll", est.MediaTypePKCS10, "base64", basic(fuzzDevice, "pw"), b64, 200, allow},
		{"POST", "/.well-known/est/hook/simpleenroll", est.MediaTypePKCS10, "base64", basic(fuzzDevice, "pw"), b64, 200, `{"allow":false,"reason":"not on the list"}`},
		{"POST", "/.well-known/est/hook/simpleenroll", est.MediaTypePKCS10, "base64", basic(fuzzDevice, "pw"), b64, 500, allow},
		{"POST", "/.well-known/est/hook/simpleenroll", est.MediaTypePKCS10, "base64", basic(fuzzDevice, "pw"), b64, 200, `{"allow":"true"}`},
		{"POST", "/.well-known/est/hook/simpleenroll", est.MediaTypePKCS10, "base64", basic(fuzzDevice, "pw"), b64, 200, `{"allow":true,"reason":1}`},
		{"POST", "/.well-known/est/hook/simpleenroll", est.MediaTypePKCS10, "base64", basic(fuzzDevice, "pw"), b64, 200, `{"allow":true`},
		{"POST", "/.well-known/est/hook/simpleenroll", est.MediaTypePKCS10, "base64", basic(fuzzDevice, "pw"), b64, 200, `{"Allow":true} {"allow":false}`},
		{"POST", "/.well-known/est/hook/simpleenroll", est.MediaTypePKCS10, "base64", "", b64, 200, allow},
	} {
		f.Add(s.method, s.path, s.ct, s.cte, s.auth, []byte(s.body), s.hookStatus, []byte(s.hookBody))
	}

	f.Fuzz(func(t *testing.T, method, path, ct, cte, auth string, body []byte, hookStatus uint16, hookBody []byte) {
		h.log.take()
		*h.hook = hookTransport{status: int(hookStatus), body: hookBody}
		r := &http.Request{Method: method, URL: &url.URL{Path: path}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
			Host: "gateway.example", RemoteAddr: "192.0.2.1:4711", RequestURI: path}
		for k, v := range map[string]string{"Content-Type": ct, "Content-Transfer-Encoding": cte, "Authorization": auth} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		w := httptest.NewRecorder()
		h.srv.ServeHTTP(w, r)

		for _, m := range h.log.take() {
			if strings.Contains(m, "panic") {
				t.Fatalf("the EST handler panicked (logged %q)", m)
			}
		}
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound,
			http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType,
			http.StatusNotImplemented, http.StatusServiceUnavailable:
		default:
			t.Fatalf("%s %q: status %d %q", method, path, w.Code, w.Body.String())
		}
		if w.Code == http.StatusUnauthorized && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic ") {
			t.Fatalf("401 without a Basic challenge: %v", w.Header())
		}
		label, op, ok := est.ParsePath(path)
		if w.Code == http.StatusOK {
			if !ok || method != http.MethodGet || (op != est.OpCACerts && op != est.OpCSRAttrs) {
				t.Fatalf("%s %q answered 200", method, path)
			}
			if op == est.OpCACerts {
				certs, err := pkcs7.DecodeBase64CertsOnly(w.Body.Bytes())
				if err != nil || len(certs) != len(h.bundle) || !bytes.Equal(certs[0].Raw, h.bundle[0]) {
					t.Fatalf("cacerts: got %d certificates (%v), want the bundle", len(certs), err)
				}
			}
		}

		// Authentication: only the right credential reaches the issuing
		// step (which answers "no edge CA" here).
		passed := w.Code == http.StatusServiceUnavailable && strings.Contains(w.Body.String(), noEdgeCA)
		if !passed {
			return
		}
		ps := h.srv.a.state.policy.Load()
		user, pass, hasBasic := r.BasicAuth()
		switch mode := ps.deviceAuthFor(label); {
		case op != est.OpSimpleEnroll && op != est.OpServerKeygen:
			t.Fatalf("%s got through authentication", op)
		case mode == "basic_secret" || mode == "client_cert_or_secret":
			if !hasBasic || user != fuzzDevice || pass != h.secret {
				t.Fatalf("label %q: authenticated with Authorization %q, want the device's secret", label, auth)
			}
		case mode == "webhook":
			// The decision as the webhook contract defines it: a JSON
			// object whose fields have their documented types.
			var ans struct {
				Allow  bool   `json:"allow"`
				Reason string `json:"reason"`
			}
			dec := json.NewDecoder(io.LimitReader(bytes.NewReader(hookBody), 16<<10))
			if !h.hook.asked || hookStatus != http.StatusOK || dec.Decode(&ans) != nil || !ans.Allow {
				t.Fatalf("label %q: authenticated by webhook answer %d %q, want 200 and a decision with allow true", label, hookStatus, hookBody)
			}
			var sent map[string]string
			if err := json.Unmarshal(h.hook.sent, &sent); err != nil || sent["device_id"] == "" || sent["csr"] == "" {
				t.Fatalf("webhook request %q: %v", h.hook.sent, err)
			}
		default:
			t.Fatalf("label %q (device_auth %q): authenticated without TLS", label, mode)
		}
	})
}
