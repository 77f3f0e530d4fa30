package syncproto_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

func TestRoundTrip(t *testing.T) {
	for name, e := range samples() {
		t.Run(name, func(t *testing.T) {
			b, err := syncproto.Marshal(e)
			if err != nil {
				t.Fatalf("Marshal: got %v, want nil", err)
			}
			got, err := syncproto.Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal: got %v, want nil", err)
			}
			if !proto.Equal(got, e) {
				t.Fatalf("round trip: got %v, want %v", got, e)
			}
			b2, err := syncproto.Marshal(got)
			if err != nil {
				t.Fatalf("Marshal again: got %v, want nil", err)
			}
			if !bytes.Equal(b2, b) {
				t.Fatalf("Marshal is not deterministic: got %x, want %x", b2, b)
			}
		})
	}
}

// TestSamplesCoverEveryKind fails when a payload kind is added to the
// .proto without a sample here (and so without a round trip and a fuzz seed).
func TestSamplesCoverEveryKind(t *testing.T) {
	covered := map[protoreflect.FullName]bool{}
	for _, e := range samples() {
		for _, r := range e.GetUp().GetRecords() {
			covered[r.ProtoReflect().WhichOneof(r.ProtoReflect().Descriptor().Oneofs().ByName("payload")).FullName()] = true
		}
		for _, u := range e.GetDown().GetUpdates() {
			covered[u.ProtoReflect().WhichOneof(u.ProtoReflect().Descriptor().Oneofs().ByName("payload")).FullName()] = true
		}
	}
	for _, m := range []protoreflect.Message{(&syncpb.Record{}).ProtoReflect(), (&syncpb.Update{}).ProtoReflect()} {
		fields := m.Descriptor().Oneofs().ByName("payload").Fields()
		for i := 0; i < fields.Len(); i++ {
			if name := fields.Get(i).FullName(); !covered[name] {
				t.Errorf("no sample for %s", name)
			}
		}
	}
}

func TestUnmarshalTooLargeBeforeParsing(t *testing.T) {
	// Garbage that would be ErrMalformed: the size check comes first.
	b := bytes.Repeat([]byte{0xff}, syncproto.MaxMessageSize+1)
	if _, err := syncproto.Unmarshal(b); !errors.Is(err, syncproto.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func TestMarshalTooLarge(t *testing.T) {
	var recs []*syncpb.Record
	for i := 0; i*syncproto.MaxDERSize <= syncproto.MaxMessageSize; i++ {
		recs = append(recs, &syncpb.Record{RecordId: fmt.Sprintf("r-%d", i), Payload: &syncpb.Record_IdentityRenewal{
			IdentityRenewal: &syncpb.IdentityRenewal{CsrDer: make([]byte, syncproto.MaxDERSize)}}})
	}
	e := envelope(&syncpb.Up{Records: recs})
	if err := syncproto.Validate(e); err != nil {
		t.Fatalf("Validate: got %v, want nil (each record is within its caps)", err)
	}
	if _, err := syncproto.Marshal(e); !errors.Is(err, syncproto.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

// TestLargestCRLFits: a Down with one CRL of MaxCRLSize and every string
// at its longest still fits in MaxMessageSize.
func TestLargestCRLFits(t *testing.T) {
	id := strings.Repeat("x", syncproto.MaxIDLength)
	e := envelope(&syncpb.Down{Updates: []*syncpb.Update{{UpdateId: id, Payload: &syncpb.Update_Crl{Crl: &syncpb.CRLUpdate{
		CaId: strings.Repeat("c", syncproto.MaxStringLength), CrlDer: make([]byte, syncproto.MaxCRLSize), Delta: true,
	}}}}})
	e.MessageId = id
	e.SentAtUnixMs = -1 // the longest varint
	b, err := syncproto.Marshal(e)
	if err != nil {
		t.Fatalf("Marshal: got %v, want nil", err)
	}
	if _, err := syncproto.Unmarshal(b); err != nil {
		t.Fatalf("Unmarshal: got %v, want nil", err)
	}
	t.Logf("largest CRL message: %d bytes of %d", len(b), syncproto.MaxMessageSize)
}

func TestUnmarshalMalformed(t *testing.T) {
	good, err := syncproto.Marshal(fullUp())
	if err != nil {
		t.Fatal(err)
	}
	badUTF8 := protowire.AppendTag(nil, 1, protowire.BytesType)
	badUTF8 = protowire.AppendBytes(badUTF8, []byte{0xff, 0xfe})
	for name, b := range map[string][]byte{
		"bad tag":       {0xff},
		"truncated":     good[:len(good)-3],
		"field zero":    {0x00, 0x01},
		"invalid utf-8": badUTF8,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := syncproto.Unmarshal(b); !errors.Is(err, syncproto.ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestUnsupportedVersion(t *testing.T) {
	e := fullUp()
	e.ProtocolVersion = syncproto.ProtocolVersion + 1
	b, err := proto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	_, err = syncproto.Unmarshal(b)
	var ve *syncproto.VersionError
	if !errors.Is(err, syncproto.ErrUnsupportedVersion) || !errors.As(err, &ve) {
		t.Fatalf("Unmarshal: got %v, want a VersionError", err)
	}
	if ve.Version != syncproto.ProtocolVersion+1 || ve.Supported != syncproto.ProtocolVersion {
		t.Fatalf("got %+v, want Version %d, Supported %d", *ve, syncproto.ProtocolVersion+1, syncproto.ProtocolVersion)
	}
	if _, err := syncproto.Marshal(e); !errors.Is(err, syncproto.ErrUnsupportedVersion) {
		t.Fatalf("Marshal: got %v, want ErrUnsupportedVersion", err)
	}
}

// TestVersionCheckedFirst: a newer message is reported as newer, not as
// invalid, even if it breaks today's rules.
func TestVersionCheckedFirst(t *testing.T) {
	e := &syncpb.Envelope{ProtocolVersion: syncproto.ProtocolVersion + 1}
	b, _ := proto.Marshal(e)
	if _, err := syncproto.Unmarshal(b); !errors.Is(err, syncproto.ErrUnsupportedVersion) {
		t.Fatalf("got %v, want ErrUnsupportedVersion", err)
	}
}

func TestUnknownFieldsKept(t *testing.T) {
	b, err := syncproto.Marshal(fullDown())
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	b = protowire.AppendString(b, "from a newer minor")
	e, err := syncproto.Unmarshal(b)
	if err != nil {
		t.Fatalf("Unmarshal: got %v, want nil", err)
	}
	if got := len(e.ProtoReflect().GetUnknown()); got == 0 {
		t.Fatalf("unknown field dropped")
	}
	b2, err := syncproto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b2, b) {
		t.Fatalf("re-marshalled: got %x, want %x", b2, b)
	}
}

func TestValidationRules(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	big := func(n int) []byte { return make([]byte, n) }
	rec := func(e *syncpb.Envelope, i int) *syncpb.Record { return e.GetUp().GetRecords()[i] }
	upd := func(e *syncpb.Envelope, i int) *syncpb.Update { return e.GetDown().GetUpdates()[i] }
	n := func(n int) []string {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("id-%d", i)
		}
		return ids
	}

	type rule struct {
		name   string
		base   func() *syncpb.Envelope
		mutate func(e *syncpb.Envelope)
		field  string // InvalidError.Field; empty for ErrUnsupportedVersion
	}
	rules := []rule{
		// Envelope.
		{"version missing", fullUp, func(e *syncpb.Envelope) { e.ProtocolVersion = 0 }, "protocol_version"},
		{"version newer", fullUp, func(e *syncpb.Envelope) { e.ProtocolVersion = syncproto.ProtocolVersion + 1 }, ""},
		{"message_id missing", fullUp, func(e *syncpb.Envelope) { e.MessageId = "" }, "message_id"},
		{"message_id too long", fullUp, func(e *syncpb.Envelope) { e.MessageId = long(65) }, "message_id"},
		{"message_id with space", fullUp, func(e *syncpb.Envelope) { e.MessageId = "a b" }, "message_id"},
		{"message_id non-ascii", fullUp, func(e *syncpb.Envelope) { e.MessageId = "é" }, "message_id"},
		{"dms_id missing", fullUp, func(e *syncpb.Envelope) { e.DmsId = "" }, "dms_id"},
		{"dms_id uppercase", fullUp, func(e *syncpb.Envelope) { e.DmsId = strings.ToUpper(testDMS) }, "dms_id"},
		{"dms_id nil uuid", fullUp, func(e *syncpb.Envelope) { e.DmsId = "00000000-0000-0000-0000-000000000000" }, "dms_id"},
		{"body missing", fullUp, func(e *syncpb.Envelope) { e.Body = nil }, "body"},

		// Up.
		{"up empty", fullUp, func(e *syncpb.Envelope) { e.Body = &syncpb.Envelope_Up{Up: &syncpb.Up{}} }, "up.records"},
		{"up nil", fullUp, func(e *syncpb.Envelope) { e.Body = &syncpb.Envelope_Up{} }, "up.records"},
		{"too many records", fullUp, func(e *syncpb.Envelope) {
			var recs []*syncpb.Record
			for _, id := range n(syncproto.MaxRecordsPerMessage + 1) {
				recs = append(recs, &syncpb.Record{RecordId: id, Payload: &syncpb.Record_Event{Event: &syncpb.Event{Kind: "k"}}})
			}
			e.GetUp().Records = recs
		}, "up.records"},
		{"record nil", fullUp, func(e *syncpb.Envelope) { e.GetUp().Records[0] = nil }, "up.records[0]"},
		{"record_id missing", fullUp, func(e *syncpb.Envelope) { rec(e, 0).RecordId = "" }, "up.records[0].record_id"},
		{"record_id too long", fullUp, func(e *syncpb.Envelope) { rec(e, 0).RecordId = long(65) }, "up.records[0].record_id"},
		{"record_id control char", fullUp, func(e *syncpb.Envelope) { rec(e, 0).RecordId = "a\nb" }, "up.records[0].record_id"},
		{"record_id duplicate", fullUp, func(e *syncpb.Envelope) { rec(e, 1).RecordId = rec(e, 0).RecordId }, "up.records[1].record_id"},
		{"record device_id too long", fullUp, func(e *syncpb.Envelope) { rec(e, 0).DeviceId = long(257) }, "up.records[0].device_id"},
		{"record device_id bad utf-8", fullUp, func(e *syncpb.Envelope) { rec(e, 0).DeviceId = "\xff" }, "up.records[0].device_id"},
		{"record payload missing", fullUp, func(e *syncpb.Envelope) { rec(e, 0).Payload = nil }, "up.records[0].payload"},

		{"enrollment_request nil", fullUp, func(e *syncpb.Envelope) {
			rec(e, 0).Payload = &syncpb.Record_EnrollmentRequest{}
		}, "up.records[0].enrollment_request.request_id"},
		{"enrollment_request request_id missing", fullUp, func(e *syncpb.Envelope) { rec(e, 0).GetEnrollmentRequest().RequestId = "" }, "up.records[0].enrollment_request.request_id"},
		{"enrollment_request csr missing", fullUp, func(e *syncpb.Envelope) { rec(e, 0).GetEnrollmentRequest().CsrDer = nil }, "up.records[0].enrollment_request.csr_der"},
		{"enrollment_request csr too large", fullUp, func(e *syncpb.Envelope) {
			rec(e, 0).GetEnrollmentRequest().CsrDer = big(syncproto.MaxDERSize + 1)
		}, "up.records[0].enrollment_request.csr_der"},
		{"enrollment_request label too long", fullUp, func(e *syncpb.Envelope) { rec(e, 0).GetEnrollmentRequest().Label = long(257) }, "up.records[0].enrollment_request.label"},
		{"enrollment_request profile too long", fullUp, func(e *syncpb.Envelope) { rec(e, 0).GetEnrollmentRequest().Profile = long(257) }, "up.records[0].enrollment_request.profile"},
		{"enrollment_request ca_id too long", fullUp, func(e *syncpb.Envelope) { rec(e, 0).GetEnrollmentRequest().CaId = long(257) }, "up.records[0].enrollment_request.ca_id"},
		{"enrollment_request device_id missing", fullUp, func(e *syncpb.Envelope) { rec(e, 0).GetEnrollmentRequest().DeviceId = "" }, "up.records[0].enrollment_request.device_id"},

		{"issued_certificate certificate missing", fullUp, func(e *syncpb.Envelope) { rec(e, 1).GetIssuedCertificate().CertificateDer = nil }, "up.records[1].issued_certificate.certificate_der"},
		{"issued_certificate certificate too large", fullUp, func(e *syncpb.Envelope) {
			rec(e, 1).GetIssuedCertificate().CertificateDer = big(syncproto.MaxDERSize + 1)
		}, "up.records[1].issued_certificate.certificate_der"},
		{"issued_certificate ca_id missing", fullUp, func(e *syncpb.Envelope) { rec(e, 1).GetIssuedCertificate().CaId = "" }, "up.records[1].issued_certificate.ca_id"},
		{"issued_certificate device_id missing", fullUp, func(e *syncpb.Envelope) { rec(e, 1).GetIssuedCertificate().DeviceId = "" }, "up.records[1].issued_certificate.device_id"},
		{"issued_certificate request_id too long", fullUp, func(e *syncpb.Envelope) { rec(e, 1).GetIssuedCertificate().RequestId = long(65) }, "up.records[1].issued_certificate.request_id"},

		{"edge_ca_request csr missing", fullUp, func(e *syncpb.Envelope) { rec(e, 2).GetEdgeCaRequest().CsrDer = nil }, "up.records[2].edge_ca_request.csr_der"},
		{"edge_ca_request reason unknown", fullUp, func(e *syncpb.Envelope) { rec(e, 2).GetEdgeCaRequest().Reason = "because" }, "up.records[2].edge_ca_request.reason"},
		{"edge_ca_request reason missing", fullUp, func(e *syncpb.Envelope) { rec(e, 2).GetEdgeCaRequest().Reason = "" }, "up.records[2].edge_ca_request.reason"},
		{"responder_certificate ca_id missing", fullUp, func(e *syncpb.Envelope) { rec(e, 7).GetResponderCertificate().CaId = "" }, "up.records[7].responder_certificate.ca_id"},
		{"responder_certificate certificate missing", fullUp, func(e *syncpb.Envelope) { rec(e, 7).GetResponderCertificate().CertificateDer = nil }, "up.records[7].responder_certificate.certificate_der"},

		{"identity_renewal csr missing", fullUp, func(e *syncpb.Envelope) { rec(e, 3).GetIdentityRenewal().CsrDer = nil }, "up.records[3].identity_renewal.csr_der"},
		{"identity_renewal csr too large", fullUp, func(e *syncpb.Envelope) {
			rec(e, 3).GetIdentityRenewal().CsrDer = big(syncproto.MaxDERSize + 1)
		}, "up.records[3].identity_renewal.csr_der"},

		{"revocation_report serial missing", fullUp, func(e *syncpb.Envelope) { rec(e, 4).GetRevocationReport().SerialHex = "" }, "up.records[4].revocation_report.serial_hex"},
		{"revocation_report serial leading zero", fullUp, func(e *syncpb.Envelope) { rec(e, 4).GetRevocationReport().SerialHex = "0a" }, "up.records[4].revocation_report.serial_hex"},
		{"revocation_report serial uppercase", fullUp, func(e *syncpb.Envelope) { rec(e, 4).GetRevocationReport().SerialHex = "AB" }, "up.records[4].revocation_report.serial_hex"},
		{"revocation_report serial not hex", fullUp, func(e *syncpb.Envelope) { rec(e, 4).GetRevocationReport().SerialHex = "12g" }, "up.records[4].revocation_report.serial_hex"},
		{"revocation_report serial too long", fullUp, func(e *syncpb.Envelope) {
			rec(e, 4).GetRevocationReport().SerialHex = strings.Repeat("f", 41)
		}, "up.records[4].revocation_report.serial_hex"},
		{"revocation_report reason 7", fullUp, func(e *syncpb.Envelope) { rec(e, 4).GetRevocationReport().Reason = 7 }, "up.records[4].revocation_report.reason"},
		{"revocation_report reason 11", fullUp, func(e *syncpb.Envelope) { rec(e, 4).GetRevocationReport().Reason = 11 }, "up.records[4].revocation_report.reason"},
		{"revocation_report reason negative", fullUp, func(e *syncpb.Envelope) { rec(e, 4).GetRevocationReport().Reason = -1 }, "up.records[4].revocation_report.reason"},

		{"event kind missing", fullUp, func(e *syncpb.Envelope) { rec(e, 5).GetEvent().Kind = "" }, "up.records[5].event.kind"},
		{"event detail too large", fullUp, func(e *syncpb.Envelope) {
			rec(e, 5).GetEvent().DetailJson = `"` + long(syncproto.MaxEventDetailSize) + `"`
		}, "up.records[5].event.detail_json"},
		{"event detail not json", fullUp, func(e *syncpb.Envelope) { rec(e, 5).GetEvent().DetailJson = "{" }, "up.records[5].event.detail_json"},

		{"heartbeat agent_version too long", fullUp, func(e *syncpb.Envelope) { e.GetUp().GetHeartbeat().AgentVersion = long(257) }, "up.heartbeat.agent_version"},
		{"heartbeat protocol_version below envelope", fullUp, func(e *syncpb.Envelope) { e.GetUp().GetHeartbeat().ProtocolVersion = 0 }, "up.heartbeat.protocol_version"},

		// Down.
		{"down empty", fullDown, func(e *syncpb.Envelope) { e.Body = &syncpb.Envelope_Down{Down: &syncpb.Down{}} }, "down.updates"},
		{"ack empty", fullDown, func(e *syncpb.Envelope) { e.GetDown().Ack = &syncpb.Ack{} }, "down.ack.record_ids"},
		{"ack too many", fullDown, func(e *syncpb.Envelope) { e.GetDown().GetAck().RecordIds = n(syncproto.MaxRecordsPerMessage) }, "down.ack.record_ids"},
		{"ack record_id missing", fullDown, func(e *syncpb.Envelope) { e.GetDown().GetAck().RecordIds[0] = "" }, "down.ack.record_ids[0]"},
		{"ack record_id too long", fullDown, func(e *syncpb.Envelope) { e.GetDown().GetAck().RecordIds[0] = long(65) }, "down.ack.record_ids[0]"},
		{"ack record_id duplicate", fullDown, func(e *syncpb.Envelope) {
			a := e.GetDown().GetAck()
			a.RecordIds[1] = a.RecordIds[0]
		}, "down.ack.record_ids[1]"},
		{"rejection nil", fullDown, func(e *syncpb.Envelope) { e.GetDown().GetAck().Rejections[0] = nil }, "down.ack.rejections[0]"},
		{"rejection record_id missing", fullDown, func(e *syncpb.Envelope) { e.GetDown().GetAck().Rejections[0].RecordId = "" }, "down.ack.rejections[0].record_id"},
		{"rejection record_id also acked", fullDown, func(e *syncpb.Envelope) {
			a := e.GetDown().GetAck()
			a.Rejections[0].RecordId = a.RecordIds[0]
		}, "down.ack.rejections[0].record_id"},
		{"rejection reason missing", fullDown, func(e *syncpb.Envelope) { e.GetDown().GetAck().Rejections[0].Reason = "" }, "down.ack.rejections[0].reason"},
		{"rejection reason too long", fullDown, func(e *syncpb.Envelope) { e.GetDown().GetAck().Rejections[0].Reason = long(1025) }, "down.ack.rejections[0].reason"},

		{"too many updates", fullDown, func(e *syncpb.Envelope) {
			var ups []*syncpb.Update
			for _, id := range n(syncproto.MaxRecordsPerMessage + 1) {
				ups = append(ups, &syncpb.Update{UpdateId: id, Payload: &syncpb.Update_Identity{Identity: &syncpb.IdentityCertificate{CertificateDer: certDER}}})
			}
			e.GetDown().Updates = ups
		}, "down.updates"},
		{"update nil", fullDown, func(e *syncpb.Envelope) { e.GetDown().Updates[0] = nil }, "down.updates[0]"},
		{"update_id missing", fullDown, func(e *syncpb.Envelope) { upd(e, 0).UpdateId = "" }, "down.updates[0].update_id"},
		{"update_id not printable", fullDown, func(e *syncpb.Envelope) { upd(e, 0).UpdateId = "\x7f" }, "down.updates[0].update_id"},
		{"update_id duplicate", fullDown, func(e *syncpb.Envelope) { upd(e, 2).UpdateId = upd(e, 0).UpdateId }, "down.updates[2].update_id"},
		{"update payload missing", fullDown, func(e *syncpb.Envelope) { upd(e, 0).Payload = nil }, "down.updates[0].payload"},

		{"policy nil", fullDown, func(e *syncpb.Envelope) { upd(e, 0).Payload = &syncpb.Update_Policy{} }, "down.updates[0].policy.mode"},
		{"policy mode unknown", fullDown, func(e *syncpb.Envelope) { upd(e, 0).GetPolicy().Mode = "offline" }, "down.updates[0].policy.mode"},
		{"policy device_auth unknown", fullDown, func(e *syncpb.Envelope) { upd(e, 0).GetPolicy().DeviceAuth = "none" }, "down.updates[0].policy.device_auth"},
		{"policy profile too long", fullDown, func(e *syncpb.Envelope) { upd(e, 0).GetPolicy().Profile = long(257) }, "down.updates[0].policy.profile"},
		{"policy reenroll window negative", fullDown, func(e *syncpb.Envelope) { upd(e, 0).GetPolicy().ReenrollWindowSeconds = -1 }, "down.updates[0].policy.reenroll_window_seconds"},
		{"policy reenroll window too long", fullDown, func(e *syncpb.Envelope) {
			upd(e, 0).GetPolicy().ReenrollWindowSeconds = 3651 * 86400
		}, "down.updates[0].policy.reenroll_window_seconds"},
		{"policy local_quota negative", fullDown, func(e *syncpb.Envelope) { upd(e, 0).GetPolicy().LocalQuota = -1 }, "down.updates[0].policy.local_quota"},
		{"policy bootstrap ca empty", fullDown, func(e *syncpb.Envelope) {
			upd(e, 0).GetPolicy().BootstrapCaDers = [][]byte{caDER, nil}
		}, "down.updates[0].policy.bootstrap_ca_ders[1]"},
		{"policy authorized ca id empty", fullDown, func(e *syncpb.Envelope) {
			upd(e, 0).GetPolicy().AuthorizedCaIds = []string{""}
		}, "down.updates[0].policy.authorized_ca_ids[0]"},

		{"ca_bundle empty", fullDown, func(e *syncpb.Envelope) { upd(e, 1).GetCaBundle().CertificateDers = nil }, "down.updates[1].ca_bundle.certificate_ders"},
		{"ca_bundle element too large", fullDown, func(e *syncpb.Envelope) {
			upd(e, 1).GetCaBundle().CertificateDers[0] = big(syncproto.MaxDERSize + 1)
		}, "down.updates[1].ca_bundle.certificate_ders[0]"},

		{"crl ca_id missing", fullDown, func(e *syncpb.Envelope) { upd(e, 2).GetCrl().CaId = "" }, "down.updates[2].crl.ca_id"},
		{"crl missing", fullDown, func(e *syncpb.Envelope) { upd(e, 2).GetCrl().CrlDer = nil }, "down.updates[2].crl.crl_der"},
		{"crl too large for mqtt", fullDown, func(e *syncpb.Envelope) {
			upd(e, 2).GetCrl().CrlDer = big(syncproto.MaxCRLSize + 1)
		}, "down.updates[2].crl.crl_der"},

		{"revocation serial bad", fullDown, func(e *syncpb.Envelope) { upd(e, 3).GetRevocation().SerialHex = "0" }, "down.updates[3].revocation.serial_hex"},
		{"revocation reason bad", fullDown, func(e *syncpb.Envelope) { upd(e, 3).GetRevocation().Reason = 7 }, "down.updates[3].revocation.reason"},
		{"revocation ca_id missing", fullDown, func(e *syncpb.Envelope) { upd(e, 3).GetRevocation().CaId = "" }, "down.updates[3].revocation.ca_id"},

		{"renewal_intent device_id missing", fullDown, func(e *syncpb.Envelope) { upd(e, 4).GetRenewalIntent().DeviceId = "" }, "down.updates[4].renewal_intent.device_id"},
		{"renewal_intent serial missing", fullDown, func(e *syncpb.Envelope) { upd(e, 4).GetRenewalIntent().SerialHex = "" }, "down.updates[4].renewal_intent.serial_hex"},

		{"enrollment_result request_id missing", fullDown, func(e *syncpb.Envelope) { upd(e, 5).GetEnrollmentResult().RequestId = "" }, "down.updates[5].enrollment_result.request_id"},
		{"enrollment_result neither certificate nor error", fullDown, func(e *syncpb.Envelope) {
			upd(e, 5).GetEnrollmentResult().CertificateDer = nil
		}, "down.updates[5].enrollment_result.certificate_der"},
		{"enrollment_result certificate too large", fullDown, func(e *syncpb.Envelope) {
			upd(e, 5).GetEnrollmentResult().CertificateDer = big(syncproto.MaxDERSize + 1)
		}, "down.updates[5].enrollment_result.certificate_der"},
		{"enrollment_result chain element empty", fullDown, func(e *syncpb.Envelope) {
			upd(e, 5).GetEnrollmentResult().ChainDers = [][]byte{nil}
		}, "down.updates[5].enrollment_result.chain_ders[0]"},
		{"enrollment_result permanent without error", fullDown, func(e *syncpb.Envelope) {
			upd(e, 5).GetEnrollmentResult().Permanent = true
		}, "down.updates[5].enrollment_result.permanent"},
		{"enrollment_result error with certificate", fullDown, func(e *syncpb.Envelope) {
			upd(e, 5).GetEnrollmentResult().Error = "refused"
		}, "down.updates[5].enrollment_result.certificate_der"},
		{"enrollment_result error with chain", fullDown, func(e *syncpb.Envelope) {
			r := upd(e, 5).GetEnrollmentResult()
			r.Error, r.CertificateDer = "refused", nil
		}, "down.updates[5].enrollment_result.certificate_der"},
		{"enrollment_result error too long", fullDown, func(e *syncpb.Envelope) {
			r := upd(e, 5).GetEnrollmentResult()
			r.Error, r.CertificateDer, r.ChainDers = long(1025), nil, nil
		}, "down.updates[5].enrollment_result.error"},

		{"edge_ca certificate missing", fullDown, func(e *syncpb.Envelope) { upd(e, 6).GetEdgeCa().CertificateDer = nil }, "down.updates[6].edge_ca.certificate_der"},
		{"edge_ca chain element too large", fullDown, func(e *syncpb.Envelope) {
			upd(e, 6).GetEdgeCa().ChainDers[0] = big(syncproto.MaxDERSize + 1)
		}, "down.updates[6].edge_ca.chain_ders[0]"},
		{"edge_ca ca_id missing", fullDown, func(e *syncpb.Envelope) { upd(e, 6).GetEdgeCa().CaId = "" }, "down.updates[6].edge_ca.ca_id"},
		{"responder_request ca_id missing", fullDown, func(e *syncpb.Envelope) { upd(e, 9).GetResponderRequest().CaId = "" }, "down.updates[9].responder_request.ca_id"},
		{"responder_request csr too large", fullDown, func(e *syncpb.Envelope) {
			upd(e, 9).GetResponderRequest().CsrDer = make([]byte, syncproto.MaxDERSize+1)
		}, "down.updates[9].responder_request.csr_der"},
		{"dms_disabled time negative", disabledDown, func(e *syncpb.Envelope) { upd(e, 0).GetDmsDisabled().DisabledAtUnixMs = -1 }, "down.updates[0].dms_disabled.disabled_at_unix_ms"},
		{"dms_disabled with an ack", disabledDown, func(e *syncpb.Envelope) { e.GetDown().Ack = ack() }, "down.updates"},
		{"dms_disabled with another update", disabledDown, func(e *syncpb.Envelope) {
			e.GetDown().Updates = append(e.GetDown().Updates, downUpdates()[0])
		}, "down.updates"},
		{"dms_disabled in protocol 3", disabledDown, func(e *syncpb.Envelope) { e.ProtocolVersion = 3 }, "down.updates"},

		{"identity certificate missing", fullDown, func(e *syncpb.Envelope) { upd(e, 7).GetIdentity().CertificateDer = nil }, "down.updates[7].identity.certificate_der"},
		{"identity chain element empty", fullDown, func(e *syncpb.Envelope) { upd(e, 7).GetIdentity().ChainDers = [][]byte{{}} }, "down.updates[7].identity.chain_ders[0]"},
	}
	goOnly := map[string]bool{"record nil": true, "rejection nil": true, "update nil": true}
	seen := map[string]bool{}
	for _, r := range rules {
		if seen[r.name] {
			t.Fatalf("duplicate rule name %q", r.name)
		}
		seen[r.name] = true
		t.Run(r.name, func(t *testing.T) {
			e := clone(r.base())
			r.mutate(e)
			want := syncproto.ErrInvalid
			if r.field == "" {
				want = syncproto.ErrUnsupportedVersion
			}
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, want) {
					t.Fatalf("%s: got %v, want %v", what, err, want)
				}
				var ie *syncproto.InvalidError
				if errors.As(err, &ie) && ie.Field != r.field {
					t.Fatalf("%s: got field %q (%v), want %q", what, ie.Field, err, r.field)
				}
			}
			check("Validate", syncproto.Validate(e))
			_, err := syncproto.Marshal(e)
			check("Marshal", err)
			// The same bytes from a peer that skipped validation, where
			// protobuf can encode them at all (not invalid UTF-8), they
			// are within the size cap (checked first), and they decode to
			// the same thing (a nil list element is Go-only: it encodes
			// as an empty message).
			if b, err := proto.Marshal(e); err == nil && len(b) <= syncproto.MaxMessageSize && !goOnly[r.name] {
				_, err := syncproto.Unmarshal(b)
				check("Unmarshal", err)
			}
		})
	}
}

func TestValidateNil(t *testing.T) {
	if err := syncproto.Validate(nil); !errors.Is(err, syncproto.ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	if _, err := syncproto.Marshal(nil); !errors.Is(err, syncproto.ErrInvalid) {
		t.Fatalf("Marshal(nil): got %v, want ErrInvalid", err)
	}
}

func TestErrorText(t *testing.T) {
	e := fullUp()
	rec := e.GetUp().GetRecords()[3]
	rec.GetIdentityRenewal().CsrDer = nil
	got := syncproto.Validate(e).Error()
	want := "syncproto: invalid message: up.records[3].identity_renewal.csr_der: missing"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
