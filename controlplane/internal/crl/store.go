package crl

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/keystore"
)

// Advisory lock namespaces of this package, used as the first key of
// Postgres' two-key advisory locks (a lock space apart from the one-key
// locks other packages take).
const (
	// lockNamespaceCA ("CRLC") + a hash of the CA id: generation for
	// one CA, transaction-level.
	lockNamespaceCA int32 = 0x43524c43
	// lockNamespaceRefresh ("CRLR") + 0: the periodic refresh,
	// session-level.
	lockNamespaceRefresh int32 = 0x43524c52
)

// caLockKey hashes a CA id into the second key of its advisory lock. Two
// CAs sharing a hash only serialise each other's generation.
func caLockKey(id uuid.UUID) int32 {
	h := fnv.New32a()
	_, _ = h.Write(id[:])
	return int32(h.Sum32())
}

// lockCA takes the CA's generation lock until the transaction ends.
func lockCA(ctx context.Context, tx pgx.Tx, id uuid.UUID) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockNamespaceCA, caLockKey(id)); err != nil {
		return fmt.Errorf("locking the crl of ca %s: %w", id, err)
	}
	return nil
}

// Revoked rows of one issuer: certificates, and CA certificates it
// signed. status = 'revoked' is the predicate of the partial index
// certificates_revoked (issuer_id, revoked_at); cas rows come through
// cas_parent. $2 drops entries whose certificate expired before it.
const (
	sqlFullEntries = `SELECT serial, revoked_at, revocation_reason FROM certificates
		WHERE issuer_id = $1 AND status = 'revoked' AND not_after > $2
	UNION ALL
	SELECT serial, revoked_at, revocation_reason FROM cas
		WHERE parent_id = $1 AND status = 'revoked' AND not_after > $2`
	// $3 is the base's covers_until: an index range scan on
	// certificates_revoked.
	sqlDeltaEntries = `SELECT serial, revoked_at, revocation_reason FROM certificates
		WHERE issuer_id = $1 AND status = 'revoked' AND revoked_at > $3 AND not_after > $2
	UNION ALL
	SELECT serial, revoked_at, revocation_reason FROM cas
		WHERE parent_id = $1 AND status = 'revoked' AND revoked_at > $3 AND not_after > $2`
	// How many certificates were revoked after $2, counting to $3 at most.
	sqlCountNew = `SELECT count(*) FROM (SELECT 1 FROM certificates
		WHERE issuer_id = $1 AND status = 'revoked' AND revoked_at > $2 LIMIT $3) n`
	// The watermark of a read that follows in the same transaction: the
	// database time, or the start of the oldest client transaction in
	// progress in this database when earlier (pg_stat_activity shows
	// xact_start for sessions of the same role, which are the ones that
	// revoke).
	sqlWatermark = `SELECT least(clock_timestamp(), min(xact_start)) FROM pg_stat_activity
		WHERE datname = current_database() AND backend_type = 'client backend'
		AND pid <> pg_backend_pid() AND xact_start IS NOT NULL`
	// Is anything revoked after $2 (not on the latest delta)?
	sqlRevokedAfter = `SELECT EXISTS (SELECT 1 FROM certificates WHERE issuer_id = $1 AND status = 'revoked' AND revoked_at > $2)
		OR EXISTS (SELECT 1 FROM cas WHERE parent_id = $1 AND status = 'revoked' AND revoked_at > $2)`
	crlColumns = `ca_id, crl_number, is_delta, coalesce(base_number, 0), der, this_update, next_update, covers_until`
	// The newest CRL of one kind: crls_latest (ca_id, is_delta, crl_number DESC).
	sqlLatest     = `SELECT ` + crlColumns + ` FROM crls WHERE ca_id = $1 AND is_delta = $2 ORDER BY crl_number DESC LIMIT 1`
	sqlLatestMeta = `SELECT crl_number, coalesce(base_number, 0), this_update, next_update, covers_until
		FROM crls WHERE ca_id = $1 AND is_delta = $2 ORDER BY crl_number DESC LIMIT 1`
	sqlNextNumber = `SELECT coalesce(max(crl_number), 0) + 1 FROM crls WHERE ca_id = $1`
	sqlInsert     = `INSERT INTO crls (ca_id, crl_number, is_delta, base_number, der, this_update, next_update, covers_until)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	// Keep the newest $3 CRLs of one kind.
	sqlPrune = `DELETE FROM crls WHERE ca_id = $1 AND is_delta = $2 AND crl_number <
		(SELECT min(crl_number) FROM (SELECT crl_number FROM crls WHERE ca_id = $1 AND is_delta = $2 ORDER BY crl_number DESC LIMIT $3) keep)`
)

// meta is a stored CRL without its DER.
type meta struct {
	number, base                        int64
	thisUpdate, nextUpdate, coversUntil time.Time
}

func latestMeta(ctx context.Context, db registry.DBTX, caID uuid.UUID, delta bool) (*meta, error) {
	var m meta
	err := db.QueryRow(ctx, sqlLatestMeta, caID, delta).Scan(&m.number, &m.base, &m.thisUpdate, &m.nextUpdate, &m.coversUntil)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the latest crl of ca %s: %w", caID, err)
	}
	return &m, nil
}

func scanCRL(row pgx.Row) (*CRL, error) {
	var c CRL
	err := row.Scan(&c.CAID, &c.Number, &c.Delta, &c.BaseNumber, &c.DER, &c.ThisUpdate, &c.NextUpdate, &c.CoversUntil)
	return &c, err
}

// Latest returns the newest stored full (delta false) or delta CRL of a
// CA, or ErrNotFound when there is none. It never generates one.
func (s *Service) Latest(ctx context.Context, caID uuid.UUID, delta bool) (*CRL, error) {
	return latest(ctx, s.Reg.Pool(), caID, delta)
}

func latest(ctx context.Context, db registry.DBTX, caID uuid.UUID, delta bool) (*CRL, error) {
	c, err := scanCRL(db.QueryRow(ctx, sqlLatest, caID, delta))
	if errors.Is(err, pgx.ErrNoRows) {
		kind := "full"
		if delta {
			kind = "delta"
		}
		return nil, fmt.Errorf("%w: no %s crl for ca %s", ErrNotFound, kind, caID)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the crl of ca %s: %w", caID, err)
	}
	return c, nil
}

// issuerKey is a CA ready to sign.
type issuerKey struct {
	ca     *registry.CA
	cert   *x509.Certificate
	signer crypto.Signer
	idpURL string // empty for roots: see the package documentation
}

// loadIssuer reads a CA and its key; ErrNotFound or *NoKeyError.
func (s *Service) loadIssuer(ctx context.Context, q *registry.Queries, caID uuid.UUID) (*issuerKey, error) {
	ca, err := q.GetCA(ctx, caID)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, fmt.Errorf("%w: ca %s", ErrNotFound, caID)
	}
	if err != nil {
		return nil, err
	}
	if ca.KeyRef == nil {
		return nil, &NoKeyError{CAID: ca.ID, Name: ca.Name}
	}
	cert, err := x509.ParseCertificate(ca.CertDER)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate of ca %q: %w", ca.Name, err)
	}
	signer, err := s.signer(ctx, *ca.KeyRef, cert)
	if err != nil {
		if errors.Is(err, keystore.ErrNotFound) {
			return nil, &NoKeyError{CAID: ca.ID, Name: ca.Name}
		}
		return nil, fmt.Errorf("loading the key of ca %q: %w", ca.Name, err)
	}
	ik := &issuerKey{ca: ca, cert: cert, signer: signer}
	if !isSelfSigned(cert) {
		ik.idpURL = FullURL(s.BaseURL, ca.ID)
	}
	return ik, nil
}

// signer returns the CA key, from a short-lived cache: the file key
// store decrypts (PBKDF2) on every Load, and OnRevoked runs per
// revocation.
func (s *Service) signer(ctx context.Context, keyRef string, cert *x509.Certificate) (crypto.Signer, error) {
	now := time.Now()
	s.mu.Lock()
	c, ok := s.signers[keyRef]
	s.mu.Unlock()
	if ok && now.Sub(c.loaded) < signerTTL {
		return c.signer, nil
	}
	sg, err := s.Keys.Load(ctx, keyRef)
	if err != nil {
		return nil, err
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pk, ok := sg.Public().(equaler); !ok || !pk.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("key %s does not belong to the ca certificate", keyRef)
	}
	s.mu.Lock()
	if s.signers == nil {
		s.signers = map[string]cachedSigner{}
	}
	s.signers[keyRef] = cachedSigner{signer: sg, loaded: now}
	s.mu.Unlock()
	return sg, nil
}

// forgetSigner drops a cached key after a signing failure.
func (s *Service) forgetSigner(keyRef string) {
	s.mu.Lock()
	delete(s.signers, keyRef)
	s.mu.Unlock()
}

// readEntries runs sqlFullEntries or sqlDeltaEntries. It returns the
// entries and the latest revocation time among them (zero if none).
func (s *Service) readEntries(ctx context.Context, tx pgx.Tx, sql string, args ...any) ([]x509.RevocationListEntry, time.Time, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("reading revoked certificates: %w", err)
	}
	defer rows.Close()
	var (
		out    []x509.RevocationListEntry
		latest time.Time
		serial string
		at     time.Time
		reason *int32
	)
	for rows.Next() {
		if err := rows.Scan(&serial, &at, &reason); err != nil {
			return nil, time.Time{}, fmt.Errorf("reading revoked certificates: %w", err)
		}
		if at.After(latest) {
			latest = at
		}
		e, err := entryFor(serial, at, reason)
		if err != nil {
			// A row we cannot encode must not stop every other revocation
			// from being published.
			s.log().Error("crl: skipping a revoked entry", "serial", serial, "err", err)
			continue
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("reading revoked certificates: %w", err)
	}
	return out, latest, nil
}

// store signs t, inserts the CRL and prunes older ones of its kind.
func (s *Service) store(ctx context.Context, tx pgx.Tx, ik *issuerKey, t *template, coversUntil time.Time) (*CRL, error) {
	der, err := build(t)
	if err != nil {
		s.forgetSigner(*ik.ca.KeyRef)
		return nil, fmt.Errorf("ca %q: %w", ik.ca.Name, err)
	}
	c := &CRL{
		CAID: ik.ca.ID, Number: t.number, Delta: t.baseNumber > 0, BaseNumber: t.baseNumber, DER: der,
		ThisUpdate: t.thisUpdate.UTC().Truncate(time.Second), NextUpdate: t.nextUpdate.UTC().Truncate(time.Second), CoversUntil: coversUntil,
	}
	var base *int64
	if c.Delta {
		base = &c.BaseNumber
	}
	if _, err := tx.Exec(ctx, sqlInsert, c.CAID, c.Number, c.Delta, base, c.DER, c.ThisUpdate, c.NextUpdate, c.CoversUntil); err != nil {
		return nil, fmt.Errorf("storing the crl of ca %q: %w", ik.ca.Name, err)
	}
	keep := keepFull
	if c.Delta {
		keep = keepDelta
	}
	if _, err := tx.Exec(ctx, sqlPrune, c.CAID, c.Delta, keep); err != nil {
		return nil, fmt.Errorf("pruning old crls of ca %q: %w", ik.ca.Name, err)
	}
	return c, nil
}

func nextNumber(ctx context.Context, tx pgx.Tx, caID uuid.UUID) (int64, error) {
	var n int64
	if err := tx.QueryRow(ctx, sqlNextNumber, caID).Scan(&n); err != nil {
		return 0, fmt.Errorf("allocating a crl number: %w", err)
	}
	return n, nil
}

// watermark must run right before the read it stands for; see the
// package documentation.
func watermark(ctx context.Context, tx pgx.Tx) (time.Time, error) {
	var w time.Time
	if err := tx.QueryRow(ctx, sqlWatermark).Scan(&w); err != nil {
		return time.Time{}, fmt.Errorf("reading the revocation watermark: %w", err)
	}
	return w.Add(-ClockSkew), nil
}

// generateFull builds and stores a full CRL. The caller holds the CA lock.
func (s *Service) generateFull(ctx context.Context, tx pgx.Tx, ik *issuerKey, now time.Time) (*CRL, error) {
	start := time.Now()
	num, err := nextNumber(ctx, tx, ik.ca.ID)
	if err != nil {
		return nil, err
	}
	covers, err := watermark(ctx, tx)
	if err != nil {
		return nil, err
	}
	entries, _, err := s.readEntries(ctx, tx, sqlFullEntries, ik.ca.ID, now.Add(-s.retention()))
	if err != nil {
		return nil, err
	}
	t := &template{
		issuer: ik.cert, signer: ik.signer, number: num, thisUpdate: now, nextUpdate: now.Add(s.validity()),
		idpURL: ik.idpURL, freshestURL: DeltaURL(s.BaseURL, ik.ca.ID), entries: entries,
	}
	c, err := s.store(ctx, tx, ik, t, covers)
	if err != nil {
		return nil, err
	}
	s.log().Info("crl: full crl issued", "ca_id", ik.ca.ID, "crl_number", num, "entries", len(entries), "bytes", len(c.DER), "took", time.Since(start))
	return c, nil
}

// errDeltaTooBig: more entries since the base than a delta may hold.
var errDeltaTooBig = errors.New("crl: delta would be too big")

// generateDelta builds and stores a delta on base. The caller holds the
// CA lock. With limit > 0 and more than limit certificates revoked after
// the base read the table, it stores nothing and returns errDeltaTooBig: a
// new full CRL is due. Revocations in the ClockSkew before that read,
// which the base's deltas repeat, do not count: a new full CRL would
// repeat them too, and replacing it would not make its deltas smaller.
func (s *Service) generateDelta(ctx context.Context, tx pgx.Tx, ik *issuerKey, base *meta, now time.Time, limit int) (*CRL, error) {
	if limit > 0 {
		var n int
		if err := tx.QueryRow(ctx, sqlCountNew, ik.ca.ID, base.coversUntil.Add(ClockSkew), limit+1).Scan(&n); err != nil {
			return nil, fmt.Errorf("counting revocations since the base: %w", err)
		}
		if n > limit {
			return nil, errDeltaTooBig
		}
	}
	num, err := nextNumber(ctx, tx, ik.ca.ID)
	if err != nil {
		return nil, err
	}
	covers, err := watermark(ctx, tx)
	if err != nil {
		return nil, err
	}
	entries, latest, err := s.readEntries(ctx, tx, sqlDeltaEntries, ik.ca.ID, now.Add(-s.retention()), base.coversUntil)
	if err != nil {
		return nil, err
	}
	// A delta's covers_until only tells Refresh whether something was
	// revoked since (see plan); it includes what the delta lists, so that
	// a revocation stamped ahead of the database's clock does not look
	// new again and again. Deltas read from their base's watermark.
	if latest.After(covers) {
		covers = latest
	}
	t := &template{
		issuer: ik.cert, signer: ik.signer, number: num, thisUpdate: now, nextUpdate: now.Add(s.deltaValidity()),
		idpURL: ik.idpURL, baseNumber: base.number, entries: entries,
	}
	c, err := s.store(ctx, tx, ik, t, covers)
	if err != nil {
		return nil, err
	}
	s.log().Debug("crl: delta crl issued", "ca_id", ik.ca.ID, "crl_number", num, "base_number", base.number, "entries", len(entries))
	return c, nil
}

func metaOf(c *CRL) *meta {
	return &meta{number: c.Number, base: c.BaseNumber, thisUpdate: c.ThisUpdate, nextUpdate: c.NextUpdate, coversUntil: c.CoversUntil}
}
