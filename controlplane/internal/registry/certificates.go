package registry

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Certificate is a row of certificates.
type Certificate struct {
	Serial           string
	IssuerID         uuid.UUID
	Subject          string
	CommonName       string
	SANs             []string
	NotBefore        time.Time
	NotAfter         time.Time
	Status           string
	RevocationReason *int
	RevokedAt        *time.Time
	DMSID            *uuid.UUID
	DeviceID         *string
	Profile          string
	DER              []byte
	CreatedAt        time.Time
}

const certColumns = `serial, issuer_id, subject, common_name, sans, not_before, not_after, status, revocation_reason, revoked_at, dms_id, device_id, profile, der, created_at`

func scanCert(row interface{ Scan(...any) error }) (*Certificate, error) {
	var c Certificate
	err := row.Scan(&c.Serial, &c.IssuerID, &c.Subject, &c.CommonName, &c.SANs, &c.NotBefore, &c.NotAfter, &c.Status,
		&c.RevocationReason, &c.RevokedAt, &c.DMSID, &c.DeviceID, &c.Profile, &c.DER, &c.CreatedAt)
	return &c, err
}

// InsertCertificate stores an issued or imported certificate. ErrConflict
// if the serial exists. CreatedAt is set by the database when zero.
func (q *Queries) InsertCertificate(ctx context.Context, c *Certificate) error {
	if c.SANs == nil {
		c.SANs = []string{}
	}
	err := q.db.QueryRow(ctx, `INSERT INTO certificates (serial, issuer_id, subject, common_name, sans, not_before, not_after, status, dms_id, device_id, profile, der)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) RETURNING created_at`,
		c.Serial, c.IssuerID, c.Subject, c.CommonName, c.SANs, c.NotBefore, c.NotAfter, c.Status, c.DMSID, c.DeviceID, c.Profile, c.DER).Scan(&c.CreatedAt)
	return mapErr(err, "certificate "+c.Serial)
}

// GetCertificate returns a certificate by serial.
func (q *Queries) GetCertificate(ctx context.Context, serial string) (*Certificate, error) {
	c, err := scanCert(q.db.QueryRow(ctx, `SELECT `+certColumns+` FROM certificates WHERE serial = $1`, serial))
	return c, mapErr(err, "certificate "+serial)
}

// RevokeCertificate marks a certificate revoked and frees its device
// slot. Revoking a revoked certificate returns it unchanged.
func (q *Queries) RevokeCertificate(ctx context.Context, serial string, reason int, at time.Time) (*Certificate, error) {
	c, err := scanCert(q.db.QueryRow(ctx, `UPDATE certificates SET status = 'revoked', revoked_at = $2, revocation_reason = $3
		WHERE serial = $1 AND status <> 'revoked' RETURNING `+certColumns, serial, at, reason))
	if err != nil {
		return q.GetCertificate(ctx, serial)
	}
	if _, err := q.db.Exec(ctx, `UPDATE device_slot_certs SET active = false WHERE serial = $1`, serial); err != nil {
		return nil, mapErr(err, "freeing slot")
	}
	// The pre-signed "good" response goes in the same transaction, so no
	// replica serves it once the revocation committed.
	if _, err := q.db.Exec(ctx, `DELETE FROM ocsp_responses WHERE serial = $1`, serial); err != nil {
		return nil, mapErr(err, "dropping the pre-signed ocsp response")
	}
	return c, nil
}

// CertFilter narrows a certificate search. Zero fields do not filter.
type CertFilter struct {
	// Serial matches a serial exactly or, with a trailing '*', by prefix.
	Serial string
	// CommonName matches the common name by prefix.
	CommonName string
	// SAN matches one subjectAltName exactly.
	SAN      string
	Status   string
	IssuerID *uuid.UUID
	DMSID    *uuid.UUID
	DeviceID string
	// ExpiresAfter and ExpiresBefore bound NotAfter; when either is set,
	// results are ordered by NotAfter (soonest first) instead of creation.
	ExpiresAfter, ExpiresBefore time.Time
}

// SearchCertificates pages through certificates matching f. The order is
// (created_at, serial), or (not_after, serial) with an expiry window;
// both have an index, and the cursor continues from the last row with a
// row comparison, so deep pages cost what the first does.
func (q *Queries) SearchCertificates(ctx context.Context, f CertFilter, cur string, limit int) ([]*Certificate, string, error) {
	c, err := decodeCursor(cur)
	if err != nil {
		return nil, "", err
	}
	limit = ClampLimit(limit)
	byExpiry := !f.ExpiresAfter.IsZero() || !f.ExpiresBefore.IsZero()
	orderCol := "created_at"
	if byExpiry {
		orderCol = "not_after"
	}
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	switch {
	case strings.HasSuffix(f.Serial, "*"):
		add("serial LIKE $%d", likePrefix(strings.ToLower(strings.TrimSuffix(f.Serial, "*"))))
	case f.Serial != "":
		add("serial = $%d", strings.ToLower(f.Serial))
	}
	if f.CommonName != "" {
		add("common_name LIKE $%d", likePrefix(f.CommonName))
	}
	if f.SAN != "" {
		add("sans @> ARRAY[$%d::text]", f.SAN)
	}
	if f.Status != "" {
		add("status = $%d", f.Status)
	}
	if f.IssuerID != nil {
		add("issuer_id = $%d", *f.IssuerID)
	}
	if f.DMSID != nil {
		add("dms_id = $%d", *f.DMSID)
	}
	if f.DeviceID != "" {
		add("device_id = $%d", f.DeviceID)
	}
	if !f.ExpiresAfter.IsZero() {
		add("not_after >= $%d", f.ExpiresAfter)
	}
	if !f.ExpiresBefore.IsZero() {
		add("not_after < $%d", f.ExpiresBefore)
	}
	if c != nil {
		args = append(args, c.T, c.K)
		conds = append(conds, fmt.Sprintf("(%s, serial) > ($%d, $%d)", orderCol, len(args)-1, len(args)))
	}
	where := ""
	if len(conds) > 0 {
		where = "WHERE " + strings.Join(conds, " AND ")
	}
	args = append(args, limit+1)
	sql := fmt.Sprintf(`SELECT %s FROM certificates %s ORDER BY %s, serial LIMIT $%d`, certColumns, where, orderCol, len(args))
	rows, err := q.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, "", mapErr(err, "searching certificates")
	}
	defer rows.Close()
	var out []*Certificate
	for rows.Next() {
		cert, err := scanCert(rows)
		if err != nil {
			return nil, "", mapErr(err, "reading certificates")
		}
		out = append(out, cert)
	}
	if err := rows.Err(); err != nil {
		return nil, "", mapErr(err, "reading certificates")
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		t := last.CreatedAt
		if byExpiry {
			t = last.NotAfter
		}
		next = cursor{T: t, K: last.Serial}.encode()
	}
	return out, next, nil
}

// likePrefix escapes LIKE metacharacters and appends '%'.
func likePrefix(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s) + "%"
}
