package crl

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

// trigger is why CRLs of a CA are being (re)generated.
type trigger int

const (
	trigFull    trigger = iota + 1 // GenerateFull: a full CRL, nothing else
	trigDelta                      // GenerateDelta: a delta (a full first if there is none)
	trigRevoked                    // OnRevoked: a delta now, a full when the base is due or the delta too big
	trigRefresh                    // Refresh: whatever is due
	trigServe                      // Handler: what is missing or expired
)

// state is what is stored for a CA when deciding.
type state struct {
	full, delta *meta
	// newer: something was revoked after the latest delta's coverage
	// (an OnRevoked call that never happened). Only computed for Refresh.
	newer bool
}

// plan says what to generate: a full CRL, then a delta (on the new full
// CRL when one is made). It is a pure function of the clock and the
// stored state.
//
//   - GenerateFull: the full CRL only.
//   - GenerateDelta: a delta; a full CRL first when there is none.
//   - OnRevoked: a delta; also a full CRL first when there is none or it
//     is due (nextUpdate within Validity/4), since a delta on a base about
//     to expire helps nobody.
//   - Refresh: a full CRL when there is none or it is due; a delta when a
//     full CRL was made, or there is no delta, or it is not on the latest
//     full CRL, or it is due (nextUpdate within DeltaValidity/4), or
//     something was revoked after what it covers.
//   - serving: a full CRL when there is none or it has expired; for a
//     delta request, also a delta when there is none, it has expired or is
//     not on the latest full CRL.
//
// When more than MaxDeltaEntries certificates were revoked since the base,
// OnRevoked and Refresh make a full CRL and a delta on it instead (see
// generateDelta).
func plan(tr trigger, now time.Time, st state, validity, deltaValidity time.Duration, wantDelta bool) (full, delta bool) {
	fullDue := st.full == nil || st.full.nextUpdate.Sub(now) <= validity/4
	deltaStale := st.delta == nil || st.full == nil || st.delta.base != st.full.number
	switch tr {
	case trigFull:
		return true, false
	case trigDelta:
		return st.full == nil, true
	case trigRevoked:
		return fullDue, true
	case trigRefresh:
		full = fullDue
		delta = full || deltaStale || st.delta.nextUpdate.Sub(now) <= deltaValidity/4 || st.newer
		return full, delta
	case trigServe:
		full = st.full == nil || !now.Before(st.full.nextUpdate)
		if wantDelta {
			delta = full || deltaStale || !now.Before(st.delta.nextUpdate)
		} else {
			// A new full CRL gets its delta at once, so that the delta URL
			// never serves one on an older base.
			delta = full
		}
		return full, delta
	}
	return false, false
}

// result is what one regenerate call produced.
type result struct {
	full, delta *CRL
}

// regenerate runs in one transaction under the CA's lock: it reads the
// stored state, asks plan, and generates.
func (s *Service) regenerate(ctx context.Context, caID uuid.UUID, tr trigger, wantDelta bool) (*result, error) {
	if err := checkBaseURL(s.BaseURL); err != nil {
		return nil, err
	}
	var res *result
	err := s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		res = &result{}
		if err := lockCA(ctx, tx, caID); err != nil {
			return err
		}
		now := s.now().UTC().Truncate(time.Second)
		var st state
		var err error
		if st.full, err = latestMeta(ctx, tx, caID, false); err != nil {
			return err
		}
		if st.delta, err = latestMeta(ctx, tx, caID, true); err != nil {
			return err
		}
		if tr == trigRefresh && st.delta != nil {
			if err := tx.QueryRow(ctx, sqlRevokedAfter, caID, st.delta.coversUntil).Scan(&st.newer); err != nil {
				return fmt.Errorf("looking for new revocations: %w", err)
			}
		}
		doFull, doDelta := plan(tr, now, st, s.validity(), s.deltaValidity(), wantDelta)
		if !doFull && !doDelta {
			return nil
		}
		ik, err := s.loadIssuer(ctx, registry.On(tx), caID)
		if err != nil {
			return err
		}
		base := st.full
		if doFull {
			if res.full, err = s.generateFull(ctx, tx, ik, now); err != nil {
				return err
			}
			base = metaOf(res.full)
		}
		if !doDelta {
			return nil
		}
		limit := 0
		if (tr == trigRevoked || tr == trigRefresh) && res.full == nil {
			limit = s.maxDeltaEntries()
		}
		res.delta, err = s.generateDelta(ctx, tx, ik, base, now, limit)
		if errors.Is(err, errDeltaTooBig) {
			s.log().Info("crl: too many revocations for a delta, issuing a full crl", "ca_id", caID, "max_entries", limit)
			if res.full, err = s.generateFull(ctx, tx, ik, now); err != nil {
				return err
			}
			res.delta, err = s.generateDelta(ctx, tx, ik, metaOf(res.full), now, 0)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// GenerateFull issues a new full CRL for a CA and stores it. It returns
// ErrNotFound for an unknown CA and *NoKeyError for a CA without a key.
// It does not issue a delta on the new CRL (OnRevoked and Refresh do).
func (s *Service) GenerateFull(ctx context.Context, caID uuid.UUID) (*CRL, error) {
	res, err := s.regenerate(ctx, caID, trigFull, false)
	if err != nil {
		return nil, err
	}
	return res.full, nil
}

// GenerateDelta issues a delta CRL on the CA's latest full CRL (issuing a
// full CRL first when there is none), reading only what was revoked since
// the full CRL. Errors as GenerateFull.
func (s *Service) GenerateDelta(ctx context.Context, caID uuid.UUID) (*CRL, error) {
	res, err := s.regenerate(ctx, caID, trigDelta, true)
	if err != nil {
		return nil, err
	}
	return res.delta, nil
}

// OnRevoked publishes revocations: call it after a transaction that
// revoked certificates or CAs committed, with the issuers of the revoked
// certificates and the ids of revoked CAs (caservice.RevokeCA returns
// them). For each CA it issues a new delta CRL (a full CRL when the base
// is due or the delta would exceed MaxDeltaEntries); for a CA that is
// itself revoked, also for its parent, whose CRL lists it. CAs without a
// key are skipped. It keeps going past a failing CA and returns every
// failure joined.
func (s *Service) OnRevoked(ctx context.Context, caIDs ...uuid.UUID) error {
	targets := make([]uuid.UUID, 0, len(caIDs))
	seen := map[uuid.UUID]bool{}
	add := func(id uuid.UUID) {
		if !seen[id] {
			seen[id] = true
			targets = append(targets, id)
		}
	}
	var errs []error
	for _, id := range caIDs {
		add(id)
		ca, err := s.Reg.GetCA(ctx, id)
		if err != nil {
			if !errors.Is(err, registry.ErrNotFound) {
				errs = append(errs, err)
			}
			continue
		}
		if ca.Status == "revoked" && ca.ParentID != nil {
			add(*ca.ParentID)
		}
	}
	for _, id := range targets {
		_, err := s.regenerate(ctx, id, trigRevoked, true)
		var nk *NoKeyError
		switch {
		case errors.As(err, &nk), errors.Is(err, ErrNotFound):
			s.log().Debug("crl: no crl for this ca", "ca_id", id, "err", err)
		case err != nil:
			errs = append(errs, fmt.Errorf("publishing revocations of ca %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// sqlRefreshCAs lists the CAs Refresh keeps CRLs for: those with a key
// that have not expired (revoked ones included: their CRLs list
// everything they issued).
const sqlRefreshCAs = `SELECT id FROM cas WHERE key_ref IS NOT NULL AND not_after > $1 ORDER BY id`

// Refresh regenerates, for every CA with a key that has not expired,
// what plan says is due. It runs on one replica at a time: it takes a
// session-level advisory lock and returns nil at once when another
// replica holds it. Failures of single CAs are joined.
func (s *Service) Refresh(ctx context.Context) error {
	conn, err := s.Reg.Pool().Acquire(ctx)
	if err != nil {
		return fmt.Errorf("crl refresh: %w", err)
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, 0)`, lockNamespaceRefresh).Scan(&got); err != nil {
		return fmt.Errorf("crl refresh: taking the lock: %w", err)
	}
	if !got {
		s.log().Debug("crl: refresh running on another replica")
		return nil
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1, 0)`, lockNamespaceRefresh); err != nil {
			// Closing the session is the other way to release the lock.
			_ = conn.Conn().Close(uctx)
		}
	}()

	var ids []uuid.UUID
	rows, err := conn.Query(ctx, sqlRefreshCAs, s.now())
	if err == nil {
		ids, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	}
	if err != nil {
		return fmt.Errorf("crl refresh: listing cas: %w", err)
	}
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		if _, err := s.regenerate(ctx, id, trigRefresh, true); err != nil {
			var nk *NoKeyError
			if errors.As(err, &nk) {
				s.log().Warn("crl: ca key missing from the key store", "ca_id", id)
				continue
			}
			errs = append(errs, fmt.Errorf("refreshing the crls of ca %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// Run calls Refresh at once and then every interval (DefaultRefreshInterval
// when not positive) until ctx ends. Errors and panics are logged, never
// raised.
func (s *Service) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = DefaultRefreshInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.refreshLogged(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Service) refreshLogged(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			s.log().Error("crl: refresh panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	if err := s.Refresh(ctx); err != nil && ctx.Err() == nil {
		s.log().Error("crl: refresh", "err", err)
	}
}
