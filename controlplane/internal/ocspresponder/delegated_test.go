package ocspresponder_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ocsp"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// TestEdgeCADelegatedResponder: an edge CA whose key lives on a gateway
// (here: in the test) gets OCSP answers from the control plane once the
// gateway signed the responder certificate the control plane asked for.
func TestEdgeCADelegatedResponder(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	reg := f.e.App.Svc.Reg

	// The gateway's edge CA, under the control plane's root.
	rootKey, err := f.e.App.Keys.Load(ctx, mustKeyRef(t, reg, f.rootID))
	if err != nil {
		t.Fatal(err)
	}
	edgeKey, err := testpki.GenerateKey(testpki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	edgeCert, err := issuer.CreateEdgeCA(f.root, rootKey, edgeKey.Public(), issuer.EdgeCAOptions{
		CAOptions:           issuer.CAOptions{Subject: pkix.Name{CommonName: "Edge CA hall 3"}, Now: now, Validity: 30 * 24 * time.Hour},
		PermittedDNSDomains: []string{"hall3.example"},
	})
	if err != nil {
		t.Fatal(err)
	}
	parent := uuid.MustParse(f.rootID)
	edgeID := uuid.New()
	if err := reg.InsertCA(ctx, &registry.CA{ID: edgeID, Name: "edge-hall-3", ParentID: &parent, Kind: "edge", Status: "active",
		Subject: edgeCert.Subject.String(), Serial: edgeCert.SerialNumber.Text(16), NotBefore: edgeCert.NotBefore, NotAfter: edgeCert.NotAfter, CertDER: edgeCert.Raw}); err != nil {
		t.Fatal(err)
	}
	// A device certificate the gateway issued offline, synced up.
	csr, _, _ := testpki.CSR("plc.hall3.example", testpki.DNSNames("plc.hall3.example"))
	leaf, err := (&issuer.Issuer{Cert: edgeCert, Signer: edgeKey}).Issue(csr, edgeProfile(), issuer.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.InsertCertificate(ctx, &registry.Certificate{Serial: leaf.SerialNumber.Text(16), IssuerID: edgeID, Subject: leaf.Subject.String(),
		CommonName: leaf.Subject.CommonName, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Status: "active", DER: leaf.Raw}); err != nil {
		t.Fatal(err)
	}
	req, err := ocsp.CreateRequest(leaf, edgeCert, nil)
	if err != nil {
		t.Fatal(err)
	}
	ask := func() ([]byte, error) {
		resp, err := http.Post(f.e.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
		if err != nil {
			return nil, err
		}
		return body(t, resp), nil
	}

	// Before the gateway signed a responder: the edge CA is not one we
	// can answer for.
	der, err := ask()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ocsp.ParseResponse(der, nil); err == nil {
		t.Fatal("answered for an edge CA without a responder certificate")
	}

	// The control plane asks; the gateway signs with the edge CA key.
	r := f.e.App.OCSP
	csrDER, err := r.PrepareDelegated(ctx, edgeID)
	if err != nil {
		t.Fatal(err)
	}
	respCSR, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatal(err)
	}
	respCert, err := issuer.CreateOCSPResponder(edgeCert, edgeKey, respCSR.PublicKey, issuer.OCSPResponderOptions{Subject: respCSR.Subject, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	// A certificate for another key is refused.
	other, _ := testpki.GenerateKey(testpki.ECDSAP256)
	wrong, _ := issuer.CreateOCSPResponder(edgeCert, edgeKey, other.Public(), issuer.OCSPResponderOptions{Subject: respCSR.Subject, Now: now})
	if err := r.InstallDelegated(ctx, edgeID, wrong.Raw); err == nil {
		t.Fatal("installed a responder certificate for another key")
	}
	if err := r.InstallDelegated(ctx, edgeID, respCert.Raw); err != nil {
		t.Fatal(err)
	}

	der, err = ask()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ocsp.ParseResponseForCert(der, leaf, edgeCert)
	if err != nil {
		t.Fatalf("response for the edge CA's certificate: %v", err)
	}
	if got.Status != ocsp.Good || !got.Certificate.Equal(respCert) {
		t.Errorf("status %d, signed by %v; want good, by the gateway-signed responder", got.Status, got.Certificate.Subject)
	}
}

func edgeProfile() *issuer.Profile {
	p := issuer.DefaultDeviceProfile()
	p.SANs = issuer.SANPolicy{DNS: []string{"**.hall3.example"}}
	return p
}

func mustKeyRef(t *testing.T, reg *registry.Registry, id string) string {
	t.Helper()
	ca, err := reg.GetCA(context.Background(), uuid.MustParse(id))
	if err != nil || ca.KeyRef == nil {
		t.Fatalf("ca %s: %v", id, err)
	}
	return *ca.KeyRef
}
