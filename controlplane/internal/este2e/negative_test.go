package este2e

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/est"
	"github.com/outpost-pki/outpost/internal/pkcs7"
)

// TestRefusals runs the EST error cases against one agent, each asserting
// the exact status and that the one-line text body names the problem:
// credentials (none, unknown device, wrong, reused), a CSR for another
// device, re-enrollment with another subject or names, with a certificate
// from outside the DMS's CAs, and with revoked ones while the uplink is
// down (an edge-issued certificate: the Revocation update; a devices CA
// certificate: the CA's CRL), the local quota with the uplink down (and
// its restart after the sync), malformed, oversized and mistyped bodies,
// unknown labels and operations, wrong methods, serverkeygen outside
// local mode, and a queued request the control plane refuses because its
// CA was unauthorized while it waited. Afterwards every certificate a
// device got is in the registry, and the agent is healthy and enrolls a
// new device.
func TestRefusals(t *testing.T) {
	local := apitypes.DMSPolicy{Mode: "local", DeviceAuth: "basic_secret", Profile: "device", LocalQuota: 1000, ReenrollWindowDays: 3650}
	v := newEnv(t, local)
	ctx := context.Background()
	creds := v.mint(12, "neg-")
	users := slices.Sorted(maps.Keys(creds))
	nextUser := func() string {
		u := users[0]
		users = users[1:]
		return u
	}
	var issued []*x509.Certificate // every certificate a device got
	// issuedBy takes the certificate of a 200 answer.
	issuedBy := func(t *testing.T, r estReq, a estAnswer) *x509.Certificate {
		t.Helper()
		if a.Status != http.StatusOK {
			t.Fatalf("%s: got %v, want 200", r.Path, a)
		}
		certs, err := pkcs7.DecodeBase64CertsOnly([]byte(a.Body))
		if err != nil || len(certs) != 1 {
			t.Fatalf("%s: %d certificates, %v", r.Path, len(certs), err)
		}
		issued = append(issued, certs[0])
		return certs[0]
	}
	enroll := func(t *testing.T, r estReq) *x509.Certificate {
		t.Helper()
		return issuedBy(t, r, v.do(r))
	}
	b64 := func(der []byte) []byte { return est.EncodeBase64(der) }
	want := func(t *testing.T, a estAnswer, status int, text ...string) {
		t.Helper()
		if a.Status != status {
			t.Errorf("got %v, want %d", a, status)
			return
		}
		if ct := a.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("%d answer has Content-Type %q, want text/plain", status, ct)
		}
		if strings.Count(strings.TrimSpace(a.Body), "\n") != 0 || strings.TrimSpace(a.Body) == "" {
			t.Errorf("%d answer body %q is not one line", status, a.Body)
		}
		for _, s := range text {
			if !strings.Contains(a.Body, s) {
				t.Errorf("got %v, want the body to name %q", a, s)
			}
		}
		if status == http.StatusUnauthorized && a.Header.Get("WWW-Authenticate") != `Basic realm="outpost-est"` {
			t.Errorf("401 without the Basic challenge: WWW-Authenticate %q", a.Header.Get("WWW-Authenticate"))
		}
	}

	// Credentials and the CSR's name.
	t.Run("no credentials", func(t *testing.T) {
		u := users[0] // not used up: the request never reaches the secret
		_, csr := newCSR(t, u)
		want(t, v.do(estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr)}), http.StatusUnauthorized, "credentials required")
	})
	t.Run("unknown device", func(t *testing.T) {
		_, csr := newCSR(t, "neg-ghost")
		want(t, v.do(estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr), User: "neg-ghost", Pass: "c2VjcmV0"}), http.StatusUnauthorized, `unknown device "neg-ghost"`)
	})
	t.Run("wrong secret", func(t *testing.T) {
		u := nextUser()
		_, csr := newCSR(t, u)
		want(t, v.do(estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr), User: u, Pass: creds[u] + "x"}), http.StatusUnauthorized, "wrong enrollment secret")
	})
	t.Run("csr names another device", func(t *testing.T) {
		u := nextUser()
		_, csr := newCSR(t, "neg-someone-else")
		want(t, v.do(estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr), User: u, Pass: creds[u]}), http.StatusForbidden,
			`common name "neg-someone-else" is not the authenticated device "`+u+`"`)
		// The refusal did not use the secret up.
		_, csr = newCSR(t, u)
		enroll(t, estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr), User: u, Pass: creds[u]})
	})
	reUser := nextUser()
	reKey, reCSR := newCSR(t, reUser)
	var reCert *x509.Certificate
	t.Run("reused secret", func(t *testing.T) {
		reCert = enroll(t, estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(reCSR), User: reUser, Pass: creds[reUser]})
		_, other := newCSR(t, reUser) // a second key, the same credentials
		want(t, v.do(estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(other), User: reUser, Pass: creds[reUser]}), http.StatusUnauthorized, "already used")
	})
	if reCert == nil {
		t.Fatal("no certificate to re-enroll with")
	}

	// Re-enrollment.
	t.Run("reenroll without a certificate", func(t *testing.T) {
		_, csr := newCSR(t, reUser)
		want(t, v.do(estReq{Path: "simplereenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr)}), http.StatusUnauthorized, "current certificate")
	})
	t.Run("reenroll subject mismatch", func(t *testing.T) {
		_, csr := newCSR(t, "neg-other-subject")
		want(t, v.do(estReq{Path: "simplereenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr), Cert: tlsCert(reKey, reCert)}), http.StatusBadRequest,
			"subject must be identical to the certificate being renewed")
	})
	t.Run("reenroll san mismatch", func(t *testing.T) {
		_, csr := newCSR(t, reUser, "extra.local")
		want(t, v.do(estReq{Path: "simplereenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr), Cert: tlsCert(reKey, reCert)}), http.StatusBadRequest,
			"subjectAltNames must be identical")
	})
	t.Run("reenroll with a certificate from a foreign CA", func(t *testing.T) {
		w := newWorkDir(t)
		w.bootstrapCA("rogue", "Rogue CA")
		w.deviceCert("dev", reUser, "rogue")
		cert := mustParsePEM(t, w.read("dev.pem"))
		_, csr := newCSR(t, reUser)
		want(t, v.do(estReq{Path: "simplereenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr), Cert: tlsCert(parseKeyPEM(t, w.read("dev.key")), cert, mustParsePEM(t, w.read("rogue.pem")))}),
			http.StatusForbidden, "not issued by a CA of this gateway")
	})
	t.Run("reenroll with a certificate from an unauthorized CA of the same root", func(t *testing.T) {
		// The control plane's bootstrap issuing CA shares the root with
		// the authorized devices CA but is not authorized for the DMS.
		other := v.caByRole("bootstrap_issuing")
		key, csr := newCSR(t, "neg-other-ca")
		cert := v.issueFromCA(other.ID, csr)
		_, csr = newCSR(t, "neg-other-ca")
		want(t, v.do(estReq{Path: "simplereenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr), Cert: tlsCert(key, cert, mustParsePEM(t, []byte(other.CertPEM)))}),
			http.StatusForbidden, "not issued by an authorized CA of this DMS")
	})

	// Requests the server cannot take.
	_, goodCSR := newCSR(t, users[0])
	certDER := reCert.Raw
	for _, c := range []struct {
		name   string
		r      estReq
		status int
		text   string
	}{
		{"malformed: not base64", estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: []byte("this is not base64!")}, http.StatusBadRequest, "not a base64 csr"},
		{"malformed: empty", estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: []byte{}}, http.StatusBadRequest, "empty request body"},
		{"malformed: base64 of no DER", estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: []byte(base64.StdEncoding.EncodeToString([]byte("hello, gateway")))}, http.StatusBadRequest, "not a der-encoded csr"},
		{"malformed: a certificate, not a CSR", estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(certDER)}, http.StatusBadRequest, "bad CSR: csr malformed"},
		{"malformed: bad CSR signature", estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(flipLastByte(goodCSR))}, http.StatusBadRequest, "bad CSR: csr signature invalid"},
		{"malformed: PEM of another type", estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: []byte("-----BEGIN CERTIFICATE-----\n" + base64.StdEncoding.EncodeToString(certDER) + "\n-----END CERTIFICATE-----\n")}, http.StatusBadRequest, "CERTIFICATE REQUEST"},
		{"oversized", estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: []byte(strings.Repeat("A", est.MaxRequestBody+1))}, http.StatusRequestEntityTooLarge, "too large"},
		{"oversized, chunked", estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: []byte(strings.Repeat("A", est.MaxRequestBody+1)), Chunked: true}, http.StatusRequestEntityTooLarge, "too large"},
		{"wrong content type", estReq{Path: "simpleenroll", ContentType: "application/json", Body: b64(goodCSR)}, http.StatusUnsupportedMediaType, "content type must be application/pkcs10"},
		{"wrong content type on reenroll", estReq{Path: "simplereenroll", ContentType: "text/plain", Body: b64(goodCSR), Cert: tlsCert(reKey, reCert)}, http.StatusUnsupportedMediaType, "content type must be application/pkcs10"},
		{"unknown label", estReq{Path: "nosuchlabel/simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(goodCSR)}, http.StatusNotFound, `unknown EST label "nosuchlabel"`},
		{"unknown label, cacerts", estReq{Method: http.MethodGet, Path: "nosuchlabel/cacerts"}, http.StatusNotFound, `unknown EST label "nosuchlabel"`},
		{"unknown operation", estReq{Path: "fullcmc", ContentType: "application/pkcs7-mime", Body: []byte("MA==")}, http.StatusNotFound, "not an EST operation"},
		{"GET simpleenroll", estReq{Method: http.MethodGet, Path: "simpleenroll"}, http.StatusMethodNotAllowed, "simpleenroll takes POST"},
		{"POST cacerts", estReq{Path: "cacerts", ContentType: est.MediaTypePKCS10, Body: b64(goodCSR)}, http.StatusMethodNotAllowed, "cacerts takes GET"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := v.do(c.r)
			want(t, a, c.status, c.text)
			if c.status == http.StatusMethodNotAllowed {
				if allow := a.Header.Get("Allow"); allow == "" || !strings.Contains(a.Body, allow) {
					t.Errorf("405: Allow %q", allow)
				}
			}
		})
	}

	// Revocations reach the agent and hold while the uplink is down: a
	// certificate the edge CA issued (the control plane sends the agent a
	// Revocation update), and one the control plane issued from the
	// devices CA outside this DMS (only the CA's CRL, pushed on heartbeat,
	// covers it). The local quota (3 since the last sync) is spent in the
	// same outage.
	quota := local
	quota.LocalQuota = 3
	v.setPolicy(quota, nil)
	edgeUser := nextUser()
	edgeKey, edgeCSR := newCSR(t, edgeUser)
	edgeCert := enroll(t, estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(edgeCSR), User: edgeUser, Pass: creds[edgeUser]})
	v.waitInRegistry([]*x509.Certificate{edgeCert}) // to revoke it there
	reenrollEdge := func(subject string) estAnswer {
		_, csr := newCSR(t, subject)
		return v.do(estReq{Path: "simplereenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr), Cert: tlsCert(edgeKey, edgeCert)})
	}
	caKey, caCSR := newCSR(t, "neg-revoked")
	caCert := v.issueFromCA(v.caID, caCSR)
	issued = append(issued, caCert)
	reenrollCA := func() estAnswer {
		_, csr := newCSR(t, "neg-revoked")
		return v.do(estReq{Path: "simplereenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr), Cert: tlsCert(caKey, caCert)})
	}
	t.Run("reenroll without a CRL fails closed in local mode", func(t *testing.T) {
		want(t, reenrollCA(), http.StatusForbidden, "revocation status of the current certificate is unknown")
	})
	for _, c := range []*x509.Certificate{edgeCert, caCert} {
		v.e.MustDo("POST", "/api/v1/certificates/"+serialHex(c)+"/revoke", v.e.AdminToken, apitypes.RevokeRequest{Reason: "keyCompromise"}, nil, 200)
	}
	var last estAnswer
	isRevoked := func(a estAnswer) bool {
		last = a
		return a.Status == http.StatusForbidden && strings.Contains(a.Body, "the current certificate is revoked")
	}
	// Probe with a CSR for another subject: refused 400 while the agent
	// does not know (revocation is checked first), so the probe never
	// issues.
	eventually(t, 30*time.Second, "the agent refuses the revoked edge certificate (the Revocation update arrived)", func() bool { return isRevoked(reenrollEdge("neg-probe")) },
		func() string { return "last answer: " + last.String() + "\n" + v.agent.Tail() })
	eventually(t, 30*time.Second, "the agent refuses the revoked devices CA certificate (the CRL arrived)", func() bool { return isRevoked(reenrollCA()) },
		func() string { return "last answer: " + last.String() + "\n" + v.agent.Tail() })
	// Nothing waits for the control plane and the quota restarted with
	// its last message.
	eventually(t, 30*time.Second, "the outbox drains", func() bool { s := v.status(); return s.QueueDepth == 0 && s.LocalIssued == 0 }, v.agent.Tail)

	v.cutUplink()
	t.Run("reenroll with a revoked edge certificate offline", func(t *testing.T) {
		want(t, reenrollEdge(edgeUser), http.StatusForbidden, "the current certificate is revoked")
	})
	t.Run("reenroll with a revoked devices CA certificate offline", func(t *testing.T) {
		want(t, reenrollCA(), http.StatusForbidden, "the current certificate is revoked")
	})
	var lateUser string
	var lateCSR []byte
	t.Run("local quota exhausted offline", func(t *testing.T) {
		if n := v.status().LocalIssued; n != 0 {
			t.Fatalf("%d local issuances counted at the start of the outage, want 0", n)
		}
		for range 3 {
			u := nextUser()
			_, csr := newCSR(t, u)
			enroll(t, estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(csr), User: u, Pass: creds[u]})
		}
		lateUser = nextUser()
		_, lateCSR = newCSR(t, lateUser)
		want(t, v.do(estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(lateCSR), User: lateUser, Pass: creds[lateUser]}), http.StatusForbidden,
			"local issuance quota exhausted: 3 certificates")
		if n := v.status().LocalIssued; n != 3 {
			t.Errorf("%d local issuances counted, want 3", n)
		}
	})
	v.restoreUplink()
	v.waitInRegistry(issued)
	t.Run("quota restarts after the sync", func(t *testing.T) {
		// The refused device repeats its request once the gateway synced.
		r := estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(lateCSR), User: lateUser, Pass: creds[lateUser]}
		var a estAnswer
		eventually(t, 30*time.Second, "the refused device enrolls after the sync", func() bool {
			a = v.do(r)
			return a.Status != http.StatusForbidden
		}, func() string { return a.String() + "\n" + v.agent.Tail() })
		issuedBy(t, r, a)
	})

	// Queued mode: a request waits through an outage during which the
	// DMS's CA is replaced; the control plane refuses it, and the device's
	// next try gets 403 naming the CA.
	queued := local
	queued.Mode = "queued"
	v.setPolicy(queued, nil)
	waitUser := nextUser()
	t.Run("serverkeygen outside local mode", func(t *testing.T) {
		_, csr := newCSR(t, waitUser)
		want(t, v.do(estReq{Path: "serverkeygen", ContentType: est.MediaTypePKCS10, Body: b64(csr), User: waitUser, Pass: creds[waitUser]}), http.StatusNotImplemented, "serverkeygen needs local mode")
		// Not the device's fault: its secret is still good (used below).
	})
	v.cutUplink()
	_, waitCSR := newCSR(t, waitUser)
	waiting := estReq{Path: "simpleenroll", ContentType: est.MediaTypePKCS10, Body: b64(waitCSR), User: waitUser, Pass: creds[waitUser]}
	if a := v.do(waiting); a.Status != http.StatusAccepted || a.Header.Get("Retry-After") == "" {
		t.Fatalf("queued enrollment offline: got %v, want 202 with Retry-After", a)
	}
	replacement := v.newCA("devices-2")
	v.e.MustDo("PATCH", "/api/v1/dmss/"+v.agent.DMSID, v.e.AdminToken, apitypes.UpdateDMSRequest{AuthorizedCAs: &[]string{replacement.ID}}, nil, 200)
	v.restoreUplink()
	t.Run("queued request for a CA no longer authorized", func(t *testing.T) {
		var a estAnswer
		eventually(t, time.Minute, "the control plane answers the queued request", func() bool {
			a = v.do(waiting)
			return a.Status != http.StatusAccepted
		}, func() string { return a.String() + "\n" + v.agent.Tail() })
		want(t, a, http.StatusForbidden, "refused", v.caID, "not authorized")
	})

	// Afterwards: nothing a device got is lost, and the agent works.
	v.waitInRegistry(issued)
	if code, body := v.healthz(); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	u := nextUser()
	c := v.client("", nil)
	c.Username, c.Password = u, creds[u]
	_, csr := newCSR(t, u)
	ectx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cert, err := c.Enroll(ectx, csr)
	if err != nil {
		t.Fatalf("a fresh device after the refusals: %v\n%s", err, v.agent.Tail())
	}
	if cert.Subject.CommonName != u || cert.Issuer.CommonName != "Outpost Test devices-2" {
		t.Errorf("fresh device: certificate for %q from %q, want %q from the new CA", cert.Subject.CommonName, cert.Issuer.CommonName, u)
	}
	issued = append(issued, cert)
	v.waitInRegistry(issued)
	t.Logf("%d certificates issued, all in the registry", len(issued))
}

func flipLastByte(b []byte) []byte {
	out := slices.Clone(b)
	out[len(out)-1] ^= 0x01
	return out
}
