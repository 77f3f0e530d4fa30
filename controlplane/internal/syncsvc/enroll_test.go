package syncsvc_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/proto/syncpb"
)

// TestEnrollmentRequestRecords drives forwarded enrollments: how the CA
// and profile are chosen (request, label, first authorized CA), the
// device rules (just-in-time registration, another DMS's device, a
// decommissioned one, assignment of a device of no DMS), re-enrollment
// checks, refusals as permanent EnrollmentResult errors on an acked
// record, and redeliveries answered with the same certificate or error,
// never a second certificate.
func TestEnrollmentRequestRecords(t *testing.T) {
	f := newFixture(t)
	root := f.ca("en-root", "")
	first := f.ca("en-first", root.ID)
	second := f.ca("en-second", root.ID)
	unauthorized := f.ca("en-unauthorized", root.ID)
	dmsID := f.dms(apitypes.CreateDMSRequest{Name: "gw-enroll", AuthorizedCAs: []string{first.ID, second.ID}, Policy: &apitypes.DMSPolicy{
		Mode: "online", Labels: []apitypes.DMSLabel{{Name: "second", CAID: second.ID}}}})
	otherDMS := f.dms(apitypes.CreateDMSRequest{Name: "gw-enroll-other"})

	// issuedBy checks a successful result: signed by ca, chain ca then root.
	issuedBy := func(t *testing.T, r *syncpb.EnrollmentResult, ca apitypes.CA, key *ecdsa.PrivateKey) *x509.Certificate {
		t.Helper()
		if r.GetError() != "" || r.GetPermanent() {
			t.Fatalf("enrollment refused: %q", r.GetError())
		}
		cert := mustParse(t, r.GetCertificateDer())
		if len(r.GetChainDers()) != 2 || !pemCert(t, ca.CertPEM).Equal(mustParse(t, r.GetChainDers()[0])) || !pemCert(t, root.CertPEM).Equal(mustParse(t, r.GetChainDers()[1])) {
			t.Fatalf("chain of %d certificates, want %s then the root", len(r.GetChainDers()), ca.Name)
		}
		if err := cert.CheckSignatureFrom(mustParse(t, r.GetChainDers()[0])); err != nil {
			t.Fatalf("not signed by %s: %v", ca.Name, err)
		}
		if !cert.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
			t.Fatal("certificate for another key")
		}
		return cert
	}
	refused := func(t *testing.T, d *syncpb.Down, want string) {
		t.Helper()
		r := onlyResult(t, d)
		if !r.GetPermanent() || !strings.Contains(r.GetError(), want) || len(r.GetCertificateDer()) != 0 {
			t.Fatalf("got result %v, want a permanent error containing %q", r, want)
		}
	}

	// No CA, no label: the first authorized CA; the device is registered
	// just in time, assigned to the DMS, with the certificate in its slot.
	key1 := newKey(t)
	rec1 := enrollRec("enroll-1", "dev-1", csrFor(t, key1, "dev-1"))
	d := f.apply(dmsID, rec1)
	r := onlyResult(t, d)
	if r.GetRequestId() != "req-enroll-1" || !strings.HasPrefix(d.GetUpdates()[0].GetUpdateId(), "enroll-") {
		t.Errorf("result for request %q, update id %q", r.GetRequestId(), d.GetUpdates()[0].GetUpdateId())
	}
	cert1 := issuedBy(t, r, first, key1)
	serial1 := strings.ToLower(cert1.SerialNumber.Text(16))
	dev := f.device("dev-1")
	if dev.DMSID != dmsID.String() || len(dev.Slots) != 1 || dev.Slots[0].ActiveSerial != serial1 || dev.Slots[0].CAID != first.ID {
		t.Errorf("device after enrollment: %+v", dev)
	}
	kinds := map[string]bool{}
	for _, ev := range dev.Timeline {
		kinds[ev.Kind] = true
	}
	if !kinds["device.registered"] || !kinds["certificate.issued"] {
		t.Errorf("device timeline %+v, want device.registered and certificate.issued", dev.Timeline)
	}
	var c apitypes.Certificate
	f.e.MustDo("GET", "/api/v1/certificates/"+serial1, f.e.AdminToken, nil, &c, 200)
	if c.DMSID != dmsID.String() || c.DeviceID != "dev-1" || c.Profile != "device" {
		t.Errorf("registry certificate: %+v", c)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'certificate.issue' AND target = $1 AND actor = $2`, serial1, "dms:"+dmsID.String()); n != 1 {
		t.Errorf("%d audit rows for the issuance, want 1", n)
	}

	// Redelivered: the same certificate, nothing issued again.
	if again := onlyResult(t, f.apply(dmsID, rec1)); !cert1.Equal(mustParse(t, again.GetCertificateDer())) {
		t.Error("a redelivered request got another certificate")
	}
	if n := f.count(`SELECT count(*) FROM certificates WHERE device_id = 'dev-1'`); n != 1 {
		t.Errorf("%d certificates for dev-1 after a redelivery, want 1", n)
	}

	// The label's CA; then an explicit ca_id, which wins over the label.
	key2 := newKey(t)
	issuedBy(t, onlyResult(t, f.apply(dmsID, enrollRec("enroll-label", "dev-2", csrFor(t, key2, "dev-2"), func(er *syncpb.EnrollmentRequest) { er.Label = "second" }))), second, key2)
	issuedBy(t, onlyResult(t, f.apply(dmsID, enrollRec("enroll-ca", "dev-2", csrFor(t, key2, "dev-2"), func(er *syncpb.EnrollmentRequest) {
		er.Label, er.CaId = "second", first.ID
	}))), first, key2)

	// Refusals: acked, answered with a permanent error.
	for _, tt := range []struct {
		name, want string
		rec        *syncpb.Record
	}{
		{"unauthorized CA", "not authorized", enrollRec("r-ca", "dev-3", csrFor(t, newKey(t), "d"), func(er *syncpb.EnrollmentRequest) { er.CaId = unauthorized.ID })},
		{"CA id not a UUID", "not authorized", enrollRec("r-ca-bad", "dev-3", csrFor(t, newKey(t), "d"), func(er *syncpb.EnrollmentRequest) { er.CaId = "first" })},
		{"unknown label", "unknown label", enrollRec("r-label", "dev-3", csrFor(t, newKey(t), "d"), func(er *syncpb.EnrollmentRequest) { er.Label = "nope" })},
		{"unknown profile", "unknown profile", enrollRec("r-profile", "dev-3", csrFor(t, newKey(t), "d"), func(er *syncpb.EnrollmentRequest) { er.Profile = "nope" })},
		{"garbage CSR", "", enrollRec("r-csr", "dev-3", []byte("not a csr"))},
		{"reenroll unknown serial", "not known", enrollRec("r-re-unknown", "dev-1", csrFor(t, newKey(t), "d"), func(er *syncpb.EnrollmentRequest) { er.ReenrollSerialHex = "abcdef" })},
		{"reenroll another device's certificate", "not this device's", enrollRec("r-re-other", "dev-2", csrFor(t, newKey(t), "d"), func(er *syncpb.EnrollmentRequest) { er.ReenrollSerialHex = serial1 })},
	} {
		t.Run(tt.name, func(t *testing.T) { refused(t, f.apply(dmsID, tt.rec), tt.want) })
	}
	if n := f.count(`SELECT count(*) FROM devices WHERE id = 'dev-3'`); n != 0 {
		t.Errorf("refused enrollments registered dev-3")
	}

	// A re-enrollment with the device's own certificate.
	key1b := newKey(t)
	reCert := issuedBy(t, onlyResult(t, f.apply(dmsID, enrollRec("enroll-re", "dev-1", csrFor(t, key1b, "dev-1"), func(er *syncpb.EnrollmentRequest) {
		er.ReenrollSerialHex = serial1
	}))), first, key1b)
	if dev := f.device("dev-1"); dev.Slots[0].ActiveSerial != strings.ToLower(reCert.SerialNumber.Text(16)) {
		t.Errorf("after re-enrollment the active certificate is %s", dev.Slots[0].ActiveSerial)
	}
	// ... and with a revoked one.
	f.e.MustDo("POST", "/api/v1/certificates/"+serial1+"/revoke", f.e.AdminToken, apitypes.RevokeRequest{Reason: "superseded"}, nil, 200)
	refused(t, f.apply(dmsID, enrollRec("r-re-revoked", "dev-1", csrFor(t, newKey(t), "d"), func(er *syncpb.EnrollmentRequest) { er.ReenrollSerialHex = serial1 })), "revoked")

	// Devices: another DMS's, a decommissioned one, one of no DMS.
	f.e.MustDo("POST", "/api/v1/devices", f.e.AdminToken, apitypes.RegisterDeviceRequest{ID: "dev-foreign", DMSID: otherDMS.String()}, nil, 201)
	refused(t, f.apply(dmsID, enrollRec("r-foreign", "dev-foreign", csrFor(t, newKey(t), "d"))), "another enrollment point")
	f.e.MustDo("POST", "/api/v1/devices", f.e.AdminToken, apitypes.RegisterDeviceRequest{ID: "dev-gone"}, nil, 201)
	f.e.MustDo("POST", "/api/v1/devices/dev-gone/decommission", f.e.AdminToken, nil, nil, 200)
	refused(t, f.apply(dmsID, enrollRec("r-gone", "dev-gone", csrFor(t, newKey(t), "d"))), "decommissioned")
	f.e.MustDo("POST", "/api/v1/devices", f.e.AdminToken, apitypes.RegisterDeviceRequest{ID: "dev-free"}, nil, 201)
	keyFree := newKey(t)
	issuedBy(t, onlyResult(t, f.apply(dmsID, enrollRec("enroll-free", "dev-free", csrFor(t, keyFree, "dev-free")))), first, keyFree)
	if dev := f.device("dev-free"); dev.DMSID != dmsID.String() {
		t.Errorf("a device of no DMS was not assigned: %+v", dev)
	}

	// A refusal after the device was registered just in time leaves no
	// device behind (the CA cannot sign any more).
	f.e.MustDo("POST", "/api/v1/cas/"+second.ID+"/revoke", f.e.AdminToken, apitypes.RevokeRequest{Reason: "cessationOfOperation"}, nil, 200)
	refused(t, f.apply(dmsID, enrollRec("r-revoked-ca", "dev-late", csrFor(t, newKey(t), "d"), func(er *syncpb.EnrollmentRequest) { er.Label = "second" })), "revoked")
	if n := f.count(`SELECT count(*) FROM devices WHERE id = 'dev-late'`); n != 0 {
		t.Errorf("a refused enrollment left its just-in-time device behind")
	}

	// Without just-in-time registration an unknown device is refused,
	// and a redelivery gets the same error.
	var cur apitypes.DMS
	f.e.MustDo("GET", "/api/v1/dmss/"+dmsID.String(), f.e.AdminToken, nil, &cur, 200)
	pol := cur.Policy
	pol.JITRegistration = new(false)
	f.e.MustDo("PATCH", "/api/v1/dmss/"+dmsID.String(), f.e.AdminToken, apitypes.UpdateDMSRequest{Policy: &pol}, nil, 200)
	unknown := enrollRec("enroll-unknown", "dev-unknown", csrFor(t, newKey(t), "d"))
	d = f.apply(dmsID, unknown)
	refused(t, d, "device dev-unknown is not registered")
	f.e.MustDo("PATCH", "/api/v1/dmss/"+dmsID.String(), f.e.AdminToken, apitypes.UpdateDMSRequest{Policy: &cur.Policy}, nil, 200)
	again := f.apply(dmsID, unknown)
	refused(t, again, "device dev-unknown is not registered")
	if again.GetUpdates()[0].GetUpdateId() != d.GetUpdates()[0].GetUpdateId() {
		t.Errorf("redelivered error update id %s, first %s", again.GetUpdates()[0].GetUpdateId(), d.GetUpdates()[0].GetUpdateId())
	}
	if n := f.count(`SELECT count(*) FROM devices WHERE id = 'dev-unknown'`); n != 0 {
		t.Errorf("the redelivered refused request registered the device")
	}

	// A message of many requests: every one acked and answered once.
	var recs []*syncpb.Record
	for range 40 {
		id := "batch-" + uuid.NewString()[:8]
		recs = append(recs, enrollRec(id, "dev-"+id, csrFor(t, newKey(t), "b")))
	}
	d = f.apply(dmsID, recs...)
	if len(d.GetAck().GetRecordIds()) != 40 || len(d.GetUpdates()) != 40 {
		t.Fatalf("batch: %d acked, %d updates", len(d.GetAck().GetRecordIds()), len(d.GetUpdates()))
	}
}
