package syncsvc_test

import (
	"bytes"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/crl"
	"github.com/outpost-pki/outpost/controlplane/internal/syncsvc"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// TestHeartbeatSendsState: a heartbeat whose policy digest differs gets
// the CA bundles then the policy; one with the current digest and CRLs
// gets no reply; newer full CRLs of the authorized CAs are sent by
// number; a policy change is a new digest with a higher version; an
// agent of protocol version 1 gets no state.
func TestHeartbeatSendsState(t *testing.T) {
	f := newFixture(t)
	root := f.ca("hb-root", "")
	inter := f.ca("hb-inter", root.ID)
	other := f.ca("hb-other", "")
	dmsID := f.dms(apitypes.CreateDMSRequest{Name: "gw-hb", AuthorizedCAs: []string{inter.ID, other.ID}, Policy: &apitypes.DMSPolicy{
		Mode: "online", DeviceAuth: "webhook", WebhookURL: "https://auth.example/devices", ReenrollWindowDays: 20,
		Labels:              []apitypes.DMSLabel{{Name: "other", CAID: other.ID, Profile: "device"}},
		EdgeNameConstraints: []string{"line1.example"}, OnlineWaitMs: new(1500), JITRegistration: new(false),
	}})

	// An agent holding nothing: bundles then policy, nothing else.
	reply := f.heartbeat(dmsID, &syncpb.Heartbeat{AgentVersion: "test"})
	if reply.GetProtocolVersion() != syncproto.ProtocolVersion || reply.GetDown().GetAck() != nil {
		t.Fatalf("reply: %v", reply)
	}
	ups := reply.GetDown().GetUpdates()
	if len(ups) != 3 || ups[0].GetCaBundle() == nil || ups[1].GetCaBundle() == nil || ups[2].GetPolicy() == nil {
		t.Fatalf("got updates %v, want two bundles then the policy", ups)
	}
	for i, want := range []struct {
		ca    string
		chain []string
	}{{inter.ID, []string{inter.CertPEM, root.CertPEM}}, {other.ID, []string{other.CertPEM}}} {
		b := ups[i].GetCaBundle()
		if b.GetCaId() != want.ca || len(b.GetCertificateDers()) != len(want.chain) || !strings.HasPrefix(ups[i].GetUpdateId(), "bundle-"+want.ca+"-") {
			t.Fatalf("bundle %d: id %s, ca %s, %d certificates", i, ups[i].GetUpdateId(), b.GetCaId(), len(b.GetCertificateDers()))
		}
		for j, p := range want.chain {
			if !bytes.Equal(b.GetCertificateDers()[j], pemCert(t, p).Raw) {
				t.Errorf("bundle %s: certificate %d is not the expected one", want.ca, j)
			}
		}
	}
	p := ups[2].GetPolicy()
	st, err := syncsvc.DMSState(f.ctx, f.e.App.Pool, dmsID)
	if err != nil {
		t.Fatal(err)
	}
	var dms apitypes.DMS
	f.e.MustDo("GET", "/api/v1/dmss/"+dmsID.String(), f.e.AdminToken, nil, &dms, 200)
	checks := []struct {
		name      string
		got, want any
	}{
		{"mode", p.GetMode(), "online"},
		{"device_auth", p.GetDeviceAuth(), "webhook"},
		{"profile", p.GetProfile(), "device"},
		{"reenroll window", p.GetReenrollWindowSeconds(), int64(20 * 86400)},
		{"authorized CAs", strings.Join(p.GetAuthorizedCaIds(), ","), inter.ID + "," + other.ID},
		{"labels", len(p.GetLabels()), 1},
		{"label", p.GetLabels()[0].GetName() + "/" + p.GetLabels()[0].GetCaId() + "/" + p.GetLabels()[0].GetProfile(), "other/" + other.ID + "/device"},
		{"edge CA validity", p.GetEdgeCaValiditySeconds(), int64(30 * 86400)},
		{"name constraints", strings.Join(p.GetEdgeNameConstraints(), ","), "line1.example"},
		{"webhook", p.GetWebhookUrl(), "https://auth.example/devices"},
		{"online wait", p.GetOnlineWaitMs(), int64(1500)},
		{"jit", p.GetJitRegistration(), false},
		{"digest", bytes.Equal(p.GetStateDigest(), st.Digest) && len(st.Digest) == 32, true},
		{"update id", ups[2].GetUpdateId(), "policy-" + hex.EncodeToString(st.Digest[:16])},
		{"version", p.GetVersion() > uint64(time.Now().Add(-time.Hour).UnixMilli()), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("policy %s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if f.t.Failed() {
		t.FailNow()
	}
	digest := p.GetStateDigest()

	// Up to date: no reply at all.
	if r := f.heartbeat(dmsID, &syncpb.Heartbeat{PolicyDigest: digest}); r != nil {
		t.Fatalf("heartbeat with the current digest got %v", r)
	}

	// CRLs: the latest full CRL of each authorized CA the agent lacks.
	cs := &crl.Service{Reg: f.e.App.Svc.Reg, Keys: f.e.App.Keys, BaseURL: f.e.URL}
	interCRL, err := cs.GenerateFull(f.ctx, uuid.MustParse(inter.ID))
	if err != nil {
		t.Fatal(err)
	}
	otherCRL, err := cs.GenerateFull(f.ctx, uuid.MustParse(other.ID))
	if err != nil {
		t.Fatal(err)
	}
	reply = f.heartbeat(dmsID, &syncpb.Heartbeat{PolicyDigest: digest, Crls: []*syncpb.CRLState{{CaId: inter.ID, CrlNumber: interCRL.Number}}})
	ups = reply.GetDown().GetUpdates()
	if len(ups) != 1 || ups[0].GetCrl().GetCaId() != other.ID || !bytes.Equal(ups[0].GetCrl().GetCrlDer(), otherCRL.DER) || ups[0].GetCrl().GetDelta() {
		t.Fatalf("got %v, want the other CA's CRL only", ups)
	}
	if want := "crl-" + other.ID + "-" + strconv.FormatInt(otherCRL.Number, 10); ups[0].GetUpdateId() != want {
		t.Errorf("crl update id %s, want %s", ups[0].GetUpdateId(), want)
	}
	newer, err := cs.GenerateFull(f.ctx, uuid.MustParse(inter.ID))
	if err != nil {
		t.Fatal(err)
	}
	held := []*syncpb.CRLState{{CaId: inter.ID, CrlNumber: interCRL.Number}, {CaId: other.ID, CrlNumber: otherCRL.Number}}
	reply = f.heartbeat(dmsID, &syncpb.Heartbeat{PolicyDigest: digest, Crls: held})
	if ups = reply.GetDown().GetUpdates(); len(ups) != 1 || !bytes.Equal(ups[0].GetCrl().GetCrlDer(), newer.DER) {
		t.Fatalf("got %v, want the newer CRL of %s", ups, inter.ID)
	}
	held[0].CrlNumber = newer.Number
	if r := f.heartbeat(dmsID, &syncpb.Heartbeat{PolicyDigest: digest, Crls: held}); r != nil {
		t.Fatalf("agent up to date got %v", r)
	}

	// A heartbeat with a record: ack and state in one message.
	reply = f.heartbeat(dmsID, &syncpb.Heartbeat{}, &syncpb.Record{RecordId: "ev-1", Payload: &syncpb.Record_Event{Event: &syncpb.Event{Kind: "test"}}})
	if d := reply.GetDown(); len(d.GetAck().GetRecordIds()) != 1 || len(d.GetUpdates()) != 5 {
		t.Fatalf("heartbeat with a record from an agent holding nothing: %v", d)
	}

	// A policy change: a new digest and a higher version.
	var upd apitypes.DMS
	pol := dms.Policy
	pol.Mode = "queued"
	f.e.MustDo("PATCH", "/api/v1/dmss/"+dmsID.String(), f.e.AdminToken, apitypes.UpdateDMSRequest{Policy: &pol}, &upd, 200)
	reply = f.heartbeat(dmsID, &syncpb.Heartbeat{PolicyDigest: digest, Crls: held})
	ups = reply.GetDown().GetUpdates()
	if len(ups) != 3 || ups[2].GetPolicy().GetMode() != "queued" || ups[2].GetPolicy().GetVersion() <= p.GetVersion() || bytes.Equal(ups[2].GetPolicy().GetStateDigest(), digest) {
		t.Fatalf("after a policy change got %v", ups)
	}

	// An agent of version 1 cannot echo a digest: it gets no state.
	env := up(dmsID.String())
	env.ProtocolVersion = 1
	env.GetUp().Heartbeat = &syncpb.Heartbeat{ProtocolVersion: 1}
	if r := f.send(dmsID, env); r != nil {
		t.Fatalf("version 1 heartbeat got %v", r)
	}
}
