package estclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/est"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// Credentials the test server's "auth" label accepts.
const (
	testUser     = "device-1"
	testPassword = "s3cret: with colon"
)

// seenRequest is what the test server recorded of one request.
type seenRequest struct {
	method, path        string
	contentType, cte    string
	user, password      string
	hasAuth, clientCert bool
}

// testServer is a small EST server built on package est's readers and
// writers, signing with a throwaway CA. Labels select behaviours:
//
//	""          normal answers
//	auth        Basic credentials required (testUser, testPassword)
//	queue       simpleenroll answers 202 while retryAfters lasts, with
//	            each value as Retry-After
//	forbidden   simpleenroll answers 403
//	cafirst     simpleenroll sends the issuing CA before the certificate
//	none        csrattrs answers 204
//	missing     csrattrs answers 404
//	huge        cacerts answers with more than MaxResponseSize bytes
//	binary      cacerts answers with binary DER
//	mismatch    serverkeygen sends a key that does not match the certificate
type testServer struct {
	pki     *testpki.PKI
	root    *testpki.CA
	issuing *testpki.CA
	srv     *httptest.Server

	mu          sync.Mutex
	retryAfters []string
	seen        []seenRequest
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	p := testpki.NewT(t)
	s := &testServer{pki: p, root: p.Root("Outpost EST Client Test Root")}
	s.issuing = s.root.Intermediate("Outpost EST Client Test Issuing CA", testpki.PathLen(0))
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.srv.TLS = &tls.Config{
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  s.root.Pool(),
		Time:       p.Now, // verify client certificates at the PKI's clock
	}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

// client returns a Client for label with the server's TLS trust.
func (s *testServer) client(label string) *Client {
	u := s.srv.URL + "/.well-known/est"
	if label != "" {
		u += "/" + label
	}
	return &Client{BaseURL: u, HTTPClient: s.srv.Client()}
}

// requests returns the requests seen so far.
func (s *testServer) requests() []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenRequest(nil), s.seen...)
}

func (s *testServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	user, password, hasAuth := r.BasicAuth()
	s.mu.Lock()
	s.seen = append(s.seen, seenRequest{
		method: r.Method, path: r.URL.Path,
		contentType: r.Header.Get("Content-Type"), cte: r.Header.Get("Content-Transfer-Encoding"),
		user: user, password: password, hasAuth: hasAuth,
		clientCert: r.TLS != nil && len(r.TLS.PeerCertificates) > 0,
	})
	s.mu.Unlock()

	label, op, ok := est.ParsePath(r.URL.Path)
	if !ok {
		est.WriteError(w, http.StatusNotFound, "unknown est operation")
		return
	}
	if label == "auth" {
		switch {
		case !hasAuth:
			est.WriteUnauthorized(w, "outpost", "credentials required")
			return
		case user != testUser || password != testPassword:
			est.WriteUnauthorized(w, "outpost", "invalid credentials")
			return
		}
	}
	switch op {
	case est.OpCACerts:
		s.cacerts(w, label)
	case est.OpCSRAttrs:
		s.csrattrs(w, label)
	case est.OpSimpleEnroll, est.OpSimpleReenroll, est.OpServerKeygen:
		if r.Method != http.MethodPost {
			est.WriteError(w, http.StatusMethodNotAllowed, "use POST")
			return
		}
		s.enroll(w, r, label, op)
	}
}

func (s *testServer) cacerts(w http.ResponseWriter, label string) {
	switch label {
	case "huge":
		w.Header().Set("Content-Type", est.MediaTypeCertsOnly)
		big := make([]byte, MaxResponseSize+10)
		for i := range big {
			big[i] = 'A'
		}
		_, _ = w.Write(big)
	case "binary":
		b, err := est.DecodeBase64(certsOnlyBody(s.issuing.Cert.Raw, s.root.Cert.Raw))
		if err != nil {
			est.WriteError(w, http.StatusInternalServerError, "encoding failed")
			return
		}
		w.Header().Set("Content-Type", est.MediaTypeCertsOnly)
		_, _ = w.Write(b)
	default:
		if err := est.WriteCerts(w, s.issuing.Cert.Raw, s.root.Cert.Raw); err != nil {
			est.WriteError(w, http.StatusInternalServerError, "encoding failed")
		}
	}
}

// certsOnlyBody returns what est.WriteCerts writes for certs.
func certsOnlyBody(certs ...[]byte) []byte {
	rec := httptest.NewRecorder()
	_ = est.WriteCerts(rec, certs...)
	return rec.Body.Bytes()
}

func (s *testServer) csrattrs(w http.ResponseWriter, label string) {
	switch label {
	case "none":
		_ = est.WriteCSRAttrs(w, nil)
	case "missing":
		est.WriteError(w, http.StatusNotFound, "no csr attributes")
	default:
		der, err := est.EncodeCSRAttrs(est.DefaultCSRAttrs())
		if err != nil {
			est.WriteError(w, http.StatusInternalServerError, "encoding failed")
			return
		}
		_ = est.WriteCSRAttrs(w, der)
	}
}

func (s *testServer) enroll(w http.ResponseWriter, r *http.Request, label, op string) {
	der, err := est.ReadCSR(r, est.MaxRequestBody)
	if err != nil {
		var e *est.Error
		if !errors.As(err, &e) {
			est.WriteError(w, http.StatusBadRequest, "invalid request")
			return
		}
		est.WriteError(w, e.Status, e.Message)
		return
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil || csr.CheckSignature() != nil {
		est.WriteError(w, http.StatusBadRequest, "invalid csr")
		return
	}
	if op == est.OpSimpleReenroll && (r.TLS == nil || len(r.TLS.PeerCertificates) == 0) {
		est.WriteError(w, http.StatusForbidden, "client certificate required")
		return
	}
	switch label {
	case "forbidden":
		est.WriteError(w, http.StatusForbidden, "csr subject does not match current certificate")
		return
	case "queue":
		s.mu.Lock()
		var after string
		pending := len(s.retryAfters) > 0
		if pending {
			after, s.retryAfters = s.retryAfters[0], s.retryAfters[1:]
		}
		s.mu.Unlock()
		if pending {
			w.Header().Set("Retry-After", after)
			w.Header().Set("Content-Length", "17")
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte("awaiting approval"))
			return
		}
	}

	pub := csr.PublicKey
	var pkcs8 []byte
	if op == est.OpServerKeygen {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			est.WriteError(w, http.StatusInternalServerError, "key generation failed")
			return
		}
		pub = &key.PublicKey
		if label == "mismatch" {
			other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				est.WriteError(w, http.StatusInternalServerError, "key generation failed")
				return
			}
			key = other
		}
		if pkcs8, err = x509.MarshalPKCS8PrivateKey(key); err != nil {
			est.WriteError(w, http.StatusInternalServerError, "key encoding failed")
			return
		}
	}
	cert, err := s.sign(csr, pub)
	if err != nil {
		est.WriteError(w, http.StatusInternalServerError, "issuing failed")
		return
	}
	certs := [][]byte{cert, s.issuing.Cert.Raw}
	if label == "cafirst" {
		certs = [][]byte{s.issuing.Cert.Raw, cert}
	}
	if op == est.OpServerKeygen {
		err = est.WriteServerKeygen(w, pkcs8, certs...)
	} else {
		err = est.WriteCerts(w, certs...)
	}
	if err != nil {
		est.WriteError(w, http.StatusInternalServerError, "encoding failed")
	}
}

// sign issues a client certificate for pub with csr's subject and names,
// using crypto/x509 directly.
func (s *testServer) sign(csr *x509.CertificateRequest, pub any) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	now := s.pki.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               csr.Subject,
		DNSNames:              csr.DNSNames,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, s.issuing.Cert, pub, s.issuing.Key)
}
