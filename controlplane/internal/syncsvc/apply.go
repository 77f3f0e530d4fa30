// Package syncsvc is the control plane's side of the agent sync: it
// applies the records agents send, each message in one Postgres
// transaction that also records every record id, so a redelivered message
// changes nothing; the reply (acks, rejections and updates: answers to
// requests, and the DMS's policy, CA bundles and CRLs when a heartbeat
// shows the agent lacks them) is published only after the commit.
// Transport (MQTT) lives in consumer.go.
package syncsvc

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/ocspresponder"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// Applier applies up messages.
type Applier struct {
	Reg *registry.Registry
	// Svc issues what records ask for (identity renewals). Without it,
	// such records are rejected as not handled (not permanently).
	Svc *caservice.Service
	Now func() time.Time
	Log *slog.Logger
	// OnIdentityReplaced, if set, is called after a DMS's previous
	// identity certificates were revoked because its agent installed a
	// new one (the embedded broker drops the connection made with the old
	// certificate, so the agent reconnects with the new one).
	OnIdentityReplaced func(dmsID uuid.UUID)
	// OCSP, if set, is the OCSP responder: edge CAs certify its keys over
	// sync (responders.go). Without it, ResponderCertificate records are
	// rejected as not handled and no ResponderRequest is sent.
	OCSP *ocspresponder.Responder

	// disabledWarned: DMS id -> when this replica last logged a warning
	// for a disabled DMS's message (one an hour per DMS; Debug between).
	disabledWarned sync.Map
}

// disabledWarnEvery is how often a replica warns about each disabled DMS
// that still sends (its agent heartbeats until it is shut down).
const disabledWarnEvery = time.Hour

// applied collects what one message's transaction produced besides acks:
// updates for the agent and revocations to announce after the commit.
type applied struct {
	// updates answer the record being applied (collected per record
	// into answers).
	updates        []*syncpb.Update
	revokedSerials []string
	revokedCAs     []uuid.UUID
	// dms is the DMS row, read once per message when a record needs its
	// policy.
	dms *registry.DMS
}

// answer is what the reply says about one record: an ack or a rejection,
// and the updates that answer it. They travel together: a record is never
// acked in a message without its answer.
type answer struct {
	ackID     string
	rejection *syncpb.Rejection
	updates   []*syncpb.Update
}

func (a *Applier) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (a *Applier) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// ErrUnknownDMS: the message comes from a DMS the registry does not know
// or that is not active.
var ErrUnknownDMS = errors.New("sync: unknown or inactive DMS")

// Apply applies one up message from dmsID (the DMS of the topic and of
// the sender's identity) and returns the down message to send back: the
// acks of every record now durably applied (new or seen before) with
// their answers, the rejections, and, when the message carries a
// heartbeat, the state updates the agent lacks (see state.go); nil when
// there is nothing to answer. Nothing is acked before the transaction
// committed. A reply never exceeds syncproto's limits: records whose
// answers do not fit are left unacknowledged (the agent sends them again
// and gets the same answers), state that does not fit waits for the next
// heartbeat.
func (a *Applier) Apply(ctx context.Context, dmsID uuid.UUID, env *syncpb.Envelope) (*syncpb.Envelope, error) {
	up := env.GetUp()
	if up == nil {
		return nil, fmt.Errorf("sync: message %s is not an up message", env.GetMessageId())
	}
	version := agentVersion(env)
	var answers []answer
	var state *stateUpdates
	var out applied
	var disabledAt *time.Time
	disabled := false
	err := a.Reg.Tx(ctx, func(tx pgx.Tx) error {
		answers, state = nil, nil
		out = applied{}
		disabled, disabledAt = false, nil
		// Only "no such row" and a DMS that is not active are
		// ErrUnknownDMS, which the consumer acknowledges and drops; a
		// database error (a restart, a lost connection, a cancelled
		// context) must leave the message to be applied again.
		var status string
		if err := tx.QueryRow(ctx, `SELECT status FROM dmss WHERE id = $1 FOR SHARE`, dmsID).Scan(&status); errors.Is(err, pgx.ErrNoRows) {
			return ErrUnknownDMS
		} else if err != nil {
			return fmt.Errorf("sync: reading DMS %s: %w", dmsID, err)
		}
		if status == "disabled" && version >= 4 {
			// When its identity was revoked, for the answer (rare: read
			// here, not with every message's status).
			if err := tx.QueryRow(ctx, `SELECT c.revoked_at FROM dmss d JOIN certificates c ON c.serial = d.identity_serial WHERE d.id = $1`, dmsID).Scan(&disabledAt); err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("sync: reading DMS %s: %w", dmsID, err)
			}
			disabled = true
			return nil
		}
		if status != "active" {
			return ErrUnknownDMS
		}
		now := a.now()
		hb := up.GetHeartbeat()
		if hb != nil {
			var edge *time.Time
			if t, ok := storableTime(hb.GetEdgeCaNotAfterUnixMs()); ok && hb.GetEdgeCaNotAfterUnixMs() > 0 {
				edge = &t
			}
			var lastSync *time.Time
			if t, ok := storableTime(hb.GetLastSyncUnixMs()); ok && hb.GetLastSyncUnixMs() > 0 {
				lastSync = &t
			}
			if _, err := tx.Exec(ctx, `UPDATE dmss SET last_seen_at = $2, agent_version = $3, queue_depth = $4, edge_ca_not_after = $5, last_sync_at = $6 WHERE id = $1`,
				dmsID, now, truncate(hb.GetAgentVersion(), 64), int64(min(hb.GetQueueDepth(), 1<<62)), edge, lastSync); err != nil {
				return err
			}
		} else if _, err := tx.Exec(ctx, `UPDATE dmss SET last_seen_at = $2 WHERE id = $1`, dmsID, now); err != nil {
			return err
		}
		for _, rec := range up.GetRecords() {
			ans, err := a.applyOne(ctx, tx, dmsID, rec, now, &out)
			if err != nil {
				return err
			}
			answers = append(answers, ans)
		}
		// Policy, bundles and CRLs go to agents that can echo a policy
		// digest (version 2 on); older ones would get them on every
		// heartbeat.
		if hb != nil && version >= 2 {
			var err error
			if state, err = a.stateFor(ctx, tx, dmsID, hb); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if disabled {
		return a.disabledAnswer(dmsID, version, disabledAt), nil
	}
	if len(out.revokedSerials) > 0 {
		a.Svc.RevokedAfterCommit(ctx, out.revokedCAs, out.revokedSerials)
		if a.OnIdentityReplaced != nil {
			a.OnIdentityReplaced(dmsID)
		}
	}
	if state != nil && version >= 3 && a.OCSP != nil {
		// Failing to prepare a responder request only delays it to the
		// next heartbeat: the records are committed, answer them.
		if state.responders, err = a.responderRequests(ctx, dmsID, a.now()); err != nil {
			a.log().Warn("sync: preparing ocsp responder requests", "dms_id", dmsID, "err", err)
		}
	}
	down := buildDown(answers, state)
	if down == nil {
		return nil, nil // nothing to answer (a heartbeat of an agent up to date)
	}
	return &syncpb.Envelope{
		MessageId:       syncproto.NewMessageID(),
		DmsId:           dmsID.String(),
		SentAtUnixMs:    a.now().UnixMilli(),
		ProtocolVersion: version,
		Body:            &syncpb.Envelope_Down{Down: down},
	}, nil
}

// agentVersion is the protocol version to answer in: the highest the
// agent says it speaks (envelope or heartbeat), at most ours.
func agentVersion(env *syncpb.Envelope) uint32 {
	v := env.GetProtocolVersion()
	if hv := env.GetUp().GetHeartbeat().GetProtocolVersion(); hv > v {
		v = hv
	}
	return max(min(v, syncproto.ProtocolVersion), 1)
}

// applyOne applies one record (or recognises it as applied before) and
// returns what the reply says about it. An error aborts the message.
func (a *Applier) applyOne(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, rec *syncpb.Record, now time.Time, out *applied) (answer, error) {
	id := rec.GetRecordId()
	if reason, permanent := a.supported(rec); reason != "" {
		return answer{rejection: &syncpb.Rejection{RecordId: id, Reason: reason, Permanent: permanent}}, nil
	}
	tag, err := tx.Exec(ctx, `INSERT INTO sync_records (dms_id, record_id, kind) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, dmsID, id, recordKind(rec))
	if err != nil {
		return answer{}, err
	}
	out.updates = nil
	if tag.RowsAffected() == 0 {
		// Applied before: ack again, with the same answer.
		if err := a.answerAgain(ctx, tx, dmsID, rec, out); err != nil {
			return answer{}, err
		}
		return answer{ackID: id, updates: out.updates}, nil
	}
	// Records other than events run in a savepoint, so that a refusal
	// leaves nothing of what they wrote before refusing.
	db := tx
	if _, isEvent := rec.GetPayload().(*syncpb.Record_Event); !isEvent {
		if db, err = tx.Begin(ctx); err != nil {
			return answer{}, err
		}
	}
	reason, err := a.applyRecord(ctx, db, dmsID, rec, now, out)
	if err != nil {
		return answer{}, err
	}
	if reason != "" {
		if db != tx {
			if err := db.Rollback(ctx); err != nil {
				return answer{}, err
			}
		}
		// Refused for good: forget the id so a corrected record with the
		// same id is not silently swallowed.
		if _, err := tx.Exec(ctx, `DELETE FROM sync_records WHERE dms_id = $1 AND record_id = $2`, dmsID, id); err != nil {
			return answer{}, err
		}
		return answer{rejection: &syncpb.Rejection{RecordId: id, Reason: clip(reason, syncproto.MaxReasonLength), Permanent: true}}, nil
	}
	if db != tx {
		if err := db.Commit(ctx); err != nil {
			return answer{}, err
		}
	}
	return answer{ackID: id, updates: out.updates}, nil
}

func recordKind(rec *syncpb.Record) string {
	switch rec.GetPayload().(type) {
	case *syncpb.Record_Event:
		return "event"
	case *syncpb.Record_IssuedCertificate:
		return "issued_certificate"
	case *syncpb.Record_EnrollmentRequest:
		return "enrollment_request"
	case *syncpb.Record_EdgeCaRequest:
		return "edge_ca_request"
	case *syncpb.Record_IdentityRenewal:
		return "identity_renewal"
	case *syncpb.Record_RevocationReport:
		return "revocation_report"
	case *syncpb.Record_ServerCertificateRequest:
		return "server_certificate_request"
	case *syncpb.Record_ResponderCertificate:
		return "responder_certificate"
	}
	return "unknown"
}

// supported returns a rejection for record kinds this control plane does
// not apply yet (not permanent: a newer control plane will).
func (a *Applier) supported(rec *syncpb.Record) (string, bool) {
	switch rec.GetPayload().(type) {
	case *syncpb.Record_Event, *syncpb.Record_IssuedCertificate:
		return "", false
	case *syncpb.Record_IdentityRenewal, *syncpb.Record_EnrollmentRequest, *syncpb.Record_EdgeCaRequest, *syncpb.Record_ServerCertificateRequest:
		if a.Svc != nil {
			return "", false
		}
	case *syncpb.Record_ResponderCertificate:
		if a.OCSP != nil {
			return "", false
		}
	}
	return "record kind " + recordKind(rec) + " is not handled by this control plane yet", false
}

// applyRecord applies a new record in the message's transaction. A
// non-empty reason refuses the record for good (bad content); an error
// aborts the whole message (retried on redelivery).
func (a *Applier) applyRecord(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, rec *syncpb.Record, now time.Time, out *applied) (string, error) {
	switch p := rec.GetPayload().(type) {
	case *syncpb.Record_IdentityRenewal:
		return a.applyIdentityRenewal(ctx, tx, dmsID, rec, p.IdentityRenewal, now, out)
	case *syncpb.Record_Event:
		// Refused before anything is written: events run without a
		// savepoint.
		at, ok := storableTime(p.Event.GetAtUnixMs())
		if !ok {
			return "event: at_unix_ms is not a time between the years 1 and 9999", nil
		}
		if p.Event.GetKind() == syncproto.EventIdentityInstalled {
			if reason, err := a.identityInstalled(ctx, tx, dmsID, p.Event, now, out); reason != "" || err != nil {
				return reason, err
			}
		}
		if p.Event.GetAtUnixMs() == 0 {
			at = now
		}
		detail := p.Event.GetDetailJson()
		if detail == "" {
			detail = "{}"
		}
		_, err := tx.Exec(ctx, `INSERT INTO sync_events (dms_id, record_id, device_id, kind, detail, at) VALUES ($1,$2,$3,$4,$5,$6)`,
			dmsID, rec.GetRecordId(), rec.GetDeviceId(), truncate(p.Event.GetKind(), 128), detail, at)
		if err == nil { // a device's event also goes into its timeline (device_events.go)
			err = a.deviceTimeline(ctx, tx, dmsID, rec.GetDeviceId(), truncate(p.Event.GetKind(), 128), detail, at)
		}
		return "", err
	case *syncpb.Record_IssuedCertificate:
		return a.applyIssued(ctx, tx, dmsID, rec, p.IssuedCertificate, now, out)
	case *syncpb.Record_EnrollmentRequest:
		return a.applyEnrollment(ctx, tx, dmsID, rec, p.EnrollmentRequest, now, out)
	case *syncpb.Record_EdgeCaRequest:
		return a.applyEdgeCARequest(ctx, tx, dmsID, rec, p.EdgeCaRequest, now, out)
	case *syncpb.Record_ServerCertificateRequest:
		return a.applyServerCertificate(ctx, tx, dmsID, rec, p.ServerCertificateRequest, now, out)
	case *syncpb.Record_ResponderCertificate:
		return a.applyResponderCertificate(ctx, tx, dmsID, p.ResponderCertificate)
	}
	return "unsupported record", nil
}

// applyIssued records a certificate an agent's edge CA issued offline
// (local mode): the device follows the DMS's rules (caservice.AdmitDevice),
// the certificate goes into the device's slot for the edge CA with a
// "certificate.issued" event. A certificate recorded before changes
// nothing. Refused for good: not a certificate of one of this DMS's edge
// CAs, an edge CA revoked, a device the DMS may not bring in.
func (a *Applier) applyIssued(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, rec *syncpb.Record, ic *syncpb.IssuedCertificate, now time.Time, out *applied) (string, error) {
	cert, err := x509.ParseCertificate(ic.GetCertificateDer())
	if err != nil {
		return "issued_certificate: not a DER certificate", nil
	}
	caID, err := uuid.Parse(ic.GetCaId())
	if err != nil {
		return "issued_certificate: ca_id is not a CA id", nil
	}
	q := registry.On(tx)
	ca, err := q.GetCA(ctx, caID)
	if errors.Is(err, registry.ErrNotFound) {
		return "issued_certificate: unknown CA", nil
	} else if err != nil {
		return "", err
	}
	if ca.DMSID == nil || *ca.DMSID != dmsID {
		return "issued_certificate: the CA is not this DMS's edge CA", nil
	}
	caCert, err := x509.ParseCertificate(ca.CertDER)
	if err != nil {
		return "", err
	}
	if err := cert.CheckSignatureFrom(caCert); err != nil {
		return "issued_certificate: not signed by the edge CA", nil
	}
	if ca.Status == "revoked" {
		if ca.RevokedAt != nil && cert.NotBefore.After(*ca.RevokedAt) {
			return "issued_certificate: issued after the edge CA was revoked", nil
		}
		return "issued_certificate: the edge CA is revoked", nil
	}
	serial := strings.ToLower(cert.SerialNumber.Text(16))
	switch prev, err := q.GetCertificate(ctx, serial); {
	case err == nil && bytes.Equal(prev.DER, cert.Raw):
		return "", nil // recorded before (under another record id)
	case err == nil:
		return "issued_certificate: another certificate with this serial is recorded", nil
	case !errors.Is(err, registry.ErrNotFound):
		return "", err
	}
	deviceID := ic.GetDeviceId()
	if deviceID == "" {
		deviceID = rec.GetDeviceId()
	}
	if out.dms == nil {
		if out.dms, err = q.GetDMS(ctx, dmsID); err != nil {
			return "", err
		}
	}
	if err := caservice.AdmitDevice(ctx, tx, dmsID, deviceID, out.dms.JITRegistration, now); err != nil {
		if ce, ok := caservice.AsError(err); ok {
			return "issued_certificate: " + ce.Message, nil
		}
		return "", err
	}
	rc := &registry.Certificate{Serial: serial, IssuerID: caID, Subject: cert.Subject.String(), CommonName: cert.Subject.CommonName,
		SANs: sansOf(cert), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, Status: "active", DMSID: &dmsID, DeviceID: &deviceID, Profile: "edge", DER: cert.Raw}
	if err := q.InsertCertificate(ctx, rc); err != nil {
		return "", err
	}
	if err := q.AddToSlot(ctx, deviceID, caID, serial); err != nil {
		return "", err
	}
	return "", q.AddEvent(ctx, &registry.Event{DeviceID: &deviceID, DMSID: &dmsID, CAID: &caID, Kind: "certificate.issued",
		Detail: map[string]any{"serial": serial, "ca_id": caID.String(), "edge": true, "request_id": ic.GetRequestId()}})
}

// sansOf lists a certificate's SANs as the registry keeps them.
func sansOf(c *x509.Certificate) []string {
	out := append([]string{}, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return append(out, c.EmailAddresses...)
}

// storableTime converts milliseconds since 1970 to a time, and reports
// whether it lies in the years 1 to 9999: beyond, the conversion to
// PostgreSQL's microseconds overflows silently and stores another time.
func storableTime(ms int64) (time.Time, bool) {
	const minMs, maxMs = -62135596800000, 253402300799999 // 0001-01-01, 9999-12-31T23:59:59.999Z
	if ms < minMs || ms > maxMs {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// clip makes s valid UTF-8 of at most n bytes (a reason or an error text
// in a down message), cutting on a rune boundary.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	for len(s) > n {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// disabledAnswer is the whole answer to an up message of a disabled DMS
// (protocol 4 on): one DMSDisabled update and no ack, so the agent keeps
// its outbox, stops issuing and tells its devices. Behind the embedded
// broker the agent learns it from CONNACK Banned; behind an external
// broker this reply is how it learns. The same message seen by two
// replicas gets the same answer, and nothing is written.
func (a *Applier) disabledAnswer(dmsID uuid.UUID, version uint32, at *time.Time) *syncpb.Envelope {
	var ms int64
	if at != nil {
		ms = at.UnixMilli()
	}
	now := a.now()
	if last, ok := a.disabledWarned.Load(dmsID); !ok || now.Sub(last.(time.Time)) >= disabledWarnEvery {
		a.disabledWarned.Store(dmsID, now)
		a.log().Warn("sync: message from a disabled DMS; answered DMSDisabled (its gateway should be shut down; logged once an hour)", "dms_id", dmsID)
	} else {
		a.log().Debug("sync: message from a disabled DMS; answered DMSDisabled", "dms_id", dmsID)
	}
	return &syncpb.Envelope{
		MessageId:       syncproto.NewMessageID(),
		DmsId:           dmsID.String(),
		SentAtUnixMs:    a.now().UnixMilli(),
		ProtocolVersion: version,
		Body: &syncpb.Envelope_Down{Down: &syncpb.Down{Updates: []*syncpb.Update{{
			UpdateId: "dms-disabled",
			Payload:  &syncpb.Update_DmsDisabled{DmsDisabled: &syncpb.DMSDisabled{DisabledAtUnixMs: ms}},
		}}}},
	}
}
