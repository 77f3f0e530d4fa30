package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Advisory lock keys (pg_advisory_xact_lock is scoped to the database),
// ASCII like the other packages' keys.
const (
	lockFanout int64 = 0x4f5554504e46414e // "OUTPNFAN"
	lockDigest int64 = 0x4f5554504e444947 // "OUTPNDIG"
)

// job_state rows.
const (
	jobFanout = "notify.fanout"
	jobDigest = "notify.digest"
)

// stallWarning is how long a pending horizon may wait for open
// transactions before the dispatcher logs them.
const stallWarning = time.Minute

// fanoutState is the JSON in job_state 'notify.fanout'.
type fanoutState struct {
	// Watermark: every event with id <= Watermark was fanned out, and no
	// other event with such an id can still commit.
	Watermark int64 `json:"watermark"`
	// High is the highest event id fanned out (>= Watermark).
	High int64 `json:"high"`
	// Horizon, when non-zero, is a sequence value whose ids become final
	// once none of the transactions in Waiting is still running.
	Horizon int64     `json:"horizon,omitempty"`
	Waiting []string  `json:"waiting,omitempty"`
	Since   time.Time `json:"since,omitzero"`
}

// matchSQL is the subscription filter, for events aliased ev and
// subscriptions aliased s.
const matchSQL = `s.disabled_at IS NULL
	AND ev.at >= s.created_at - interval '10 minutes'
	AND (cardinality(s.event_kinds) = 0 OR EXISTS (
		SELECT 1 FROM unnest(s.event_kinds) AS k
		WHERE k = ev.kind OR k = '*' OR (right(k, 2) = '.*' AND starts_with(ev.kind, left(k, -1)))))
	AND (s.ca_id IS NULL OR s.ca_id = ev.ca_id)
	AND (s.dms_id IS NULL OR s.dms_id = ev.dms_id)
	AND (s.device_id IS NULL OR s.device_id = ev.device_id)`

// fanoutSQL inserts the deliveries of up to $3 events with $1 < id <= $2
// and returns how many events it read and the last id.
const fanoutSQL = `WITH ev AS (
	SELECT id, kind, ca_id, dms_id, device_id, at FROM events
	WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3
), ins AS (
	INSERT INTO deliveries (subscription_id, event_id, next_attempt_at)
	SELECT s.id, ev.id, $4 FROM ev JOIN subscriptions s ON ` + matchSQL + `
	ON CONFLICT DO NOTHING
	RETURNING 1
)
SELECT (SELECT count(*) FROM ev), coalesce((SELECT max(id) FROM ev), 0), (SELECT count(*) FROM ins)`

// eventWriters lists the other transactions of this database that
// hold a RowExclusiveLock on events (an INSERT takes it before drawing an
// id and keeps it to the end), as "pid:virtualtransaction".
func eventWriters(ctx context.Context, tx pgx.Tx) ([]string, error) {
	var out []string
	err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(DISTINCT coalesce(pid::text, '') || ':' || virtualtransaction), '{}')
	FROM pg_locks
	WHERE locktype = 'relation' AND mode = 'RowExclusiveLock'
	  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
	  AND relation = 'events'::regclass
	  AND pid IS DISTINCT FROM pg_backend_pid()`).Scan(&out)
	return out, err
}

// fanout runs one fan-out round in a READ COMMITTED transaction (each
// statement must see what committed before it started) under the
// fan-out advisory lock. more reports a full batch: call again.
func (d *Dispatcher) fanout(ctx context.Context) (more bool, err error) {
	err = pgx.BeginTxFunc(ctx, d.Pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		more = false
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockFanout); err != nil {
			return err
		}
		var st fanoutState
		var raw []byte
		err := tx.QueryRow(ctx, `SELECT value FROM job_state WHERE name = $1`, jobFanout).Scan(&raw)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if err == nil {
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("job_state %s is not valid: %w", jobFanout, err)
			}
		}
		prev := st
		now := d.now()

		// 1. Which ids are final?
		safe := st.Watermark
		if st.Horizon > 0 {
			writers, err := eventWriters(ctx, tx)
			if err != nil {
				return err
			}
			var running []string
			for _, w := range st.Waiting {
				if slices.Contains(writers, w) {
					running = append(running, w)
				}
			}
			if len(running) == 0 {
				safe = max(safe, st.Horizon)
				st.Horizon, st.Waiting, st.Since = 0, nil, time.Time{}
			} else {
				st.Waiting = running
				if now.Sub(st.Since) > stallWarning {
					d.warnStall(now, running, st)
				}
			}
		}
		if st.Horizon == 0 {
			// The sequence first, then the writers: an id <= seq drawn by
			// a transaction still running shows up in the second query.
			var seq int64
			if err := tx.QueryRow(ctx, `SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass), 0)`).Scan(&seq); err != nil {
				return err
			}
			if seq > safe {
				writers, err := eventWriters(ctx, tx)
				if err != nil {
					return err
				}
				if len(writers) == 0 {
					safe = seq
				} else {
					st.Horizon, st.Waiting, st.Since = seq, writers, now
				}
			}
		}

		batch := d.batchSize()
		// 2. Rescan (watermark, min(safe, high)] for events that committed
		// late. Usually empty: only ranges that were not final when first
		// scanned get here.
		caughtUp := true
		if hi := min(safe, st.High); hi > st.Watermark {
			n, last, ins, err := d.fanoutRange(ctx, tx, st.Watermark, hi, batch, now)
			if err != nil {
				return err
			}
			if ins > 0 {
				d.log().Info("notify: late-committed events fanned out", "deliveries", ins, "after_id", st.Watermark, "up_to_id", hi)
			}
			if n == batch {
				st.Watermark, caughtUp, more = last, false, true
			} else {
				st.Watermark = hi
			}
		}
		// 3. New events above high.
		n, last, _, err := d.fanoutRange(ctx, tx, st.High, math.MaxInt64, batch, now)
		if err != nil {
			return err
		}
		if n > 0 {
			st.High = max(st.High, last)
		}
		if n == batch {
			more = true
		}
		// Now every final event up to min(safe, high) is fanned out (the
		// rescan covered the old high, the scan the rest). When the scan
		// read every visible event above the old high, the watermark may
		// also pass gaps up to safe.
		if caughtUp {
			if n < batch {
				st.Watermark = max(st.Watermark, safe)
			} else {
				st.Watermark = max(st.Watermark, min(safe, last))
			}
		}
		st.High = max(st.High, st.Watermark)

		b, _ := json.Marshal(st)
		if before, _ := json.Marshal(prev); string(b) == string(before) {
			return nil
		}
		_, err = tx.Exec(ctx, `INSERT INTO job_state (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`, jobFanout, string(b))
		return err
	})
	return more, err
}

// fanoutRange inserts the deliveries of up to batch events with
// lo < id <= hi; it returns how many events it read, the last id and how
// many deliveries it inserted.
func (d *Dispatcher) fanoutRange(ctx context.Context, tx pgx.Tx, lo, hi int64, batch int, now time.Time) (n int, last, inserted int64, err error) {
	err = tx.QueryRow(ctx, fanoutSQL, lo, hi, batch, now).Scan(&n, &last, &inserted)
	return n, last, inserted, err
}

// warnStall logs, at most once a minute per dispatcher, the open
// transactions the watermark waits for.
func (d *Dispatcher) warnStall(now time.Time, running []string, st fanoutState) {
	d.mu.Lock()
	due := now.Sub(d.lastStallLog) >= stallWarning
	if due {
		d.lastStallLog = now
	}
	d.mu.Unlock()
	if due {
		d.log().Warn("notify: open transactions that wrote events hold the fan-out watermark back (is idle_in_transaction_session_timeout set?)",
			"waiting", running, "since", st.Since, "watermark", st.Watermark)
	}
}
