package syncsvc_test

import (
	"bytes"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/proto/syncpb"
)

func responderRec(id, caID string, der []byte) *syncpb.Record {
	return &syncpb.Record{RecordId: id, Payload: &syncpb.Record_ResponderCertificate{ResponderCertificate: &syncpb.ResponderCertificate{CaId: caID, CertificateDer: der}}}
}

// responderRequests returns the ResponderRequest updates of a reply.
func responderRequests(env *syncpb.Envelope) []*syncpb.Update {
	var out []*syncpb.Update
	for _, u := range env.GetDown().GetUpdates() {
		if u.GetResponderRequest() != nil {
			out = append(out, u)
		}
	}
	return out
}

// TestResponderDelegation: heartbeat replies ask a local-mode DMS's agent
// to certify the control plane's OCSP responder key for its edge CA (the
// same request until answered; none for agents that speak protocol 2);
// a certificate for an edge CA of another DMS or for another key is
// refused for good; the right one is installed, the requests stop, and
// OCSP answers for a certificate the edge CA issued offline, signed by
// the responder the gateway certified.
func TestResponderDelegation(t *testing.T) {
	f := newFixture(t)
	f.a.OCSP = f.e.App.OCSP
	root := f.ca("resp-root", "")
	policy := &apitypes.DMSPolicy{Mode: "local", LocalQuota: 100, EdgeNameConstraints: []string{"plant.example"}}
	dmsID := f.dms(apitypes.CreateDMSRequest{Name: "gw-resp", AuthorizedCAs: []string{root.ID}, Policy: policy})
	otherID := f.dms(apitypes.CreateDMSRequest{Name: "gw-resp-other", AuthorizedCAs: []string{root.ID}, Policy: policy})
	edgeKey := newKey(t)
	ec := f.apply(dmsID, edgeRec("edge", csrFor(t, edgeKey, "edge"), "initial")).GetUpdates()[0].GetEdgeCa()
	edgeCert := mustParse(t, ec.GetCertificateDer())

	// A certificate the edge CA issued offline, in the registry.
	prof := issuer.DefaultDeviceProfile()
	prof.SANs = issuer.SANPolicy{DNS: []string{"**.plant.example"}}
	csr, err := x509.ParseCertificateRequest(csrWith(t, newKey(t), "d1.plant.example", []string{"d1.plant.example"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := (&issuer.Issuer{Cert: edgeCert, Signer: edgeKey}).Issue(csr, prof, issuer.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if d := f.apply(dmsID, issuedRec("issued-resp-1", "dev-resp-1", ec.GetCaId(), leaf.Raw)); len(d.GetAck().GetRecordIds()) != 1 {
		t.Fatalf("issued certificate: %v", d)
	}
	ocspReq, err := ocsp.CreateRequest(leaf, edgeCert, nil)
	if err != nil {
		t.Fatal(err)
	}
	ask := func() []byte {
		t.Helper()
		resp, err := http.Post(f.e.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(ocspReq))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	if _, err := ocsp.ParseResponse(ask(), nil); err == nil {
		t.Fatal("OCSP answered for an edge CA before its gateway certified a responder")
	}

	// Heartbeats ask, with the same request until it is answered.
	reqs := responderRequests(f.heartbeat(dmsID, &syncpb.Heartbeat{AgentVersion: "test"}))
	if len(reqs) != 1 || reqs[0].GetResponderRequest().GetCaId() != ec.GetCaId() {
		t.Fatalf("heartbeat reply: %d responder requests (%v), want one for the edge CA", len(reqs), reqs)
	}
	rr := reqs[0].GetResponderRequest()
	again := responderRequests(f.heartbeat(dmsID, &syncpb.Heartbeat{AgentVersion: "test"}))
	if len(again) != 1 || again[0].GetUpdateId() != reqs[0].GetUpdateId() || !bytes.Equal(again[0].GetResponderRequest().GetCsrDer(), rr.GetCsrDer()) {
		t.Fatalf("second heartbeat: %v, want the same request", again)
	}
	old := up(dmsID.String())
	old.ProtocolVersion = 2
	old.GetUp().Heartbeat = &syncpb.Heartbeat{AgentVersion: "old", ProtocolVersion: 2}
	if n := len(responderRequests(f.send(dmsID, old))); n != 0 {
		t.Errorf("%d responder requests to a protocol 2 agent, want none", n)
	}
	respCSR, err := x509.ParseCertificateRequest(rr.GetCsrDer())
	if err != nil || respCSR.CheckSignature() != nil {
		t.Fatalf("responder request CSR: %v", err)
	}
	sign := func(pub any) *x509.Certificate {
		t.Helper()
		c, err := issuer.CreateOCSPResponder(edgeCert, edgeKey, pub, issuer.OCSPResponderOptions{Subject: respCSR.Subject, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	respCert := sign(respCSR.PublicKey)

	// Refused: another DMS's record for this edge CA, a certificate for
	// another key.
	if r := onlyRejection(t, f.apply(otherID, responderRec("responder-other", ec.GetCaId(), respCert.Raw))); !r.GetPermanent() || !strings.Contains(r.GetReason(), "not an edge CA of this DMS") {
		t.Errorf("responder certificate from another DMS: %v", r)
	}
	if r := onlyRejection(t, f.apply(dmsID, responderRec("responder-wrong", ec.GetCaId(), sign(newKey(t).Public()).Raw))); !r.GetPermanent() || !strings.Contains(r.GetReason(), "another key") {
		t.Errorf("responder certificate for another key: %v", r)
	}

	// Installed; a redelivery changes nothing; no more requests.
	rec := responderRec("responder-1", ec.GetCaId(), respCert.Raw)
	for i := 0; i < 2; i++ {
		if d := f.apply(dmsID, rec); len(d.GetAck().GetRecordIds()) != 1 {
			t.Fatalf("responder certificate (delivery %d): %v", i+1, d)
		}
	}
	if n := f.count(`SELECT count(*) FROM ocsp_responders WHERE ca_id = $1 AND cert_der = $2`, ec.GetCaId(), respCert.Raw); n != 1 {
		t.Errorf("%d installed responders with the gateway's certificate, want 1", n)
	}
	if n := len(responderRequests(f.heartbeat(dmsID, &syncpb.Heartbeat{AgentVersion: "test"}))); n != 0 {
		t.Errorf("%d responder requests after the install, want none", n)
	}
	got, err := ocsp.ParseResponseForCert(ask(), leaf, edgeCert)
	if err != nil {
		t.Fatalf("OCSP response for the edge CA's certificate: %v", err)
	}
	if got.Status != ocsp.Good || got.Certificate == nil || !got.Certificate.Equal(respCert) {
		t.Errorf("OCSP status %d, signed by %v; want good, by the responder the gateway certified", got.Status, got.Certificate)
	}
}
