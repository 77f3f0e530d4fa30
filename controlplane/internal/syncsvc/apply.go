// Package syncsvc is the control plane's side of the agent sync: it
// applies the records agents send, each message in one Postgres
// transaction that also records every record id, so a redelivered message
// changes nothing; the reply (acks and rejections) is built only after
// the commit. Transport (MQTT) lives in consumer.go.
package syncsvc

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
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
}

// applied collects what one message's transaction produced besides acks:
// updates for the agent and revocations to announce after the commit.
type applied struct {
	updates        []*syncpb.Update
	revokedSerials []string
	revokedCAs     []uuid.UUID
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
// acks of every record now durably applied (new or seen before) and the
// rejections; nil when there is nothing to answer (a heartbeat alone).
// Nothing is acked before the transaction committed.
func (a *Applier) Apply(ctx context.Context, dmsID uuid.UUID, env *syncpb.Envelope) (*syncpb.Envelope, error) {
	up := env.GetUp()
	if up == nil {
		return nil, fmt.Errorf("sync: message %s is not an up message", env.GetMessageId())
	}
	ack := &syncpb.Ack{}
	var out applied
	err := a.Reg.Tx(ctx, func(tx pgx.Tx) error {
		ack.RecordIds, ack.Rejections = nil, nil
		out = applied{}
		var status string
		if err := tx.QueryRow(ctx, `SELECT status FROM dmss WHERE id = $1 FOR SHARE`, dmsID).Scan(&status); err != nil || status != "active" {
			return ErrUnknownDMS
		}
		now := a.now()
		if hb := up.GetHeartbeat(); hb != nil {
			var edge *time.Time
			if hb.GetEdgeCaNotAfterUnixMs() > 0 {
				t := time.UnixMilli(hb.GetEdgeCaNotAfterUnixMs())
				edge = &t
			}
			var lastSync *time.Time
			if hb.GetLastSyncUnixMs() > 0 {
				t := time.UnixMilli(hb.GetLastSyncUnixMs())
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
			kind := recordKind(rec)
			if reason, permanent := a.supported(rec); reason != "" {
				ack.Rejections = append(ack.Rejections, &syncpb.Rejection{RecordId: rec.GetRecordId(), Reason: reason, Permanent: permanent})
				continue
			}
			tag, err := tx.Exec(ctx, `INSERT INTO sync_records (dms_id, record_id, kind) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, dmsID, rec.GetRecordId(), kind)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				// Applied before: ack again, with the same answer.
				if err := a.answerAgain(ctx, tx, dmsID, rec, &out); err != nil {
					return err
				}
				ack.RecordIds = append(ack.RecordIds, rec.GetRecordId())
				continue
			}
			if reason, err := a.applyRecord(ctx, tx, dmsID, rec, now, &out); err != nil {
				return err
			} else if reason != "" {
				// Refused for good: forget the id so a corrected record
				// with the same id is not silently swallowed.
				if _, err := tx.Exec(ctx, `DELETE FROM sync_records WHERE dms_id = $1 AND record_id = $2`, dmsID, rec.GetRecordId()); err != nil {
					return err
				}
				ack.Rejections = append(ack.Rejections, &syncpb.Rejection{RecordId: rec.GetRecordId(), Reason: reason, Permanent: true})
				continue
			}
			ack.RecordIds = append(ack.RecordIds, rec.GetRecordId())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out.revokedSerials) > 0 {
		a.Svc.RevokedAfterCommit(ctx, out.revokedCAs, out.revokedSerials)
		if a.OnIdentityReplaced != nil {
			a.OnIdentityReplaced(dmsID)
		}
	}
	if len(ack.RecordIds) == 0 && len(ack.Rejections) == 0 && len(out.updates) == 0 {
		return nil, nil // a heartbeat alone: nothing to answer
	}
	return &syncpb.Envelope{
		MessageId:       syncproto.NewMessageID(),
		DmsId:           dmsID.String(),
		SentAtUnixMs:    a.now().UnixMilli(),
		ProtocolVersion: syncproto.ProtocolVersion,
		Body:            &syncpb.Envelope_Down{Down: &syncpb.Down{Ack: ack, Updates: out.updates}},
	}, nil
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
	}
	return "unknown"
}

// supported returns a rejection for record kinds this control plane does
// not apply yet (not permanent: a newer control plane will).
func (a *Applier) supported(rec *syncpb.Record) (string, bool) {
	switch rec.GetPayload().(type) {
	case *syncpb.Record_Event, *syncpb.Record_IssuedCertificate:
		return "", false
	case *syncpb.Record_IdentityRenewal:
		if a.Svc != nil {
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
		if p.Event.GetKind() == syncproto.EventIdentityInstalled {
			if reason, err := a.identityInstalled(ctx, tx, dmsID, p.Event, now, out); reason != "" || err != nil {
				return reason, err
			}
		}
		at := time.UnixMilli(p.Event.GetAtUnixMs())
		if p.Event.GetAtUnixMs() == 0 {
			at = now
		}
		detail := p.Event.GetDetailJson()
		if detail == "" {
			detail = "{}"
		}
		_, err := tx.Exec(ctx, `INSERT INTO sync_events (dms_id, record_id, device_id, kind, detail, at) VALUES ($1,$2,$3,$4,$5,$6)`,
			dmsID, rec.GetRecordId(), rec.GetDeviceId(), truncate(p.Event.GetKind(), 128), detail, at)
		return "", err
	case *syncpb.Record_IssuedCertificate:
		return a.applyIssued(ctx, tx, dmsID, rec, p.IssuedCertificate)
	}
	return "unsupported record", nil
}

// applyIssued records a certificate an agent's edge CA issued offline.
func (a *Applier) applyIssued(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, rec *syncpb.Record, ic *syncpb.IssuedCertificate) (string, error) {
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
	rc := &registry.Certificate{Serial: strings.ToLower(cert.SerialNumber.Text(16)), IssuerID: caID, Subject: cert.Subject.String(), CommonName: cert.Subject.CommonName,
		SANs: append([]string{}, cert.DNSNames...), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, Status: "active", DMSID: &dmsID, Profile: "edge", DER: cert.Raw}
	if d := rec.GetDeviceId(); d != "" {
		if _, err := q.GetDevice(ctx, d); err == nil {
			rc.DeviceID = &d
		}
	}
	if err := q.InsertCertificate(ctx, rc); err != nil && !errors.Is(err, registry.ErrConflict) {
		return "", err
	}
	if rc.DeviceID != nil {
		if err := q.AddToSlot(ctx, *rc.DeviceID, caID, rc.Serial); err != nil && !errors.Is(err, registry.ErrConflict) {
			return "", err
		}
	}
	return "", q.AddEvent(ctx, &registry.Event{DeviceID: rc.DeviceID, DMSID: &dmsID, CAID: &caID, Kind: "certificate.issued", Detail: map[string]any{"serial": rc.Serial, "edge": true}})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
