package syncsvc_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/syncsvc"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// fixture is a control plane with an Applier that can issue, driven
// message by message as the sync consumer would.
type fixture struct {
	t   *testing.T
	e   *cptest.Env
	ctx context.Context
	a   *syncsvc.Applier
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	e := cptest.Start(t, nil)
	return &fixture{t: t, e: e, ctx: context.Background(), a: &syncsvc.Applier{Reg: e.App.Svc.Reg, Svc: e.App.Svc}}
}

// ca creates a CA through the API (a root when parentID is empty).
func (f *fixture) ca(name, parentID string) apitypes.CA {
	f.t.Helper()
	var ca apitypes.CA
	f.e.MustDo("POST", "/api/v1/cas", f.e.AdminToken, apitypes.CreateCARequest{Name: name, CommonName: name, ParentID: parentID}, &ca, 201)
	return ca
}

// dms creates a DMS through the API and bootstraps it (active).
func (f *fixture) dms(req apitypes.CreateDMSRequest) uuid.UUID {
	f.t.Helper()
	var d apitypes.CreateDMSResponse
	f.e.MustDo("POST", "/api/v1/dmss", f.e.AdminToken, req, &d, 201)
	key := newKey(f.t)
	boot, err := f.e.App.Svc.BootstrapDMS(f.ctx, d.BootstrapToken, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrFor(f.t, key, "x")}))
	if err != nil {
		f.t.Fatal(err)
	}
	return boot.DMSID
}

// send applies env and checks that the reply is a valid down message
// within the protocol's limits (what the consumer would publish).
func (f *fixture) send(dmsID uuid.UUID, env *syncpb.Envelope) *syncpb.Envelope {
	f.t.Helper()
	reply, err := f.a.Apply(f.ctx, dmsID, env)
	if err != nil {
		f.t.Fatal(err)
	}
	if reply != nil {
		if _, err := syncproto.Marshal(reply); err != nil {
			f.t.Fatalf("the reply would not be sent: %v", err)
		}
	}
	return reply
}

// apply sends records and returns the down message (nil if none).
func (f *fixture) apply(dmsID uuid.UUID, recs ...*syncpb.Record) *syncpb.Down {
	f.t.Helper()
	return f.send(dmsID, up(dmsID.String(), recs...)).GetDown()
}

// heartbeat sends a heartbeat alone (and records, if any).
func (f *fixture) heartbeat(dmsID uuid.UUID, hb *syncpb.Heartbeat, recs ...*syncpb.Record) *syncpb.Envelope {
	f.t.Helper()
	env := up(dmsID.String(), recs...)
	if hb.ProtocolVersion == 0 {
		hb.ProtocolVersion = syncproto.ProtocolVersion
	}
	env.GetUp().Heartbeat = hb
	return f.send(dmsID, env)
}

// device gets a device with its slots and timeline.
func (f *fixture) device(id string) apitypes.Device {
	f.t.Helper()
	var d apitypes.Device
	f.e.MustDo("GET", "/api/v1/devices/"+id, f.e.AdminToken, nil, &d, 200)
	return d
}

func (f *fixture) count(sql string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.e.App.Pool.QueryRow(f.ctx, sql, args...).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// csrWith makes a CSR with SANs.
func csrWith(t *testing.T, key crypto.Signer, cn string, dns []string, ips []net.IP, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: dns, IPAddresses: ips}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func enrollRec(id, device string, csr []byte, set ...func(*syncpb.EnrollmentRequest)) *syncpb.Record {
	er := &syncpb.EnrollmentRequest{RequestId: "req-" + id, CsrDer: csr, DeviceId: device, ReceivedAtUnixMs: time.Now().UnixMilli()}
	for _, s := range set {
		s(er)
	}
	return &syncpb.Record{RecordId: id, DeviceId: device, Payload: &syncpb.Record_EnrollmentRequest{EnrollmentRequest: er}}
}

func edgeRec(id string, csr []byte, reason string) *syncpb.Record {
	return &syncpb.Record{RecordId: id, Payload: &syncpb.Record_EdgeCaRequest{EdgeCaRequest: &syncpb.EdgeCARequest{CsrDer: csr, Reason: reason}}}
}

func serverRec(id string, csr []byte) *syncpb.Record {
	return &syncpb.Record{RecordId: id, Payload: &syncpb.Record_ServerCertificateRequest{ServerCertificateRequest: &syncpb.ServerCertificateRequest{CsrDer: csr}}}
}

func issuedRec(id, device, caID string, der []byte) *syncpb.Record {
	return &syncpb.Record{RecordId: id, DeviceId: device, Payload: &syncpb.Record_IssuedCertificate{IssuedCertificate: &syncpb.IssuedCertificate{
		CertificateDer: der, CaId: caID, DeviceId: device, RequestId: "req-" + id, IssuedAtUnixMs: time.Now().UnixMilli()}}}
}

// onlyResult returns the single EnrollmentResult of a down message that
// acked one record.
func onlyResult(t *testing.T, d *syncpb.Down) *syncpb.EnrollmentResult {
	t.Helper()
	if len(d.GetAck().GetRecordIds()) != 1 || len(d.GetAck().GetRejections()) != 0 || len(d.GetUpdates()) != 1 || d.GetUpdates()[0].GetEnrollmentResult() == nil {
		t.Fatalf("want one ack and one enrollment result, got %v", d)
	}
	return d.GetUpdates()[0].GetEnrollmentResult()
}

// onlyRejection returns the single rejection of a down message.
func onlyRejection(t *testing.T, d *syncpb.Down) *syncpb.Rejection {
	t.Helper()
	if len(d.GetAck().GetRejections()) != 1 || len(d.GetAck().GetRecordIds()) != 0 || len(d.GetUpdates()) != 0 {
		t.Fatalf("want one rejection and nothing else, got %v", d)
	}
	return d.GetAck().GetRejections()[0]
}

func pemCert(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatal("no PEM block")
	}
	return mustParse(t, b.Bytes)
}
