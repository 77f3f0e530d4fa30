package syncsvc_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/issuer"
)

// TestEdgeCARequestRecords: a local-mode DMS gets its edge CA certified
// by its first authorized CA with path length 0, the policy's name
// constraints and validity, recorded as an edge CA of the DMS; the same
// CA again on redelivery; a key certified before and a DMS not in local
// mode are refused for good; without configured constraints the edge CA
// is confined to "local".
func TestEdgeCARequestRecords(t *testing.T) {
	f := newFixture(t)
	root := f.ca("edge-root", "")
	var parent apitypes.CA
	f.e.MustDo("POST", "/api/v1/cas", f.e.AdminToken, apitypes.CreateCARequest{Name: "edge-parent", CommonName: "edge-parent", ParentID: root.ID, MaxPathLen: new(1)}, &parent, 201)
	dmsID := f.dms(apitypes.CreateDMSRequest{Name: "gw-local", AuthorizedCAs: []string{parent.ID}, Policy: &apitypes.DMSPolicy{
		Mode: "local", LocalQuota: 100, EdgeCAValidityDays: 7, EdgeNameConstraints: []string{"line1.example", "10.1.0.0/16", "@example.com", "uri:devices.example"}}})

	edgeKey := newKey(t)
	rec := edgeRec("edge-ca-initial", csrFor(t, edgeKey, "edge"), "initial")
	d := f.apply(dmsID, rec)
	if len(d.GetAck().GetRecordIds()) != 1 || len(d.GetUpdates()) != 1 || d.GetUpdates()[0].GetEdgeCa() == nil {
		t.Fatalf("edge CA request: %v", d)
	}
	ec := d.GetUpdates()[0].GetEdgeCa()
	cert := mustParse(t, ec.GetCertificateDer())
	parentCert := pemCert(t, parent.CertPEM)
	switch {
	case !cert.IsCA || cert.MaxPathLen != 0 || !cert.MaxPathLenZero:
		t.Errorf("edge CA: IsCA %v, MaxPathLen %d (zero %v), want a CA of path length 0", cert.IsCA, cert.MaxPathLen, cert.MaxPathLenZero)
	case !cert.PublicKey.(*ecdsa.PublicKey).Equal(edgeKey.Public()):
		t.Error("edge CA certificate for another key")
	case cert.CheckSignatureFrom(parentCert) != nil:
		t.Error("edge CA not signed by the DMS's first authorized CA")
	case !slices.Equal(cert.PermittedDNSDomains, []string{"line1.example"}) || len(cert.PermittedIPRanges) != 1 || cert.PermittedIPRanges[0].String() != "10.1.0.0/16" ||
		!slices.Equal(cert.PermittedEmailAddresses, []string{"example.com"}) || !slices.Equal(cert.PermittedURIDomains, []string{"devices.example"}) || !cert.PermittedDNSDomainsCritical:
		t.Errorf("edge CA name constraints: dns %v ip %v email %v uri %v", cert.PermittedDNSDomains, cert.PermittedIPRanges, cert.PermittedEmailAddresses, cert.PermittedURIDomains)
	case time.Until(cert.NotAfter) > 7*24*time.Hour || time.Until(cert.NotAfter) < 7*24*time.Hour-time.Hour:
		t.Errorf("edge CA not after %v, want in 7 days", cert.NotAfter)
	case !strings.Contains(cert.Subject.CommonName, "gw-local"):
		t.Errorf("edge CA subject %s", cert.Subject)
	}
	if len(ec.GetChainDers()) != 2 || !parentCert.Equal(mustParse(t, ec.GetChainDers()[0])) || !pemCert(t, root.CertPEM).Equal(mustParse(t, ec.GetChainDers()[1])) {
		t.Errorf("edge CA chain of %d, want the parent then the root", len(ec.GetChainDers()))
	}
	var reg apitypes.CA
	f.e.MustDo("GET", "/api/v1/cas/"+ec.GetCaId(), f.e.AdminToken, nil, &reg, 200)
	if reg.Kind != "edge" || reg.ParentID != parent.ID || reg.HasKey || !pemCert(t, reg.CertPEM).Equal(cert) {
		t.Errorf("registry edge CA: %+v", reg)
	}
	if n := f.count(`SELECT count(*) FROM cas WHERE dms_id = $1`, dmsID); n != 1 {
		t.Errorf("%d edge CAs of the DMS, want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'ca.edge_create' AND target = $1`, ec.GetCaId()); n != 1 {
		t.Errorf("%d audit rows for the edge CA, want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM events WHERE dms_id = $1 AND kind = 'dms.edge_ca_issued'`, dmsID); n != 1 {
		t.Errorf("%d DMS events for the edge CA, want 1", n)
	}

	// Redelivered: the same CA, nothing new.
	d = f.apply(dmsID, rec)
	if len(d.GetUpdates()) != 1 || d.GetUpdates()[0].GetEdgeCa().GetCaId() != ec.GetCaId() || !cert.Equal(mustParse(t, d.GetUpdates()[0].GetEdgeCa().GetCertificateDer())) {
		t.Fatalf("redelivered edge CA request: %v", d)
	}
	if n := f.count(`SELECT count(*) FROM cas WHERE dms_id = $1`, dmsID); n != 1 {
		t.Errorf("%d edge CAs after a redelivery, want 1", n)
	}

	// The same key again (a renewal must bring a fresh one): refused.
	if r := onlyRejection(t, f.apply(dmsID, edgeRec("edge-ca-renewal-same", csrFor(t, edgeKey, "edge"), "renewal"))); !r.GetPermanent() || !strings.Contains(r.GetReason(), "fresh key") {
		t.Errorf("renewal with the same key: %v", r)
	}
	// A renewal with a fresh key: a second edge CA.
	if d := f.apply(dmsID, edgeRec("edge-ca-renewal", csrFor(t, newKey(t), "edge"), "renewal")); len(d.GetUpdates()) != 1 || d.GetUpdates()[0].GetEdgeCa().GetCaId() == ec.GetCaId() {
		t.Errorf("renewal with a fresh key: %v", d)
	}

	// Not in local mode: refused.
	queued := f.dms(apitypes.CreateDMSRequest{Name: "gw-queued", AuthorizedCAs: []string{parent.ID}})
	if r := onlyRejection(t, f.apply(queued, edgeRec("edge-ca-queued", csrFor(t, newKey(t), "edge"), "initial"))); !r.GetPermanent() || !strings.Contains(r.GetReason(), "local mode") {
		t.Errorf("edge CA for a queued DMS: %v", r)
	}

	// A first authorized CA that may not certify CAs: refused.
	issuing := f.ca("edge-issuing-only", root.ID)
	pathZero := f.dms(apitypes.CreateDMSRequest{Name: "gw-local-pathlen", AuthorizedCAs: []string{issuing.ID}, Policy: &apitypes.DMSPolicy{Mode: "local", LocalQuota: 1}})
	if r := onlyRejection(t, f.apply(pathZero, edgeRec("edge-ca-pathlen", csrFor(t, newKey(t), "edge"), "initial"))); !r.GetPermanent() || !strings.Contains(r.GetReason(), "path length 0") {
		t.Errorf("edge CA under a path length 0 CA: %v", r)
	}

	// Local mode without constraints: the DNS domain "local".
	plain := f.dms(apitypes.CreateDMSRequest{Name: "gw-local-default", AuthorizedCAs: []string{parent.ID}, Policy: &apitypes.DMSPolicy{Mode: "local", LocalQuota: 1}})
	d = f.apply(plain, edgeRec("edge-ca-default", csrFor(t, newKey(t), "edge"), "initial"))
	if len(d.GetUpdates()) != 1 {
		t.Fatalf("edge CA of a default policy: %v", d)
	}
	def := mustParse(t, d.GetUpdates()[0].GetEdgeCa().GetCertificateDer())
	if !slices.Equal(def.PermittedDNSDomains, []string{"local"}) || def.NotAfter.Sub(def.NotBefore) < 29*24*time.Hour {
		t.Errorf("default edge CA: dns %v, validity %v", def.PermittedDNSDomains, def.NotAfter.Sub(def.NotBefore))
	}
}

// TestIssuedCertificateRecords: certificates an edge CA signed offline
// are recorded with the device (registered just in time, or refused
// without it), put into the device's slot with an event; a duplicate
// changes nothing; nothing of a revoked edge CA is accepted.
func TestIssuedCertificateRecords(t *testing.T) {
	f := newFixture(t)
	root := f.ca("issued-root", "")
	dmsID := f.dms(apitypes.CreateDMSRequest{Name: "gw-offline", AuthorizedCAs: []string{root.ID}, Policy: &apitypes.DMSPolicy{
		Mode: "local", LocalQuota: 100, EdgeNameConstraints: []string{"plant.example"}}})
	edgeKey := newKey(t)
	d := f.apply(dmsID, edgeRec("edge", csrFor(t, edgeKey, "edge"), "initial"))
	ec := d.GetUpdates()[0].GetEdgeCa()
	edge := &issuer.Issuer{Cert: mustParse(t, ec.GetCertificateDer()), Signer: edgeKey}
	prof := issuer.DefaultDeviceProfile()
	prof.SANs = issuer.SANPolicy{DNS: []string{"**.plant.example"}}
	sign := func(name string) *x509.Certificate {
		t.Helper()
		csr, err := x509.ParseCertificateRequest(csrWith(t, newKey(t), name, []string{name}, nil))
		if err != nil {
			t.Fatal(err)
		}
		c, err := edge.Issue(csr, prof, issuer.Request{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	leaf := sign("d1.plant.example")
	serial := strings.ToLower(leaf.SerialNumber.Text(16))
	if d := f.apply(dmsID, issuedRec("issued-1", "dev-offline-1", ec.GetCaId(), leaf.Raw)); len(d.GetAck().GetRecordIds()) != 1 {
		t.Fatalf("issued certificate: %v", d)
	}
	if dev := f.device("dev-offline-1"); dev.DMSID != dmsID.String() || len(dev.Slots) != 1 || dev.Slots[0].ActiveSerial != serial || dev.Slots[0].CAID != ec.GetCaId() {
		t.Errorf("device after an offline issuance: %+v", dev)
	}
	events := f.count(`SELECT count(*) FROM events WHERE device_id = 'dev-offline-1' AND kind = 'certificate.issued'`)
	if events != 1 {
		t.Errorf("%d certificate.issued events, want 1", events)
	}
	var c apitypes.Certificate
	f.e.MustDo("GET", "/api/v1/certificates/"+serial, f.e.AdminToken, nil, &c, 200)
	if c.DeviceID != "dev-offline-1" || c.DMSID != dmsID.String() || c.IssuerID != ec.GetCaId() || c.Status != "active" {
		t.Errorf("registry certificate: %+v", c)
	}

	// The same certificate under another record id changes nothing.
	if d := f.apply(dmsID, issuedRec("issued-1-again", "dev-offline-1", ec.GetCaId(), leaf.Raw)); len(d.GetAck().GetRecordIds()) != 1 {
		t.Fatalf("duplicate: %v", d)
	}
	if n := f.count(`SELECT count(*) FROM events WHERE device_id = 'dev-offline-1' AND kind = 'certificate.issued'`); n != events {
		t.Errorf("a duplicate added events: %d, want %d", n, events)
	}

	// Another DMS's device: refused for good.
	other := f.dms(apitypes.CreateDMSRequest{Name: "gw-offline-other"})
	f.e.MustDo("POST", "/api/v1/devices", f.e.AdminToken, apitypes.RegisterDeviceRequest{ID: "dev-elsewhere", DMSID: other.String()}, nil, 201)
	if r := onlyRejection(t, f.apply(dmsID, issuedRec("issued-foreign", "dev-elsewhere", ec.GetCaId(), sign("d2.plant.example").Raw))); !r.GetPermanent() {
		t.Errorf("another DMS's device: %v", r)
	}

	// Without just-in-time registration an unknown device is refused.
	var cur apitypes.DMS
	f.e.MustDo("GET", "/api/v1/dmss/"+dmsID.String(), f.e.AdminToken, nil, &cur, 200)
	pol := cur.Policy
	pol.JITRegistration = new(false)
	f.e.MustDo("PATCH", "/api/v1/dmss/"+dmsID.String(), f.e.AdminToken, apitypes.UpdateDMSRequest{Policy: &pol}, nil, 200)
	unreg := sign("d3.plant.example")
	if r := onlyRejection(t, f.apply(dmsID, issuedRec("issued-unknown", "dev-unknown", ec.GetCaId(), unreg.Raw))); !r.GetPermanent() || !strings.Contains(r.GetReason(), "device dev-unknown is not registered") {
		t.Errorf("unknown device without JIT: %v", r)
	}
	if n := f.count(`SELECT count(*) FROM certificates WHERE serial = $1`, strings.ToLower(unreg.SerialNumber.Text(16))); n != 0 {
		t.Error("a refused certificate was recorded")
	}

	// A certificate not from this DMS's edge CA.
	if r := onlyRejection(t, f.apply(dmsID, issuedRec("issued-root", "dev-offline-1", root.ID, leaf.Raw))); !r.GetPermanent() {
		t.Errorf("certificate reported under a CA that is not an edge CA: %v", r)
	}

	// A revoked edge CA: nothing it signed is accepted any more.
	late := sign("d4.plant.example")
	f.e.MustDo("POST", "/api/v1/cas/"+ec.GetCaId()+"/revoke", f.e.AdminToken, apitypes.RevokeRequest{Reason: "keyCompromise"}, nil, 200)
	if r := onlyRejection(t, f.apply(dmsID, issuedRec("issued-late", "dev-offline-1", ec.GetCaId(), late.Raw))); !r.GetPermanent() || !strings.Contains(r.GetReason(), "revoked") {
		t.Errorf("certificate of a revoked edge CA: %v", r)
	}
}

// TestServerCertificateRecords: the agent's EST server certificate comes
// from the DMS manager CA with the DMS id as common name, the CSR's DNS
// and IP names only, serverAuth and 90 days; the same certificate again
// on redelivery; too many names are refused.
func TestServerCertificateRecords(t *testing.T) {
	f := newFixture(t)
	dmsID := f.dms(apitypes.CreateDMSRequest{Name: "gw-est"})
	key := newKey(t)
	rec := serverRec("server-cert-1", csrWith(t, key, "ignored", []string{"gw-est.factory.example", "gw-est"}, []net.IP{net.ParseIP("192.0.2.10")}, "spiffe://example/ignored"))
	d := f.apply(dmsID, rec)
	if len(d.GetAck().GetRecordIds()) != 1 || len(d.GetUpdates()) != 1 || d.GetUpdates()[0].GetServerCertificate() == nil {
		t.Fatalf("server certificate request: %v", d)
	}
	sc := d.GetUpdates()[0].GetServerCertificate()
	cert := mustParse(t, sc.GetCertificateDer())
	mgr := mustParse(t, sc.GetChainDers()[0])
	switch {
	case cert.Subject.CommonName != dmsID.String():
		t.Errorf("common name %q, want the DMS id", cert.Subject.CommonName)
	case !slices.Equal(cert.DNSNames, []string{"gw-est.factory.example", "gw-est"}) || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("192.0.2.10")) || len(cert.URIs) != 0:
		t.Errorf("names: dns %v ip %v uri %v", cert.DNSNames, cert.IPAddresses, cert.URIs)
	case !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}):
		t.Errorf("extended key usage %v, want serverAuth", cert.ExtKeyUsage)
	case time.Until(cert.NotAfter) > 90*24*time.Hour || time.Until(cert.NotAfter) < 89*24*time.Hour:
		t.Errorf("not after %v, want in 90 days", cert.NotAfter)
	case cert.CheckSignatureFrom(mgr) != nil || !strings.Contains(mgr.Subject.CommonName, "DMS Manager"):
		t.Errorf("not issued by the DMS manager CA (%s)", mgr.Subject)
	case !cert.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()):
		t.Error("certificate for another key")
	}
	serial := strings.ToLower(cert.SerialNumber.Text(16))
	var c apitypes.Certificate
	f.e.MustDo("GET", "/api/v1/certificates/"+serial, f.e.AdminToken, nil, &c, 200)
	if c.Profile != "est-server" || c.DMSID != dmsID.String() {
		t.Errorf("registry: profile %q, dms %q", c.Profile, c.DMSID)
	}
	// Redelivered: the same certificate.
	d = f.apply(dmsID, rec)
	if len(d.GetUpdates()) != 1 || !cert.Equal(mustParse(t, d.GetUpdates()[0].GetServerCertificate().GetCertificateDer())) {
		t.Fatalf("redelivered server certificate request: %v", d)
	}
	if n := f.count(`SELECT count(*) FROM certificates WHERE dms_id = $1 AND profile = 'est-server'`, dmsID); n != 1 {
		t.Errorf("%d server certificates, want 1", n)
	}
	// 21 names: refused for good; none: too.
	var many []string
	for i := range 21 {
		many = append(many, "n"+uuid.NewString()[:6]+string(rune('a'+i))+".example")
	}
	if r := onlyRejection(t, f.apply(dmsID, serverRec("server-cert-many", csrWith(t, newKey(t), "x", many, nil)))); !r.GetPermanent() || !strings.Contains(r.GetReason(), "at most 20") {
		t.Errorf("21 names: %v", r)
	}
	if r := onlyRejection(t, f.apply(dmsID, serverRec("server-cert-none", csrWith(t, newKey(t), "x", nil, nil)))); !r.GetPermanent() {
		t.Errorf("no names: %v", r)
	}
}
