package syncsvc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// Records that ask for something (an enrollment, an edge CA, an EST server
// certificate; identity renewals are in identity.go). The answer is an
// update in the same down message as the record's ack, and what it was is
// kept with the record in sync_records (result_serial, result_error,
// result_ca_id), so a redelivered record gets the same answer again and
// nothing is issued twice.

// applyEnrollment signs a device CSR the agent forwarded (online and
// queued modes). A refusal is not a Rejection: the record is acked and the
// answer is an EnrollmentResult with the error (permanent), which the
// agent passes on to the device.
func (a *Applier) applyEnrollment(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, rec *syncpb.Record, er *syncpb.EnrollmentRequest, now time.Time, out *applied) (string, error) {
	deviceID := er.GetDeviceId()
	if deviceID == "" {
		deviceID = rec.GetDeviceId()
	}
	// A savepoint of its own: a refusal keeps the record (acked, with
	// its error remembered) but nothing else it wrote.
	sp, err := tx.Begin(ctx)
	if err != nil {
		return "", err
	}
	cert, chain, err := a.Svc.EnrollTx(ctx, sp, caservice.EnrollRequest{DMSID: dmsID, DeviceID: deviceID, CSR: er.GetCsrDer(), CAID: er.GetCaId(),
		Label: er.GetLabel(), Profile: er.GetProfile(), ReenrollSerial: er.GetReenrollSerialHex()}, now)
	if err != nil {
		ce, ok := caservice.AsError(err)
		if !ok {
			return "", err
		}
		if err := sp.Rollback(ctx); err != nil {
			return "", err
		}
		msg := clip(ce.Message, syncproto.MaxReasonLength)
		if msg == "" {
			msg = "the enrollment was refused"
		}
		if err := remember(ctx, tx, dmsID, rec.GetRecordId(), resultError, msg); err != nil {
			return "", err
		}
		out.updates = append(out.updates, enrollmentError(rec.GetRecordId(), er.GetRequestId(), msg))
		return "", nil
	}
	if err := sp.Commit(ctx); err != nil {
		return "", err
	}
	if err := remember(ctx, tx, dmsID, rec.GetRecordId(), resultSerial, cert.Serial); err != nil {
		return "", err
	}
	out.updates = append(out.updates, enrollmentUpdate(er.GetRequestId(), cert, chain))
	return "", nil
}

func enrollmentUpdate(requestID string, cert *registry.Certificate, chain []*registry.CA) *syncpb.Update {
	r := &syncpb.EnrollmentResult{RequestId: requestID, CertificateDer: cert.DER, ChainDers: ders(chain)}
	return &syncpb.Update{UpdateId: "enroll-" + cert.Serial, Payload: &syncpb.Update_EnrollmentResult{EnrollmentResult: r}}
}

// enrollmentError answers a refused enrollment; its update id is derived
// from the record id, so a redelivery gets the same update.
func enrollmentError(recordID, requestID, msg string) *syncpb.Update {
	h := sha256.Sum256([]byte(recordID))
	r := &syncpb.EnrollmentResult{RequestId: requestID, Error: msg, Permanent: true}
	return &syncpb.Update{UpdateId: "enroll-error-" + hex.EncodeToString(h[:16]), Payload: &syncpb.Update_EnrollmentResult{EnrollmentResult: r}}
}

// applyEdgeCARequest certifies the agent's edge CA key (local mode).
func (a *Applier) applyEdgeCARequest(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, rec *syncpb.Record, r *syncpb.EdgeCARequest, now time.Time, out *applied) (string, error) {
	ca, chain, err := a.Svc.CreateEdgeCATx(ctx, tx, dmsID, r.GetCsrDer(), r.GetReason(), now)
	if err != nil {
		if ce, ok := caservice.AsError(err); ok {
			return "edge_ca_request: " + ce.Message, nil
		}
		return "", err
	}
	if err := remember(ctx, tx, dmsID, rec.GetRecordId(), resultCAID, ca.ID); err != nil {
		return "", err
	}
	out.updates = append(out.updates, edgeCAUpdate(ca, chain))
	return "", nil
}

func edgeCAUpdate(ca *registry.CA, chain []*registry.CA) *syncpb.Update {
	e := &syncpb.EdgeCACertificate{CertificateDer: ca.CertDER, ChainDers: ders(chain), CaId: ca.ID.String()}
	return &syncpb.Update{UpdateId: "edge-ca-" + ca.ID.String(), Payload: &syncpb.Update_EdgeCa{EdgeCa: e}}
}

// applyServerCertificate issues the TLS server certificate of the agent's
// EST endpoint.
func (a *Applier) applyServerCertificate(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, rec *syncpb.Record, r *syncpb.ServerCertificateRequest, now time.Time, out *applied) (string, error) {
	cert, chain, err := a.Svc.ESTServerCertificateTx(ctx, tx, dmsID, r.GetCsrDer(), now)
	if err != nil {
		if ce, ok := caservice.AsError(err); ok {
			return "server_certificate_request: " + ce.Message, nil
		}
		return "", err
	}
	if err := remember(ctx, tx, dmsID, rec.GetRecordId(), resultSerial, cert.Serial); err != nil {
		return "", err
	}
	out.updates = append(out.updates, serverCertUpdate(cert, chain))
	return "", nil
}

func serverCertUpdate(cert *registry.Certificate, chain []*registry.CA) *syncpb.Update {
	sc := &syncpb.ServerCertificate{CertificateDer: cert.DER, ChainDers: ders(chain)}
	return &syncpb.Update{UpdateId: "server-cert-" + cert.Serial, Payload: &syncpb.Update_ServerCertificate{ServerCertificate: sc}}
}

// remember keeps a record's answer (column result_serial, result_error or
// result_ca_id of sync_records) so a redelivery gets the same one.
func remember(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, recordID string, column answerColumn, value any) error {
	_, err := tx.Exec(ctx, `UPDATE sync_records SET `+string(column)+` = $3 WHERE dms_id = $1 AND record_id = $2`, dmsID, recordID, value)
	return err
}

// answerColumn is a column of sync_records that keeps an answer.
type answerColumn string

const (
	resultSerial answerColumn = "result_serial"
	resultError  answerColumn = "result_error"
	resultCAID   answerColumn = "result_ca_id"
)

func ders(chain []*registry.CA) [][]byte {
	out := make([][]byte, 0, len(chain))
	for _, c := range chain {
		out = append(out, c.CertDER)
	}
	return out
}

// answerAgain re-sends the answer of a record applied before, if it has
// one: the certificate of an identity renewal, an enrollment or an EST
// server certificate request, an enrollment's error, or an edge CA. A
// certificate or CA revoked since is not sent again (an enrollment gets
// an error instead).
func (a *Applier) answerAgain(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, rec *syncpb.Record, out *applied) error {
	switch rec.GetPayload().(type) {
	case *syncpb.Record_IdentityRenewal, *syncpb.Record_EnrollmentRequest, *syncpb.Record_EdgeCaRequest, *syncpb.Record_ServerCertificateRequest:
	default:
		return nil
	}
	var serial, errText *string
	var caID *uuid.UUID
	if err := tx.QueryRow(ctx, `SELECT result_serial, result_error, result_ca_id FROM sync_records WHERE dms_id = $1 AND record_id = $2`,
		dmsID, rec.GetRecordId()).Scan(&serial, &errText, &caID); err != nil {
		return err
	}
	q := registry.On(tx)
	if er := rec.GetEnrollmentRequest(); er != nil && errText != nil {
		out.updates = append(out.updates, enrollmentError(rec.GetRecordId(), er.GetRequestId(), *errText))
		return nil
	}
	if _, ok := rec.GetPayload().(*syncpb.Record_EdgeCaRequest); ok {
		if caID == nil {
			return nil
		}
		ca, err := q.GetCA(ctx, *caID)
		if err != nil || ca.Status == "revoked" || ca.ParentID == nil {
			return err
		}
		parent, err := q.GetCA(ctx, *ca.ParentID)
		if err != nil {
			return err
		}
		chain, err := caservice.ChainOf(ctx, q, parent)
		if err != nil {
			return err
		}
		out.updates = append(out.updates, edgeCAUpdate(ca, chain))
		return nil
	}
	if serial == nil {
		return nil
	}
	cert, err := q.GetCertificate(ctx, *serial)
	if err != nil {
		return err
	}
	if cert.Status == "revoked" {
		if er := rec.GetEnrollmentRequest(); er != nil {
			out.updates = append(out.updates, enrollmentError(rec.GetRecordId(), er.GetRequestId(), "the certificate issued for this request has been revoked"))
		}
		return nil // replaced since: the agent must not install it
	}
	ca, err := q.GetCA(ctx, cert.IssuerID)
	if err != nil {
		return err
	}
	chain, err := caservice.ChainOf(ctx, q, ca)
	if err != nil {
		return err
	}
	switch p := rec.GetPayload().(type) {
	case *syncpb.Record_IdentityRenewal:
		out.updates = append(out.updates, identityUpdate(rec.GetRecordId(), cert, chain))
	case *syncpb.Record_EnrollmentRequest:
		out.updates = append(out.updates, enrollmentUpdate(p.EnrollmentRequest.GetRequestId(), cert, chain))
	case *syncpb.Record_ServerCertificateRequest:
		out.updates = append(out.updates, serverCertUpdate(cert, chain))
	}
	return nil
}
