package syncproto_test

import (
	"bytes"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

const testDMS = "0190f3a2-7c4e-7b1d-9a6f-3c2e1d0b9a88"

// Stand-ins for DER: the codec caps sizes but does not parse DER.
var (
	csrDER  = bytes.Repeat([]byte{0x30}, 400)
	certDER = bytes.Repeat([]byte{0x31}, 700)
	caDER   = bytes.Repeat([]byte{0x32}, 900)
	crlDER  = bytes.Repeat([]byte{0x33}, 2000)
)

func envelope(body any) *syncpb.Envelope {
	e := &syncpb.Envelope{
		MessageId:       "0190f3a2-8000-7000-8000-000000000001",
		DmsId:           testDMS,
		SentAtUnixMs:    1795000000000,
		ProtocolVersion: syncproto.ProtocolVersion,
	}
	switch b := body.(type) {
	case *syncpb.Up:
		e.Body = &syncpb.Envelope_Up{Up: b}
	case *syncpb.Down:
		e.Body = &syncpb.Envelope_Down{Down: b}
	}
	return e
}

// upRecords has one record of every kind, in the order of the oneof.
func upRecords() []*syncpb.Record {
	return []*syncpb.Record{
		{RecordId: "r-enroll", DeviceId: "dev-1", Payload: &syncpb.Record_EnrollmentRequest{EnrollmentRequest: &syncpb.EnrollmentRequest{
			RequestId: "req-1", CsrDer: csrDER, Label: "line2", Profile: "device", CaId: "ca-devices",
			DeviceId: "dev-1", ReceivedAtUnixMs: 1794999990000,
		}}},
		{RecordId: "r-issued", DeviceId: "dev-2", Payload: &syncpb.Record_IssuedCertificate{IssuedCertificate: &syncpb.IssuedCertificate{
			CertificateDer: certDER, CaId: "edge-ca-1", DeviceId: "dev-2", RequestId: "req-2", IssuedAtUnixMs: 1794999991000,
		}}},
		{RecordId: "r-edgeca", Payload: &syncpb.Record_EdgeCaRequest{EdgeCaRequest: &syncpb.EdgeCARequest{
			CsrDer: csrDER, Reason: "initial",
		}}},
		{RecordId: "r-identity", Payload: &syncpb.Record_IdentityRenewal{IdentityRenewal: &syncpb.IdentityRenewal{
			CsrDer: csrDER,
		}}},
		{RecordId: "r-revoked", DeviceId: "dev-3", Payload: &syncpb.Record_RevocationReport{RevocationReport: &syncpb.RevocationReport{
			SerialHex: "1f2e3d4c5b6a", Reason: 1, RevokedAtUnixMs: 1794999992000,
		}}},
		{RecordId: "r-event", DeviceId: "dev-4", Payload: &syncpb.Record_Event{Event: &syncpb.Event{
			Kind: "enroll.refused", DetailJson: `{"why":"unknown device"}`, AtUnixMs: 1794999993000,
		}}},
		{RecordId: "r-servercert", Payload: &syncpb.Record_ServerCertificateRequest{ServerCertificateRequest: &syncpb.ServerCertificateRequest{
			CsrDer: csrDER,
		}}},
		{RecordId: "r-responder", Payload: &syncpb.Record_ResponderCertificate{ResponderCertificate: &syncpb.ResponderCertificate{
			CaId: "edge-ca-2", CertificateDer: certDER,
		}}},
	}
}

func heartbeat() *syncpb.Heartbeat {
	return &syncpb.Heartbeat{
		AgentVersion: "v0.4.0", QueueDepth: 6, IdentityNotAfterUnixMs: 1800000000000,
		EdgeCaNotAfterUnixMs: 1797000000000, LastSyncUnixMs: 1794999000000,
		ProtocolVersion: syncproto.ProtocolVersion, PolicyDigest: make([]byte, 32),
		Crls: []*syncpb.CRLState{{CaId: "ca-devices", CrlNumber: 12}}, ServerCertNotAfterUnixMs: 1797000000000,
	}
}

// fullUp is an Up envelope with a record of every kind and a heartbeat.
func fullUp() *syncpb.Envelope {
	return envelope(&syncpb.Up{Records: upRecords(), Heartbeat: heartbeat()})
}

// downUpdates has one update of every kind, in the order of the oneof.
func downUpdates() []*syncpb.Update {
	return []*syncpb.Update{
		{UpdateId: "u-policy", Payload: &syncpb.Update_Policy{Policy: &syncpb.Policy{
			Mode: "local", DeviceAuth: "client_cert", Profile: "device", ReenrollWindowSeconds: 14 * 86400,
			LocalQuota: 1000, BootstrapCaDers: [][]byte{caDER}, AuthorizedCaIds: []string{"ca-devices", "ca-sensors"}, Version: 7,
			Labels: []*syncpb.Label{{Name: "line2", CaId: "ca-sensors", Profile: "sensor"}}, EdgeCaValiditySeconds: 30 * 86400,
			EdgeNameConstraints: []string{"factory.example", "10.0.0.0/8"}, OnlineWaitMs: 5000, JitRegistration: true, StateDigest: make([]byte, 32),
		}}},
		{UpdateId: "u-bundle", Payload: &syncpb.Update_CaBundle{CaBundle: &syncpb.CABundle{
			CertificateDers: [][]byte{caDER, certDER}, CaId: "ca-devices",
		}}},
		{UpdateId: "u-crl", Payload: &syncpb.Update_Crl{Crl: &syncpb.CRLUpdate{
			CaId: "ca-devices", CrlDer: crlDER, Delta: true,
		}}},
		{UpdateId: "u-revocation", Payload: &syncpb.Update_Revocation{Revocation: &syncpb.Revocation{
			SerialHex: "abc123", Reason: 4, RevokedAtUnixMs: 1794999994000, CaId: "ca-devices",
		}}},
		{UpdateId: "u-renew", Payload: &syncpb.Update_RenewalIntent{RenewalIntent: &syncpb.RenewalIntent{
			DeviceId: "dev-5", SerialHex: "9", RenewBeforeUnixMs: 1796000000000,
		}}},
		{UpdateId: "u-result", Payload: &syncpb.Update_EnrollmentResult{EnrollmentResult: &syncpb.EnrollmentResult{
			RequestId: "req-1", CertificateDer: certDER, ChainDers: [][]byte{caDER},
		}}},
		{UpdateId: "u-edgeca", Payload: &syncpb.Update_EdgeCa{EdgeCa: &syncpb.EdgeCACertificate{
			CertificateDer: caDER, ChainDers: [][]byte{caDER}, CaId: "edge-ca-2",
		}}},
		{UpdateId: "u-identity", Payload: &syncpb.Update_Identity{Identity: &syncpb.IdentityCertificate{
			CertificateDer: certDER, ChainDers: [][]byte{caDER},
		}}},
		{UpdateId: "u-servercert", Payload: &syncpb.Update_ServerCertificate{ServerCertificate: &syncpb.ServerCertificate{
			CertificateDer: certDER, ChainDers: [][]byte{caDER},
		}}},
		{UpdateId: "u-responder", Payload: &syncpb.Update_ResponderRequest{ResponderRequest: &syncpb.ResponderRequest{
			CaId: "edge-ca-2", CsrDer: csrDER,
		}}},
	}
}

func ack() *syncpb.Ack {
	return &syncpb.Ack{
		RecordIds:  []string{"r-enroll", "r-issued"},
		Rejections: []*syncpb.Rejection{{RecordId: "r-event", Reason: "unknown device dev-4", Permanent: true}},
	}
}

// fullDown is a Down envelope with an ack and an update of every kind.
func fullDown() *syncpb.Envelope {
	return envelope(&syncpb.Down{Ack: ack(), Updates: downUpdates()})
}

// samples are valid envelopes covering every message type: each record
// and update kind alone, heartbeat only, ack only, and the full ones.
func samples() map[string]*syncpb.Envelope {
	s := map[string]*syncpb.Envelope{
		"up/full":           fullUp(),
		"up/heartbeat":      envelope(&syncpb.Up{Heartbeat: heartbeat()}),
		"down/full":         fullDown(),
		"down/ack":          envelope(&syncpb.Down{Ack: ack()}),
		"down/ack-ids-only": envelope(&syncpb.Down{Ack: &syncpb.Ack{RecordIds: []string{"r-1"}}}),
		"down/failed-enrollment": envelope(&syncpb.Down{Updates: []*syncpb.Update{{UpdateId: "u-1",
			Payload: &syncpb.Update_EnrollmentResult{EnrollmentResult: &syncpb.EnrollmentResult{
				RequestId: "req-9", Error: "csr subject does not match current certificate", Permanent: true,
			}}}}}),
	}
	for _, r := range upRecords() {
		s["up/"+recordKind(r)] = envelope(&syncpb.Up{Records: []*syncpb.Record{r}})
	}
	for _, u := range downUpdates() {
		s["down/"+updateKind(u)] = envelope(&syncpb.Down{Updates: []*syncpb.Update{u}})
	}
	// Alone by rule (Validate), so not in fullDown.
	s["down/dms_disabled"] = disabledDown()
	return s
}

func recordKind(r *syncpb.Record) string {
	return string(r.ProtoReflect().WhichOneof(r.ProtoReflect().Descriptor().Oneofs().ByName("payload")).Name())
}

func updateKind(u *syncpb.Update) string {
	return string(u.ProtoReflect().WhichOneof(u.ProtoReflect().Descriptor().Oneofs().ByName("payload")).Name())
}

func clone(e *syncpb.Envelope) *syncpb.Envelope { return proto.Clone(e).(*syncpb.Envelope) }

// disabledDown is the answer to a disabled DMS.
func disabledDown() *syncpb.Envelope {
	return envelope(&syncpb.Down{Updates: []*syncpb.Update{{UpdateId: "dms-disabled",
		Payload: &syncpb.Update_DmsDisabled{DmsDisabled: &syncpb.DMSDisabled{DisabledAtUnixMs: 1_795_000_000_000}}}}})
}
