package syncsvc_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/syncsvc"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// authzGateway is a local-mode DMS with its edge CA, as the sync link
// sets one up.
type authzGateway struct {
	id   uuid.UUID
	caID string // the edge CA
	edge *issuer.Issuer
}

// gateway creates a local-mode DMS authorized for ca, confined to
// domain, and certifies its edge CA over sync.
func (f *fixture) gateway(name, caID, domain string) authzGateway {
	f.t.Helper()
	id := f.dms(apitypes.CreateDMSRequest{Name: name, AuthorizedCAs: []string{caID}, Policy: &apitypes.DMSPolicy{
		Mode: "local", LocalQuota: 100, EdgeNameConstraints: []string{domain}}})
	key := newKey(f.t)
	d := f.apply(id, edgeRec("edge-"+name, csrFor(f.t, key, "edge"), "initial"))
	if len(d.GetUpdates()) != 1 || d.GetUpdates()[0].GetEdgeCa() == nil {
		f.t.Fatalf("edge CA for %s: %v", name, d)
	}
	ec := d.GetUpdates()[0].GetEdgeCa()
	return authzGateway{id: id, caID: ec.GetCaId(), edge: &issuer.Issuer{Cert: mustParse(f.t, ec.GetCertificateDer()), Signer: key}}
}

// sign issues a device certificate for name from the gateway's edge CA,
// as of at (zero: now).
func (g authzGateway) sign(t *testing.T, name string, at time.Time) *x509.Certificate {
	t.Helper()
	csr, err := x509.ParseCertificateRequest(csrWith(t, newKey(t), name, []string{name}, nil))
	if err != nil {
		t.Fatal(err)
	}
	prof := issuer.DefaultDeviceProfile()
	prof.SANs = issuer.SANPolicy{DNS: []string{"**"}}
	iss := *g.edge
	if !at.IsZero() {
		iss.Now = func() time.Time { return at }
	}
	c, err := iss.Issue(csr, prof, issuer.Request{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSyncAuthorization: a DMS acts over sync only on its own devices and
// through its own edge CA or authorized CAs. Each row sends one record as
// gateway A; the rows that must be refused name something of gateway B
// (its device, its edge CA, its authorized CA) or a CA A was never given,
// and leave nothing in the registry; the allowed rows are the controls
// (the same record about A's own things goes through).
//
// The older tests that check some of these one by one, with more detail:
// TestIssuedCertificateRecords (edgeca_test.go: another DMS's device, a
// CA that is not an edge CA, a revoked edge CA), TestEnrollmentRequestRecords
// (enroll_test.go), TestDeviceEventsInTimeline (device_events_test.go:
// events about another DMS's devices stay out of their timeline) and, at
// the API, TestDMSMutualTLSIdentity and TestAuthorizationProperties.
func TestSyncAuthorization(t *testing.T) {
	f := newFixture(t)
	root := f.ca("authz-root", "")
	var caA, caB apitypes.CA
	f.e.MustDo("POST", "/api/v1/cas", f.e.AdminToken, apitypes.CreateCARequest{Name: "authz-a", CommonName: "authz-a", ParentID: root.ID, MaxPathLen: new(1)}, &caA, 201)
	f.e.MustDo("POST", "/api/v1/cas", f.e.AdminToken, apitypes.CreateCARequest{Name: "authz-b", CommonName: "authz-b", ParentID: root.ID, MaxPathLen: new(1)}, &caB, 201)
	a := f.gateway("gw-authz-a", caA.ID, "a.example")
	b := f.gateway("gw-authz-b", caB.ID, "b.example")
	f.e.MustDo("POST", "/api/v1/devices", f.e.AdminToken, apitypes.RegisterDeviceRequest{ID: "dev-of-b", DMSID: b.id.String()}, nil, 201)
	f.e.MustDo("POST", "/api/v1/devices", f.e.AdminToken, apitypes.RegisterDeviceRequest{ID: "dev-of-a", DMSID: a.id.String()}, nil, 201)

	enrollCSR := func(name string) []byte { return csrWith(t, newKey(t), name, []string{name}, nil) }
	withCA := func(id string) func(*syncpb.EnrollmentRequest) {
		return func(er *syncpb.EnrollmentRequest) { er.CaId = id }
	}
	type outcome int
	const (
		allowed  outcome = iota
		rejected         // a permanent Rejection of the record
		refused          // acked with an EnrollmentResult carrying the error
	)
	cases := []struct {
		name string
		rec  *syncpb.Record
		want outcome
		why  string // in the rejection or error
	}{
		{"issued: own edge CA, own device", issuedRec("iss-own", "dev-of-a", a.caID, a.sign(t, "d1.a.example", time.Time{}).Raw), allowed, ""},
		{"issued: another DMS's device", issuedRec("iss-foreign-dev", "dev-of-b", a.caID, a.sign(t, "d2.a.example", time.Time{}).Raw), rejected, "another enrollment point"},
		{"issued: another DMS's edge CA", issuedRec("iss-foreign-edge", "dev-of-a", b.caID, b.sign(t, "d3.b.example", time.Time{}).Raw), rejected, "not this DMS's edge CA"},
		{"issued: own certificate under another DMS's edge CA id", issuedRec("iss-mislabelled", "dev-of-a", b.caID, a.sign(t, "d4.a.example", time.Time{}).Raw), rejected, "not this DMS's edge CA"},
		{"issued: an authorized CA, not an edge CA", issuedRec("iss-authorized", "dev-of-a", caA.ID, a.sign(t, "d5.a.example", time.Time{}).Raw), rejected, "not this DMS's edge CA"},
		{"enroll: own device, own authorized CA", enrollRec("enr-own", "dev-of-a", enrollCSR("d6.a.example"), withCA(caA.ID)), allowed, ""},
		{"enroll: another DMS's device", enrollRec("enr-foreign-dev", "dev-of-b", enrollCSR("d7.a.example")), refused, "another enrollment point"},
		{"enroll: another DMS's authorized CA", enrollRec("enr-foreign-ca", "dev-of-a", enrollCSR("d8.a.example"), withCA(caB.ID)), refused, "not authorized"},
		{"enroll: a CA never authorized (the root)", enrollRec("enr-root", "dev-of-a", enrollCSR("d9.a.example"), withCA(root.ID)), refused, "not authorized"},
		{"enroll: another DMS's edge CA", enrollRec("enr-foreign-edge", "dev-of-a", enrollCSR("d10.a.example"), withCA(b.caID)), refused, "not authorized"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.count(`SELECT count(*) FROM certificates`)
			d := f.apply(a.id, tc.rec)
			var got outcome
			var why string
			switch {
			case len(d.GetAck().GetRejections()) == 1:
				got, why = rejected, d.GetAck().GetRejections()[0].GetReason()
				if !d.GetAck().GetRejections()[0].GetPermanent() {
					t.Errorf("rejection %q is not permanent", why)
				}
			case len(d.GetUpdates()) == 1 && d.GetUpdates()[0].GetEnrollmentResult().GetError() != "":
				got, why = refused, d.GetUpdates()[0].GetEnrollmentResult().GetError()
			case len(d.GetAck().GetRecordIds()) == 1:
				got = allowed
			default:
				t.Fatalf("unexpected reply %v", d)
			}
			if got != tc.want || !strings.Contains(why, tc.why) {
				t.Fatalf("got outcome %d (%q), want %d (%q)", got, why, tc.want, tc.why)
			}
			after := f.count(`SELECT count(*) FROM certificates`)
			if tc.want != allowed && after != before {
				t.Errorf("a refused record left %d certificates in the registry", after-before)
			}
			if tc.want == allowed && after != before+1 {
				t.Errorf("an allowed record left %d certificates in the registry, want 1", after-before)
			}
		})
	}
	if n := f.count(`SELECT count(*) FROM devices WHERE id = 'dev-of-b' AND dms_id = $1`, b.id); n != 1 {
		t.Error("gateway A's records moved gateway B's device")
	}
}

// TestStolenGatewayRecordsRefused is the registry's side of the
// stolen-gateway scenario (testbed/scenarios TestStolenGateway): after
// the operator disables (revokes) a DMS, records of certificates its
// edge CA signed after the revocation do not get in through the sync
// apply path, whatever the state of the DMS row:
//
//   - while the DMS is disabled, Apply acknowledges nothing: an agent of
//     protocol 4 or later is answered with one DMSDisabled update (the
//     time its identity was revoked), an older one gets ErrUnknownDMS
//     (the consumer drops the message);
//   - with the DMS row set back to active (an insider, a restore), the
//     record reaches applyIssued and is refused for good: the edge CA is
//     revoked, and a certificate whose validity starts after the
//     revocation is named as issued after it.
//
// Nothing of it is in the registry afterwards.
func TestStolenGatewayRecordsRefused(t *testing.T) {
	f := newFixture(t)
	root := f.ca("stolen-root", "")
	g := f.gateway("gw-stolen", root.ID, "stolen.example")
	if d := f.apply(g.id, issuedRec("before", "dev-before", g.caID, g.sign(t, "d0.stolen.example", time.Time{}).Raw)); len(d.GetAck().GetRecordIds()) != 1 {
		t.Fatalf("a certificate signed before the revocation: %v", d)
	}
	f.e.MustDo("POST", "/api/v1/dmss/"+g.id.String()+"/disable", f.e.AdminToken, nil, nil, 200)
	var edge apitypes.CA
	f.e.MustDo("GET", "/api/v1/cas/"+g.caID, f.e.AdminToken, nil, &edge, 200)
	if edge.Status != "revoked" || edge.RevokedAt == nil {
		t.Fatalf("edge CA after the disable: %s (revoked at %v)", edge.Status, edge.RevokedAt)
	}
	// The backdate (issuer.DefaultBackdate) puts NotBefore 5 minutes
	// before the signing time: sign 10 minutes after the revocation for
	// a certificate that starts after it, and just after it for one that
	// does not.
	later := g.sign(t, "d1.stolen.example", edge.RevokedAt.Add(10*time.Minute))
	soon := g.sign(t, "d2.stolen.example", edge.RevokedAt.Add(time.Second))
	serials := []string{strings.ToLower(later.SerialNumber.Text(16)), strings.ToLower(soon.SerialNumber.Text(16))}

	var logged bytes.Buffer
	f.a.Log = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reply, err := f.a.Apply(f.ctx, g.id, up(g.id.String(), issuedRec("after-1", "dev-after", g.caID, later.Raw)))
	if err != nil {
		t.Fatalf("a record from the disabled DMS: %v", err)
	}
	if d := reply.GetDown(); d.GetAck() != nil || len(d.GetUpdates()) != 1 || d.GetUpdates()[0].GetDmsDisabled() == nil {
		t.Errorf("the answer to a disabled DMS: got %v, want one DMSDisabled update and no ack", reply)
	} else if at := d.GetUpdates()[0].GetDmsDisabled().GetDisabledAtUnixMs(); at < edge.RevokedAt.Add(-time.Second).UnixMilli() || at > edge.RevokedAt.Add(time.Second).UnixMilli() {
		t.Errorf("DMSDisabled says disabled at %v, the edge CA was revoked at %v", time.UnixMilli(at), edge.RevokedAt)
	}
	if err := syncproto.Validate(reply); err != nil {
		t.Errorf("the DMSDisabled answer does not validate: %v", err)
	}
	// A disabled DMS's agent heartbeats until it is shut down: one
	// warning an hour per DMS, not one per message.
	for i := 0; i < 3; i++ {
		if _, err := f.a.Apply(f.ctx, g.id, up(g.id.String())); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logged.String(), "answered DMSDisabled"); n != 1 {
		t.Errorf("four messages from the disabled DMS gave %d warnings, want 1 (those after the first come at most once an hour):\n%s", n, logged.String())
	}
	old := up(g.id.String(), issuedRec("after-1", "dev-after", g.caID, later.Raw))
	old.ProtocolVersion = 3
	if _, err := f.a.Apply(f.ctx, g.id, old); !errors.Is(err, syncsvc.ErrUnknownDMS) {
		t.Errorf("a record from the disabled DMS in protocol 3: got %v, want ErrUnknownDMS", err)
	}

	if _, err := f.e.App.Pool.Exec(f.ctx, `UPDATE dmss SET status = 'active' WHERE id = $1`, g.id); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		why  string
	}{
		{"valid-from-after-the-revocation", later, "issued after the edge CA was revoked"},
		{"signed-just-after-the-revocation", soon, "the edge CA is revoked"},
	} {
		r := onlyRejection(t, f.apply(g.id, issuedRec("after-"+tc.name, "dev-after", g.caID, tc.cert.Raw)))
		if !r.GetPermanent() || !strings.Contains(r.GetReason(), tc.why) {
			t.Errorf("%s: got %v, want a permanent rejection saying %q", tc.name, r, tc.why)
		}
	}
	if n := f.count(`SELECT count(*) FROM certificates WHERE serial = ANY($1)`, serials); n != 0 {
		t.Errorf("the registry holds %d certificates signed after the revocation", n)
	}
	if n := f.count(`SELECT count(*) FROM devices WHERE id = 'dev-after'`); n != 0 {
		t.Error("a refused record registered its device")
	}
}
