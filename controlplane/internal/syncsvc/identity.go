package syncsvc

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// applyIdentityRenewal issues a renewed identity certificate and queues it
// for the agent; the serial is kept with the record so a redelivery gets
// the same certificate back (answerAgain).
func (a *Applier) applyIdentityRenewal(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, rec *syncpb.Record, r *syncpb.IdentityRenewal, now time.Time, out *applied) (string, error) {
	cert, chain, err := a.Svc.RenewDMSIdentityTx(ctx, tx, dmsID, r.GetCsrDer(), now)
	if err != nil {
		if ce, ok := caservice.AsError(err); ok && ce.Kind == caservice.KindInvalid {
			return "identity_renewal: " + ce.Message, nil
		}
		return "", err
	}
	if err := remember(ctx, tx, dmsID, rec.GetRecordId(), resultSerial, cert.Serial); err != nil {
		return "", err
	}
	out.updates = append(out.updates, identityUpdate(rec.GetRecordId(), cert, chain))
	return "", nil
}

func identityUpdate(recordID string, cert *registry.Certificate, chain []*registry.CA) *syncpb.Update {
	ic := &syncpb.IdentityCertificate{CertificateDer: cert.DER, ChainDers: ders(chain)}
	return &syncpb.Update{UpdateId: "identity-" + cert.Serial, Payload: &syncpb.Update_Identity{Identity: ic}}
}

// identityInstalled handles the agent's report that it uses a renewed
// identity certificate.
func (a *Applier) identityInstalled(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, ev *syncpb.Event, now time.Time, out *applied) (string, error) {
	if a.Svc == nil {
		return "", nil
	}
	var d struct {
		Serial string `json:"serial"`
	}
	if err := json.Unmarshal([]byte(ev.GetDetailJson()), &d); err != nil || d.Serial == "" {
		return syncproto.EventIdentityInstalled + ": detail_json needs a serial", nil
	}
	revoked, cas, err := a.Svc.IdentityInstalledTx(ctx, tx, dmsID, d.Serial, now)
	if ce, ok := caservice.AsError(err); ok && ce.Kind == caservice.KindInvalid {
		return syncproto.EventIdentityInstalled + ": " + ce.Message, nil
	} else if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return "", err
	}
	out.revokedSerials = append(out.revokedSerials, revoked...)
	out.revokedCAs = append(out.revokedCAs, cas...)
	return "", nil
}
