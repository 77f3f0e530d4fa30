package syncproto

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"unicode/utf8"

	"github.com/outpost-pki/outpost/proto/syncpb"
)

// Validate checks an envelope against the protocol's rules; Marshal and
// Unmarshal call it. The error matches ErrUnsupportedVersion (a
// *VersionError) or ErrInvalid (an *InvalidError naming the field).
//
// The rules, beyond what the .proto comments say per field:
//   - protocol_version is 1..ProtocolVersion; message_id is an id (1..64
//     printable ASCII); dms_id passes ValidDMSID; exactly one body is set.
//   - An Up carries records, a heartbeat or both; a Down an ack, updates
//     or both. Records, updates and acked ids number at most
//     MaxRecordsPerMessage and their ids are unique within the message.
//   - Every record and update has its payload set and the payload's
//     required fields present; strings and DER blobs are within their caps.
func Validate(e *syncpb.Envelope) error {
	if e == nil {
		return invalid("envelope", "missing")
	}
	switch v := e.GetProtocolVersion(); {
	case v == 0:
		return invalid("protocol_version", "missing")
	case v > ProtocolVersion:
		return &VersionError{Version: v, Supported: ProtocolVersion}
	}
	if err := checkID("message_id", e.GetMessageId(), true); err != nil {
		return err
	}
	if !ValidDMSID(e.GetDmsId()) {
		return invalid("dms_id", "not a canonical lowercase UUID")
	}
	switch b := e.GetBody().(type) {
	case *syncpb.Envelope_Up:
		return within("up", validateUp(b.Up, e.GetProtocolVersion()))
	case *syncpb.Envelope_Down:
		return within("down", validateDown(b.Down, e.GetProtocolVersion()))
	}
	return invalid("body", "neither up nor down is set")
}

func validateUp(up *syncpb.Up, version uint32) error {
	recs := up.GetRecords()
	if len(recs) == 0 && up.GetHeartbeat() == nil {
		return invalid("records", "neither records nor a heartbeat")
	}
	if len(recs) > MaxRecordsPerMessage {
		return invalid("records", fmt.Sprintf("%d records, limit %d", len(recs), MaxRecordsPerMessage))
	}
	seen := make(map[string]struct{}, len(recs))
	for i, r := range recs {
		if err := validateRecord(r, seen); err != nil {
			return within(fmt.Sprintf("records[%d]", i), err)
		}
	}
	if hb := up.GetHeartbeat(); hb != nil {
		if err := validateHeartbeat(hb, version); err != nil {
			return within("heartbeat", err)
		}
	}
	return nil
}

func validateRecord(r *syncpb.Record, seen map[string]struct{}) error {
	if r == nil {
		return invalid("", "missing")
	}
	id := r.GetRecordId()
	if err := checkID("record_id", id, true); err != nil {
		return err
	}
	if _, dup := seen[id]; dup {
		return invalid("record_id", "duplicate in message")
	}
	seen[id] = struct{}{}
	if err := checkString("device_id", r.GetDeviceId(), MaxStringLength, false); err != nil {
		return err
	}
	switch p := r.GetPayload().(type) {
	case *syncpb.Record_EnrollmentRequest:
		return within("enrollment_request", validateEnrollmentRequest(p.EnrollmentRequest))
	case *syncpb.Record_IssuedCertificate:
		return within("issued_certificate", validateIssuedCertificate(p.IssuedCertificate))
	case *syncpb.Record_EdgeCaRequest:
		return within("edge_ca_request", validateEdgeCARequest(p.EdgeCaRequest))
	case *syncpb.Record_IdentityRenewal:
		return within("identity_renewal", checkDER("csr_der", p.IdentityRenewal.GetCsrDer(), MaxDERSize))
	case *syncpb.Record_RevocationReport:
		return within("revocation_report", validateRevocationReport(p.RevocationReport))
	case *syncpb.Record_Event:
		return within("event", validateEvent(p.Event))
	case *syncpb.Record_ServerCertificateRequest:
		return within("server_certificate_request", checkDER("csr_der", p.ServerCertificateRequest.GetCsrDer(), MaxDERSize))
	case *syncpb.Record_ResponderCertificate:
		return within("responder_certificate", first(
			checkString("ca_id", p.ResponderCertificate.GetCaId(), MaxStringLength, true),
			checkDER("certificate_der", p.ResponderCertificate.GetCertificateDer(), MaxDERSize),
		))
	}
	return invalid("payload", "not set")
}

func validateEnrollmentRequest(m *syncpb.EnrollmentRequest) error {
	return first(
		checkID("request_id", m.GetRequestId(), true),
		checkDER("csr_der", m.GetCsrDer(), MaxDERSize),
		checkString("label", m.GetLabel(), MaxStringLength, false),
		checkString("profile", m.GetProfile(), MaxStringLength, false),
		checkString("ca_id", m.GetCaId(), MaxStringLength, false),
		checkString("device_id", m.GetDeviceId(), MaxStringLength, true),
		checkOptionalSerial("reenroll_serial_hex", m.GetReenrollSerialHex()),
	)
}

func checkOptionalSerial(field, s string) error {
	if s == "" {
		return nil
	}
	return checkSerial(field, s)
}

func validateIssuedCertificate(m *syncpb.IssuedCertificate) error {
	return first(
		checkDER("certificate_der", m.GetCertificateDer(), MaxDERSize),
		checkString("ca_id", m.GetCaId(), MaxStringLength, true),
		checkString("device_id", m.GetDeviceId(), MaxStringLength, true),
		checkID("request_id", m.GetRequestId(), false),
	)
}

func validateEdgeCARequest(m *syncpb.EdgeCARequest) error {
	if err := checkDER("csr_der", m.GetCsrDer(), MaxDERSize); err != nil {
		return err
	}
	switch m.GetReason() {
	case "initial", "renewal":
		return nil
	}
	return invalid("reason", "not one of initial, renewal")
}

func validateRevocationReport(m *syncpb.RevocationReport) error {
	return first(
		checkSerial("serial_hex", m.GetSerialHex()),
		checkCRLReason("reason", m.GetReason()),
	)
}

func validateEvent(m *syncpb.Event) error {
	if err := checkString("kind", m.GetKind(), MaxStringLength, true); err != nil {
		return err
	}
	d := m.GetDetailJson()
	if err := checkString("detail_json", d, MaxEventDetailSize, false); err != nil {
		return err
	}
	// The control plane stores it as JSON; refusing it here keeps a bad
	// record from failing that transaction on every redelivery.
	if d != "" && !json.Valid([]byte(d)) {
		return invalid("detail_json", "not valid JSON")
	}
	return nil
}

func validateHeartbeat(m *syncpb.Heartbeat, version uint32) error {
	if err := checkString("agent_version", m.GetAgentVersion(), MaxStringLength, false); err != nil {
		return err
	}
	if m.GetProtocolVersion() < version {
		return invalid("protocol_version", "lower than the envelope's")
	}
	if len(m.GetPolicyDigest()) > 64 {
		return invalid("policy_digest", "longer than 64 bytes")
	}
	if len(m.GetCrls()) > MaxRecordsPerMessage {
		return invalid("crls", fmt.Sprintf("more than %d", MaxRecordsPerMessage))
	}
	for i, c := range m.GetCrls() {
		if err := first(
			checkString(fmt.Sprintf("crls[%d].ca_id", i), c.GetCaId(), MaxStringLength, true),
			nonNegative(fmt.Sprintf("crls[%d].crl_number", i), c.GetCrlNumber()),
		); err != nil {
			return err
		}
	}
	return nil
}

func nonNegative(field string, v int64) error {
	if v < 0 {
		return invalid(field, "negative")
	}
	return nil
}

func validateDown(down *syncpb.Down, version uint32) error {
	ups := down.GetUpdates()
	if down.GetAck() == nil && len(ups) == 0 {
		return invalid("updates", "neither an ack nor updates")
	}
	if IsDMSDisabled(down) {
		if version < 4 {
			return invalid("updates", "dms_disabled needs protocol version 4")
		}
		if down.GetAck() != nil || len(ups) != 1 {
			return invalid("updates", "dms_disabled must be the only update, without an ack")
		}
	}
	if ack := down.GetAck(); ack != nil {
		if err := validateAck(ack); err != nil {
			return within("ack", err)
		}
	}
	if len(ups) > MaxRecordsPerMessage {
		return invalid("updates", fmt.Sprintf("%d updates, limit %d", len(ups), MaxRecordsPerMessage))
	}
	seen := make(map[string]struct{}, len(ups))
	for i, u := range ups {
		if err := validateUpdate(u, seen); err != nil {
			return within(fmt.Sprintf("updates[%d]", i), err)
		}
	}
	return nil
}

func validateAck(a *syncpb.Ack) error {
	ids, rejs := a.GetRecordIds(), a.GetRejections()
	if len(ids)+len(rejs) == 0 {
		return invalid("record_ids", "ack answers no record")
	}
	if len(ids)+len(rejs) > MaxRecordsPerMessage {
		return invalid("record_ids", fmt.Sprintf("%d records acked or rejected, limit %d", len(ids)+len(rejs), MaxRecordsPerMessage))
	}
	seen := make(map[string]struct{}, len(ids)+len(rejs))
	for i, id := range ids {
		field := fmt.Sprintf("record_ids[%d]", i)
		if err := checkID(field, id, true); err != nil {
			return err
		}
		if _, dup := seen[id]; dup {
			return invalid(field, "duplicate in ack")
		}
		seen[id] = struct{}{}
	}
	for i, r := range rejs {
		field := fmt.Sprintf("rejections[%d]", i)
		if r == nil {
			return invalid(field, "missing")
		}
		id := r.GetRecordId()
		if err := checkID("record_id", id, true); err != nil {
			return within(field, err)
		}
		if _, dup := seen[id]; dup {
			return invalid(field+".record_id", "duplicate in ack (acked or rejected twice)")
		}
		seen[id] = struct{}{}
		if err := checkString("reason", r.GetReason(), MaxReasonLength, true); err != nil {
			return within(field, err)
		}
	}
	return nil
}

func validateUpdate(u *syncpb.Update, seen map[string]struct{}) error {
	if u == nil {
		return invalid("", "missing")
	}
	id := u.GetUpdateId()
	if err := checkID("update_id", id, true); err != nil {
		return err
	}
	if _, dup := seen[id]; dup {
		return invalid("update_id", "duplicate in message")
	}
	seen[id] = struct{}{}
	switch p := u.GetPayload().(type) {
	case *syncpb.Update_Policy:
		return within("policy", validatePolicy(p.Policy))
	case *syncpb.Update_CaBundle:
		return within("ca_bundle", first(
			checkDERs("certificate_ders", p.CaBundle.GetCertificateDers(), true),
			checkString("ca_id", p.CaBundle.GetCaId(), MaxStringLength, false),
		))
	case *syncpb.Update_Crl:
		return within("crl", first(
			checkString("ca_id", p.Crl.GetCaId(), MaxStringLength, true),
			checkDER("crl_der", p.Crl.GetCrlDer(), MaxCRLSize),
		))
	case *syncpb.Update_Revocation:
		return within("revocation", first(
			checkSerial("serial_hex", p.Revocation.GetSerialHex()),
			checkCRLReason("reason", p.Revocation.GetReason()),
			checkString("ca_id", p.Revocation.GetCaId(), MaxStringLength, true),
		))
	case *syncpb.Update_RenewalIntent:
		return within("renewal_intent", first(
			checkString("device_id", p.RenewalIntent.GetDeviceId(), MaxStringLength, true),
			checkSerial("serial_hex", p.RenewalIntent.GetSerialHex()),
		))
	case *syncpb.Update_EnrollmentResult:
		return within("enrollment_result", validateEnrollmentResult(p.EnrollmentResult))
	case *syncpb.Update_EdgeCa:
		return within("edge_ca", first(
			checkDER("certificate_der", p.EdgeCa.GetCertificateDer(), MaxDERSize),
			checkDERs("chain_ders", p.EdgeCa.GetChainDers(), false),
			checkString("ca_id", p.EdgeCa.GetCaId(), MaxStringLength, true),
		))
	case *syncpb.Update_Identity:
		return within("identity", first(
			checkDER("certificate_der", p.Identity.GetCertificateDer(), MaxDERSize),
			checkDERs("chain_ders", p.Identity.GetChainDers(), false),
		))
	case *syncpb.Update_ServerCertificate:
		return within("server_certificate", first(
			checkDER("certificate_der", p.ServerCertificate.GetCertificateDer(), MaxDERSize),
			checkDERs("chain_ders", p.ServerCertificate.GetChainDers(), false),
		))
	case *syncpb.Update_ResponderRequest:
		return within("responder_request", first(
			checkString("ca_id", p.ResponderRequest.GetCaId(), MaxStringLength, true),
			checkDER("csr_der", p.ResponderRequest.GetCsrDer(), MaxDERSize),
		))
	case *syncpb.Update_DmsDisabled:
		if p.DmsDisabled.GetDisabledAtUnixMs() < 0 {
			return within("dms_disabled", invalid("disabled_at_unix_ms", "negative"))
		}
		return nil
	}
	return invalid("payload", "not set")
}

// maxReenrollWindowSeconds matches the control plane's policy limit.
const maxReenrollWindowSeconds = 3650 * 24 * 60 * 60

func validatePolicy(p *syncpb.Policy) error {
	switch p.GetMode() {
	case "online", "queued", "local":
	default:
		return invalid("mode", "not one of online, queued, local")
	}
	switch p.GetDeviceAuth() {
	case "client_cert", "basic_secret", "client_cert_or_secret", "webhook":
	default:
		return invalid("device_auth", "not one of client_cert, basic_secret, client_cert_or_secret, webhook")
	}
	if err := checkString("profile", p.GetProfile(), MaxStringLength, false); err != nil {
		return err
	}
	if w := p.GetReenrollWindowSeconds(); w < 0 || w > maxReenrollWindowSeconds {
		return invalid("reenroll_window_seconds", "not between 0 and 3650 days")
	}
	if p.GetLocalQuota() < 0 {
		return invalid("local_quota", "negative")
	}
	if err := checkDERs("bootstrap_ca_ders", p.GetBootstrapCaDers(), false); err != nil {
		return err
	}
	for i, id := range p.GetAuthorizedCaIds() {
		if err := checkString(fmt.Sprintf("authorized_ca_ids[%d]", i), id, MaxStringLength, true); err != nil {
			return err
		}
	}
	if len(p.GetLabels()) > MaxRecordsPerMessage {
		return invalid("labels", fmt.Sprintf("more than %d", MaxRecordsPerMessage))
	}
	for i, l := range p.GetLabels() {
		f := fmt.Sprintf("labels[%d]", i)
		if !labelRE.MatchString(l.GetName()) {
			return invalid(f+".name", "not 1..64 of A-Z a-z 0-9 . _ -")
		}
		if err := first(
			checkString(f+".ca_id", l.GetCaId(), MaxStringLength, true),
			checkString(f+".profile", l.GetProfile(), MaxStringLength, false),
		); err != nil {
			return err
		}
		switch l.GetDeviceAuth() {
		case "", "client_cert", "basic_secret", "client_cert_or_secret", "webhook":
		default:
			return invalid(f+".device_auth", "not one of client_cert, basic_secret, client_cert_or_secret, webhook")
		}
	}
	if p.GetEdgeCaValiditySeconds() < 0 {
		return invalid("edge_ca_validity_seconds", "negative")
	}
	if p.GetOnlineWaitMs() < 0 {
		return invalid("online_wait_ms", "negative")
	}
	if len(p.GetEdgeNameConstraints()) > MaxRecordsPerMessage {
		return invalid("edge_name_constraints", fmt.Sprintf("more than %d", MaxRecordsPerMessage))
	}
	for i, c := range p.GetEdgeNameConstraints() {
		if err := checkString(fmt.Sprintf("edge_name_constraints[%d]", i), c, MaxStringLength, true); err != nil {
			return err
		}
	}
	if len(p.GetStateDigest()) > 64 {
		return invalid("state_digest", "longer than 64 bytes")
	}
	return checkString("webhook_url", p.GetWebhookUrl(), MaxStringLength, false)
}

// labelRE is an EST label (RFC 7030 3.2.2 leaves the syntax open; this is
// what fits a URL path segment and a file name).
var labelRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func validateEnrollmentResult(m *syncpb.EnrollmentResult) error {
	if err := checkID("request_id", m.GetRequestId(), true); err != nil {
		return err
	}
	if m.GetError() == "" {
		if m.GetPermanent() {
			return invalid("permanent", "set without an error")
		}
		return first(
			checkDER("certificate_der", m.GetCertificateDer(), MaxDERSize),
			checkDERs("chain_ders", m.GetChainDers(), false),
		)
	}
	if len(m.GetCertificateDer()) != 0 || len(m.GetChainDers()) != 0 {
		return invalid("certificate_der", "set together with an error")
	}
	return checkString("error", m.GetError(), MaxReasonLength, true)
}

// Field checks. Each returns nil or an *InvalidError naming field.

func invalid(field, reason string) error { return &InvalidError{Field: field, Reason: reason} }

// within prefixes the field path of an *InvalidError with prefix.
func within(prefix string, err error) error {
	var ie *InvalidError
	if !errors.As(err, &ie) {
		return err
	}
	field := prefix
	if ie.Field != "" {
		field += "." + ie.Field
	}
	return &InvalidError{Field: field, Reason: ie.Reason}
}

// first returns the first non-nil error.
func first(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkID: 1..MaxIDLength printable ASCII, no spaces (empty allowed when
// not required).
func checkID(field, s string, required bool) error {
	if s == "" {
		if required {
			return invalid(field, "missing")
		}
		return nil
	}
	if len(s) > MaxIDLength {
		return invalid(field, fmt.Sprintf("longer than %d characters", MaxIDLength))
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return invalid(field, "not printable ASCII")
		}
	}
	return nil
}

// checkString: valid UTF-8 of at most limit bytes.
func checkString(field, s string, limit int, required bool) error {
	switch {
	case s == "" && required:
		return invalid(field, "missing")
	case len(s) > limit:
		return invalid(field, fmt.Sprintf("longer than %d bytes", limit))
	case !utf8.ValidString(s):
		return invalid(field, "not valid UTF-8")
	}
	return nil
}

// checkDER: a required blob of at most limit bytes. The DER itself is not
// parsed here.
func checkDER(field string, b []byte, limit int) error {
	switch {
	case len(b) == 0:
		return invalid(field, "missing")
	case len(b) > limit:
		return invalid(field, fmt.Sprintf("%d bytes, limit %d", len(b), limit))
	}
	return nil
}

// checkDERs: every element a non-empty blob of at most MaxDERSize bytes.
func checkDERs(field string, list [][]byte, atLeastOne bool) error {
	if atLeastOne && len(list) == 0 {
		return invalid(field, "empty")
	}
	for i, b := range list {
		if err := checkDER(fmt.Sprintf("%s[%d]", field, i), b, MaxDERSize); err != nil {
			return err
		}
	}
	return nil
}

// checkSerial: a certificate serial as the registry writes it, lowercase
// hex without leading zeros, at most 20 octets (RFC 5280 4.1.2.2).
func checkSerial(field, s string) error {
	switch {
	case s == "":
		return invalid(field, "missing")
	case len(s) > 40:
		return invalid(field, "longer than 40 hex digits")
	case s[0] == '0':
		return invalid(field, "leading zero")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return invalid(field, "not lowercase hex")
		}
	}
	return nil
}

// checkCRLReason: an RFC 5280 5.3.1 CRLReason, 0..10 without the unused 7.
func checkCRLReason(field string, r int32) error {
	if r < 0 || r > 10 || r == 7 {
		return invalid(field, "not an RFC 5280 CRLReason (0..10 except 7)")
	}
	return nil
}

// IsDMSDisabled reports whether a down message is the control plane's
// answer to a disabled DMS (a DMSDisabled update; Validate makes it the
// message's only content).
func IsDMSDisabled(d *syncpb.Down) bool {
	for _, u := range d.GetUpdates() {
		if u.GetDmsDisabled() != nil {
			return true
		}
	}
	return false
}
