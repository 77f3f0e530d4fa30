package notify

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Digest parameters.
const (
	// DigestKind is the kind of the daily expiry digest event.
	DigestKind = "digest.expiry"
	// digestWindow: certificates expiring within it are listed.
	digestWindow = 30 * 24 * time.Hour
)

// digestSQL inserts the digest event, set-based: $1 now, $2 the window's
// end, $3 the day. It names the first 100 certificates by not_after;
// counts cover every certificate still valid (active or
// about to expire) whose not_after is in (now, now+30 days].
const digestSQL = `WITH exp AS (
	SELECT serial, issuer_id, not_after, device_id, common_name FROM certificates
	WHERE status IN ('active', 'about_to_expire') AND not_after > $1 AND not_after <= $2
), by_ca AS (
	SELECT exp.issuer_id, cas.name, count(*) AS n FROM exp JOIN cas ON cas.id = exp.issuer_id
	GROUP BY exp.issuer_id, cas.name
), firsts AS (
	SELECT * FROM exp ORDER BY not_after, serial LIMIT 100
)
INSERT INTO events (kind, detail)
SELECT '` + DigestKind + `', jsonb_build_object(
	'day', $3::text,
	'window_days', 30,
	'from', $1::timestamptz,
	'until', $2::timestamptz,
	'total', (SELECT count(*) FROM exp),
	'by_ca', coalesce((SELECT jsonb_agg(jsonb_build_object('ca_id', issuer_id, 'ca_name', name, 'count', n) ORDER BY n DESC, name) FROM by_ca), '[]'::jsonb),
	'first', coalesce((SELECT jsonb_agg(jsonb_build_object('serial', serial, 'ca_id', issuer_id, 'not_after', not_after, 'device_id', device_id, 'common_name', common_name) ORDER BY not_after, serial) FROM firsts), '[]'::jsonb))
RETURNING id`

// digest inserts the day's expiry digest event unless job_state
// 'notify.digest' says this UTC day already has one. The check and the
// insert share a transaction under an advisory lock, so replicas emit it
// once. It reports whether it emitted.
func (d *Dispatcher) digest(ctx context.Context) (bool, error) {
	now := d.now().UTC()
	day := now.Format(time.DateOnly)
	emitted := false
	err := pgx.BeginTxFunc(ctx, d.Pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		emitted = false
		// Cheap check first, without the lock: most ticks stop here.
		var last string
		err := tx.QueryRow(ctx, `SELECT value FROM job_state WHERE name = $1`, jobDigest).Scan(&last)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if last >= day {
			return nil
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockDigest); err != nil {
			return err
		}
		// Again under the lock (READ COMMITTED: a new snapshot), in case
		// another replica emitted it while this one waited.
		last = ""
		err = tx.QueryRow(ctx, `SELECT value FROM job_state WHERE name = $1`, jobDigest).Scan(&last)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if last >= day {
			return nil
		}
		var id int64
		if err := tx.QueryRow(ctx, digestSQL, now, now.Add(digestWindow), day).Scan(&id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO job_state (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`, jobDigest, day); err != nil {
			return err
		}
		d.log().Info("notify: expiry digest emitted", logEvent, id, "day", day)
		emitted = true
		return nil
	})
	return emitted, err
}
