package registry

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// CA is a row of cas.
type CA struct {
	ID               uuid.UUID
	Name             string
	ParentID         *uuid.UUID
	Kind             string // root | intermediate | edge | external
	Role             *string
	KeyRef           *string
	Status           string
	Subject          string
	Serial           string
	NotBefore        time.Time
	NotAfter         time.Time
	CertDER          []byte
	RevokedAt        *time.Time
	RevocationReason *int
	CreatedAt        time.Time
	// DMSID is the DMS holding an edge CA's key.
	DMSID *uuid.UUID
}

const caColumns = `id, name, parent_id, kind, role, key_ref, status, subject, serial, not_before, not_after, cert_der, revoked_at, revocation_reason, created_at, dms_id`

func scanCA(row interface{ Scan(...any) error }) (*CA, error) {
	var c CA
	err := row.Scan(&c.ID, &c.Name, &c.ParentID, &c.Kind, &c.Role, &c.KeyRef, &c.Status, &c.Subject, &c.Serial,
		&c.NotBefore, &c.NotAfter, &c.CertDER, &c.RevokedAt, &c.RevocationReason, &c.CreatedAt, &c.DMSID)
	return &c, err
}

// InsertCA stores a CA. ErrConflict if its name or role is taken.
func (q *Queries) InsertCA(ctx context.Context, c *CA) error {
	_, err := q.db.Exec(ctx, `INSERT INTO cas (id, name, parent_id, kind, role, key_ref, status, subject, serial, not_before, not_after, cert_der, dms_id)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)`,
		c.ID, c.Name, c.ParentID, c.Kind, c.Role, c.KeyRef, c.Status, c.Subject, c.Serial, c.NotBefore, c.NotAfter, c.CertDER, c.DMSID)
	return mapErr(err, "ca "+c.Name)
}

// GetCA returns a CA by id.
func (q *Queries) GetCA(ctx context.Context, id uuid.UUID) (*CA, error) {
	c, err := scanCA(q.db.QueryRow(ctx, `SELECT `+caColumns+` FROM cas WHERE id = $1`, id))
	return c, mapErr(err, "ca "+id.String())
}

// GetCAByRole returns the CA with a bootstrap role, or ErrNotFound.
func (q *Queries) GetCAByRole(ctx context.Context, role string) (*CA, error) {
	c, err := scanCA(q.db.QueryRow(ctx, `SELECT `+caColumns+` FROM cas WHERE role = $1`, role))
	return c, mapErr(err, "ca with role "+role)
}

// FindCAsBySubject returns CAs whose subject (RFC 2253 string) matches,
// newest first: candidates for the issuer of an imported certificate.
func (q *Queries) FindCAsBySubject(ctx context.Context, subject string) ([]*CA, error) {
	rows, err := q.db.Query(ctx, `SELECT `+caColumns+` FROM cas WHERE subject = $1 ORDER BY created_at DESC`, subject)
	if err != nil {
		return nil, mapErr(err, "finding cas")
	}
	defer rows.Close()
	var out []*CA
	for rows.Next() {
		c, err := scanCA(rows)
		if err != nil {
			return nil, mapErr(err, "reading cas")
		}
		out = append(out, c)
	}
	return out, mapErr(rows.Err(), "reading cas")
}

// ListCAs pages through CAs in creation order.
func (q *Queries) ListCAs(ctx context.Context, cur string, limit int) ([]*CA, string, error) {
	c, err := decodeCursor(cur)
	if err != nil {
		return nil, "", err
	}
	limit = ClampLimit(limit)
	args := []any{limit + 1}
	where := ""
	if c != nil {
		id, err := uuid.Parse(c.K)
		if err != nil {
			return nil, "", ErrBadCursor
		}
		where = `WHERE (created_at, id) > ($2, $3)`
		args = append(args, c.T, id)
	}
	rows, err := q.db.Query(ctx, `SELECT `+caColumns+` FROM cas `+where+` ORDER BY created_at, id LIMIT $1`, args...)
	if err != nil {
		return nil, "", mapErr(err, "listing cas")
	}
	defer rows.Close()
	var out []*CA
	for rows.Next() {
		ca, err := scanCA(rows)
		if err != nil {
			return nil, "", mapErr(err, "reading cas")
		}
		out = append(out, ca)
	}
	if err := rows.Err(); err != nil {
		return nil, "", mapErr(err, "reading cas")
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = cursor{T: last.CreatedAt, K: last.ID.String()}.encode()
	}
	return out, next, nil
}

// CASubtree returns the ids of a CA and every CA below it.
func (q *Queries) CASubtree(ctx context.Context, id uuid.UUID) ([]uuid.UUID, error) {
	rows, err := q.db.Query(ctx, `WITH RECURSIVE sub(id) AS (
			SELECT id FROM cas WHERE id = $1
			UNION SELECT c.id FROM cas c JOIN sub ON c.parent_id = sub.id)
		SELECT id FROM sub`, id)
	if err != nil {
		return nil, mapErr(err, "ca subtree")
	}
	defer rows.Close()
	var ids []uuid.UUID
	for rows.Next() {
		var u uuid.UUID
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		ids = append(ids, u)
	}
	return ids, mapErr(rows.Err(), "ca subtree")
}

// RevokeCAs marks CAs revoked (those not revoked already) and every
// unrevoked certificate they issued, in one statement each. It returns the
// number of certificates revoked.
func (q *Queries) RevokeCAs(ctx context.Context, ids []uuid.UUID, reason int, at time.Time) (int64, error) {
	if _, err := q.db.Exec(ctx, `UPDATE cas SET status = 'revoked', revoked_at = $2, revocation_reason = $3
		WHERE id = ANY($1) AND status <> 'revoked'`, ids, at, reason); err != nil {
		return 0, mapErr(err, "revoking cas")
	}
	tag, err := q.db.Exec(ctx, `UPDATE certificates SET status = 'revoked', revoked_at = $2, revocation_reason = $3
		WHERE issuer_id = ANY($1) AND status <> 'revoked'`, ids, at, reason)
	if err != nil {
		return 0, mapErr(err, "revoking certificates of cas")
	}
	if _, err := q.db.Exec(ctx, `UPDATE device_slot_certs SET active = false
		WHERE active AND serial IN (SELECT serial FROM certificates WHERE issuer_id = ANY($1))`, ids); err != nil {
		return 0, mapErr(err, "deactivating slots")
	}
	// Pre-signed OCSP responses of the subtree's certificates and of the
	// CA certificates themselves go in the same transaction.
	if _, err := q.db.Exec(ctx, `DELETE FROM ocsp_responses
		WHERE issuer_id = ANY($1) OR serial IN (SELECT serial FROM cas WHERE id = ANY($1))`, ids); err != nil {
		return 0, mapErr(err, "dropping pre-signed ocsp responses")
	}
	return tag.RowsAffected(), nil
}

// EdgeCAsOf returns the ids of the edge CAs a DMS holds.
func (q *Queries) EdgeCAsOf(ctx context.Context, dmsID uuid.UUID) ([]uuid.UUID, error) {
	rows, err := q.db.Query(ctx, `SELECT id FROM cas WHERE dms_id = $1`, dmsID)
	if err != nil {
		return nil, mapErr(err, "edge cas")
	}
	return pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
}
