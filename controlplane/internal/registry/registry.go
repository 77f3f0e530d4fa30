// Package registry is the control plane's PostgreSQL data layer: CAs,
// certificates, DMSs, devices, events, principals and tokens. The audit
// log lives in package audit, written in the same transactions.
//
// Every list uses keyset pagination (an opaque cursor holding the last
// row's sort key), never OFFSET: page 10,000 costs what page 1 costs.
package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Errors callers check with errors.Is.
var (
	ErrNotFound = errors.New("registry: not found")
	ErrConflict = errors.New("registry: already exists")
	// ErrBadCursor: a cursor that this server did not produce.
	ErrBadCursor = errors.New("registry: invalid cursor")
)

// DBTX is what queries run on: the pool or a transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Queries runs the registry's statements on a DBTX.
type Queries struct{ db DBTX }

// Registry is the registry over a pool. Its embedded Queries run outside
// a transaction; Tx runs several in one.
type Registry struct {
	*Queries
	pool *pgxpool.Pool
}

// New returns a Registry on pool.
func New(pool *pgxpool.Pool) *Registry {
	return &Registry{Queries: &Queries{db: pool}, pool: pool}
}

// Pool returns the underlying pool.
func (r *Registry) Pool() *pgxpool.Pool { return r.pool }

// On returns Queries bound to a transaction (or any DBTX).
func On(db DBTX) *Queries { return &Queries{db: db} }

// Tx runs f in a transaction, committing if f returns nil. A
// serialization failure or deadlock (another replica touching the same
// rows) is retried a few times, so f must be safe to run again.
func (r *Registry) Tx(ctx context.Context, f func(tx pgx.Tx) error) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = pgx.BeginFunc(ctx, r.pool, f)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01") {
			continue
		}
		return err
	}
	return fmt.Errorf("transaction kept conflicting: %w", err)
}

// mapErr turns driver errors into registry errors.
func mapErr(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrNotFound, what)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return fmt.Errorf("%w: %s (%s)", ErrConflict, what, pgErr.ConstraintName)
	}
	return fmt.Errorf("%s: %w", what, err)
}
