package api_test

import (
	"context"
	"crypto/x509/pkix"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// TestDisablingDMSRevokesIdentityAndEdgeCA: disabling a DMS revokes its
// identity certificate, its edge CA and what the edge CA issued, in one
// transaction.
func TestDisablingDMSRevokesIdentityAndEdgeCA(t *testing.T) {
	e := cptest.Start(t, nil)
	ctx := context.Background()
	admin := e.AdminToken
	var root apitypes.CA
	e.MustDo("POST", "/api/v1/cas", admin, apitypes.CreateCARequest{Name: "edge-parent", CommonName: "Edge Parent"}, &root, 201)
	var dms apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", admin, apitypes.CreateDMSRequest{Name: "gw-edge", AuthorizedCAs: []string{root.ID}, Policy: &apitypes.DMSPolicy{Mode: "local", LocalQuota: 10}}, &dms, 201)
	var boot apitypes.DMSBootstrapResponse
	e.MustDo("POST", "/api/v1/dms/bootstrap", "", apitypes.DMSBootstrapRequest{Token: dms.BootstrapToken, CSRPEM: csrPEM(t, "gw")}, &boot, 200)
	identity := parsePEM(t, boot.CertificatePEM)

	// The gateway's edge CA (its key stays on the gateway) and a
	// certificate it issued offline, as the sync would record them.
	reg := e.App.Svc.Reg
	rootRec, err := reg.GetCA(ctx, uuid.MustParse(root.ID))
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := e.App.Keys.Load(ctx, *rootRec.KeyRef)
	if err != nil {
		t.Fatal(err)
	}
	rootCert := parsePEM(t, root.CertPEM)
	edgeKey, _ := testpki.GenerateKey(testpki.ECDSAP256)
	edgeCert, err := issuer.CreateEdgeCA(rootCert, rootKey, edgeKey.Public(), issuer.EdgeCAOptions{
		CAOptions:           issuer.CAOptions{Subject: pkix.Name{CommonName: "Edge gw-edge"}, Now: time.Now(), Validity: 7 * 24 * time.Hour},
		PermittedDNSDomains: []string{"gw-edge.example"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dmsID := uuid.MustParse(dms.DMS.ID)
	parent := rootRec.ID
	edgeID := uuid.New()
	if err := reg.InsertCA(ctx, &registry.CA{ID: edgeID, Name: "edge-gw-edge", ParentID: &parent, Kind: "edge", Status: "active", DMSID: &dmsID,
		Subject: edgeCert.Subject.String(), Serial: edgeCert.SerialNumber.Text(16), NotBefore: edgeCert.NotBefore, NotAfter: edgeCert.NotAfter, CertDER: edgeCert.Raw}); err != nil {
		t.Fatal(err)
	}
	csr, _, _ := testpki.CSR("d.gw-edge.example", testpki.DNSNames("d.gw-edge.example"))
	prof := issuer.DefaultDeviceProfile()
	prof.SANs = issuer.SANPolicy{DNS: []string{"**.gw-edge.example"}}
	leaf, err := (&issuer.Issuer{Cert: edgeCert, Signer: edgeKey}).Issue(csr, prof, issuer.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.InsertCertificate(ctx, &registry.Certificate{Serial: leaf.SerialNumber.Text(16), IssuerID: edgeID, Subject: leaf.Subject.String(),
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Status: "active", DER: leaf.Raw}); err != nil {
		t.Fatal(err)
	}

	e.MustDo("POST", "/api/v1/dmss/"+dms.DMS.ID+"/disable", admin, nil, nil, 200)

	var c apitypes.Certificate
	e.MustDo("GET", "/api/v1/certificates/"+identity.SerialNumber.Text(16), admin, nil, &c, 200)
	if c.Status != "revoked" || c.RevocationReason != "privilegeWithdrawn" {
		t.Errorf("DMS identity certificate: %s (%s), want revoked (privilegeWithdrawn)", c.Status, c.RevocationReason)
	}
	var edge apitypes.CA
	e.MustDo("GET", "/api/v1/cas/"+edgeID.String(), admin, nil, &edge, 200)
	if edge.Status != "revoked" {
		t.Errorf("edge CA status %s, want revoked", edge.Status)
	}
	e.MustDo("GET", "/api/v1/certificates/"+leaf.SerialNumber.Text(16), admin, nil, &c, 200)
	if c.Status != "revoked" {
		t.Errorf("certificate issued by the edge CA: %s, want revoked", c.Status)
	}
}
