package syncsvc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/ocspresponder"
	"github.com/outpost-pki/outpost/proto/syncpb"
)

// Delegated OCSP for edge CAs (RFC 6960 4.2.2.2). The control plane
// answers OCSP for every CA, but holds no edge CA key: for each edge CA
// of a DMS without a current responder certificate, heartbeat replies
// carry a ResponderRequest (a CSR for a responder key the control plane
// keeps); the agent signs it with the edge CA and sends the certificate
// back as a ResponderCertificate record, which is installed in the
// record's transaction.

// responderRequests returns the ResponderRequest updates for dmsID's
// edge CAs that need a responder certificate (valid, not revoked, no
// responder with a third of its life left). Run outside the message's
// transaction: preparing a request makes a key in the key store.
func (a *Applier) responderRequests(ctx context.Context, dmsID uuid.UUID, now time.Time) ([]*syncpb.Update, error) {
	rows, err := a.Reg.Pool().Query(ctx, `SELECT id FROM cas WHERE dms_id = $1 AND key_ref IS NULL AND status = 'active' AND not_after > $2 ORDER BY not_after DESC`, dmsID, now)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, err
	}
	var out []*syncpb.Update
	for _, id := range ids {
		csr, err := a.OCSP.DelegationRequest(ctx, id)
		if err != nil {
			return nil, err
		}
		if csr == nil {
			continue
		}
		sum := sha256.Sum256(csr)
		out = append(out, &syncpb.Update{
			UpdateId: "responder-" + id.String() + "-" + hex.EncodeToString(sum[:4]),
			Payload:  &syncpb.Update_ResponderRequest{ResponderRequest: &syncpb.ResponderRequest{CaId: id.String(), CsrDer: csr}},
		})
	}
	return out, nil
}

// applyResponderCertificate installs the responder certificate an edge CA
// of this DMS signed. Refused for good: a CA that is not this DMS's, a
// certificate the responder does not accept (wrong key: a newer request
// replaced the one it answers; the next heartbeat reply asks again). No
// pending request (installed by a copy of this record under another id,
// or the CA's responder is current) is acknowledged without change.
func (a *Applier) applyResponderCertificate(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, rc *syncpb.ResponderCertificate) (string, error) {
	caID, err := uuid.Parse(rc.GetCaId())
	if err != nil {
		return "responder_certificate: ca_id is not a CA id", nil
	}
	var owner *uuid.UUID
	err = tx.QueryRow(ctx, `SELECT dms_id FROM cas WHERE id = $1`, caID).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (owner == nil || *owner != dmsID)) {
		return "responder_certificate: ca " + caID.String() + " is not an edge CA of this DMS", nil
	} else if err != nil {
		return "", err
	}
	err = a.OCSP.InstallDelegatedTx(ctx, tx, caID, rc.GetCertificateDer())
	var invalid *ocspresponder.InvalidResponderError
	switch {
	case errors.As(err, &invalid):
		return "responder_certificate: " + invalid.Reason, nil
	case errors.Is(err, ocspresponder.ErrNotDelegated):
		a.log().Info("sync: responder certificate without a pending request; nothing to install", "dms_id", dmsID, "ca_id", caID)
		return "", nil
	case err != nil:
		return "", err
	}
	a.log().Info("sync: delegated ocsp responder installed", "dms_id", dmsID, "ca_id", caID)
	return "", nil
}
