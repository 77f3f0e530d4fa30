// Package lifecycle keeps certificate and device statuses true with
// set-based sweeps: one SQL statement per transition over the whole
// table, not a loop per certificate. Each transition writes its event in
// the same statement. Only one replica sweeps at a time (an advisory
// lock); the others skip the round.
package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// sweepLock is the advisory lock of the sweep ("LIFECYCL").
const sweepLock int64 = 0x4c49464543594c

// DefaultThreshold is how long before expiry a certificate is "about to
// expire" when neither its CA nor its profile says otherwise.
const DefaultThreshold = 30 * 24 * time.Hour

// Sweeper runs the sweeps.
type Sweeper struct {
	Pool *pgxpool.Pool
	Now  func() time.Time
	// DefaultThreshold applies when neither the CA (cas.expiry_threshold)
	// nor the profile has one. Default DefaultThreshold.
	DefaultThreshold time.Duration
	// ProfileThresholds by profile name; a CA's own threshold wins.
	ProfileThresholds map[string]time.Duration
	Log               *slog.Logger
}

// Result counts the transitions of one sweep.
type Result struct {
	Expired       int64
	AboutToExpire int64
	Devices       int64
	// Skipped is true when another replica held the lock.
	Skipped bool
}

func (s *Sweeper) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Sweep runs every transition once.
func (s *Sweeper) Sweep(ctx context.Context) (Result, error) {
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return Result{}, err
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, sweepLock).Scan(&got); err != nil {
		return Result{}, err
	}
	if !got {
		return Result{Skipped: true}, nil
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, sweepLock)

	now := s.now()
	var res Result
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		if res.Expired, err = expire(ctx, tx, now); err != nil {
			return fmt.Errorf("expiring certificates: %w", err)
		}
		if res.AboutToExpire, err = s.aboutToExpire(ctx, tx, now); err != nil {
			return fmt.Errorf("marking certificates about to expire: %w", err)
		}
		if res.Devices, err = deriveDevices(ctx, tx); err != nil {
			return fmt.Errorf("deriving device statuses: %w", err)
		}
		return nil
	})
	return res, err
}

// expire: active or about-to-expire certificates past notAfter.
func expire(ctx context.Context, tx pgx.Tx, now time.Time) (int64, error) {
	var n int64
	err := tx.QueryRow(ctx, `
		WITH changed AS (
			UPDATE certificates SET status = 'expired'
			WHERE status IN ('active', 'about_to_expire') AND not_after < $1
			RETURNING serial, issuer_id, device_id, dms_id
		), ev AS (
			INSERT INTO events (device_id, dms_id, ca_id, kind, detail)
			SELECT device_id, dms_id, issuer_id, 'certificate.expired', jsonb_build_object('serial', serial) FROM changed
		)
		SELECT count(*) FROM changed`, now).Scan(&n)
	return n, err
}

// aboutToExpire: active certificates within their threshold of notAfter.
// The threshold is the CA's, else the profile's, else the default.
func (s *Sweeper) aboutToExpire(ctx context.Context, tx pgx.Tx, now time.Time) (int64, error) {
	def := s.DefaultThreshold
	if def <= 0 {
		def = DefaultThreshold
	}
	names := make([]string, 0, len(s.ProfileThresholds))
	for n := range s.ProfileThresholds {
		names = append(names, n)
	}
	sort.Strings(names)
	ths := make([]time.Duration, len(names))
	maxTh := def
	for i, n := range names {
		ths[i] = s.ProfileThresholds[n]
		maxTh = max(maxTh, ths[i])
	}
	var caMax *time.Duration
	if err := tx.QueryRow(ctx, `SELECT max(expiry_threshold) FROM cas`).Scan(&caMax); err != nil {
		return 0, err
	}
	if caMax != nil {
		maxTh = max(maxTh, *caMax)
	}
	var n int64
	// The not_after bound with the largest threshold lets the
	// (status, not_after) index cut the candidates first.
	err := tx.QueryRow(ctx, `
		WITH th AS (SELECT * FROM unnest($3::text[], $4::interval[]) AS t(profile, threshold)),
		changed AS (
			UPDATE certificates c SET status = 'about_to_expire'
			FROM cas ca
			WHERE ca.id = c.issuer_id AND c.status = 'active'
			  AND c.not_after >= $1 AND c.not_after < $1 + $5::interval
			  AND c.not_after < $1 + COALESCE(ca.expiry_threshold, (SELECT threshold FROM th WHERE th.profile = c.profile), $2::interval)
			RETURNING c.serial, c.issuer_id, c.device_id, c.dms_id, c.not_after
		), ev AS (
			INSERT INTO events (device_id, dms_id, ca_id, kind, detail)
			SELECT device_id, dms_id, issuer_id, 'certificate.about_to_expire',
			       jsonb_build_object('serial', serial, 'not_after', not_after) FROM changed
		)
		SELECT count(*) FROM changed`, now, def, names, ths, maxTh).Scan(&n)
	return n, err
}

// deriveDevices sets each device's status from the newest certificate of
// each of its slots: with_warnings when one is expired or revoked,
// requires_action when one is about to expire, fully_provisioned
// otherwise. Devices without certificates stay pending_provisioning;
// decommissioned devices stay decommissioned.
func deriveDevices(ctx context.Context, tx pgx.Tx) (int64, error) {
	var n int64
	err := tx.QueryRow(ctx, `
		WITH latest AS (
			SELECT DISTINCT ON (s.device_id, s.ca_id) s.device_id, c.status
			FROM device_slot_certs s JOIN certificates c ON c.serial = s.serial
			ORDER BY s.device_id, s.ca_id, s.added_at DESC
		), agg AS (
			SELECT device_id,
			       CASE WHEN bool_or(status IN ('expired', 'revoked')) THEN 'with_warnings'
			            WHEN bool_or(status = 'about_to_expire') THEN 'requires_action'
			            ELSE 'fully_provisioned' END AS st
			FROM latest GROUP BY device_id
		), changed AS (
			UPDATE devices d SET status = agg.st, updated_at = now()
			FROM agg
			WHERE agg.device_id = d.id AND d.status <> 'decommissioned' AND d.status <> agg.st
			RETURNING d.id, d.dms_id, agg.st
		), ev AS (
			INSERT INTO events (device_id, dms_id, kind, detail)
			SELECT id, dms_id, 'device.status_changed', jsonb_build_object('status', st) FROM changed
		)
		SELECT count(*) FROM changed`).Scan(&n)
	return n, err
}

// Run sweeps every interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context, every time.Duration) {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		res, err := s.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("lifecycle sweep failed", "err", err)
		case res.Expired+res.AboutToExpire+res.Devices > 0:
			log.Info("lifecycle sweep", "expired", res.Expired, "about_to_expire", res.AboutToExpire, "devices", res.Devices)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
