package notify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

// Stats counts deliveries by status.
type Stats struct {
	Pending, Delivered, Dead int
}

// Stats counts every delivery by status.
func (d *Dispatcher) Stats(ctx context.Context) (Stats, error) {
	return ReadStats(ctx, d.Pool, nil)
}

// ReadStats counts deliveries by status, of one subscription when
// subscriptionID is not nil.
func ReadStats(ctx context.Context, q registry.DBTX, subscriptionID *uuid.UUID) (Stats, error) {
	var s Stats
	err := q.QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE status = 'pending'),
		count(*) FILTER (WHERE status = 'delivered'),
		count(*) FILTER (WHERE status = 'dead')
		FROM deliveries WHERE $1::uuid IS NULL OR subscription_id = $1`, subscriptionID).Scan(&s.Pending, &s.Delivered, &s.Dead)
	if err != nil {
		return s, fmt.Errorf("counting deliveries: %w", err)
	}
	return s, nil
}

// ErrNotDead: Redeliver was asked to revive a delivery that is not dead.
var ErrNotDead = errors.New("notify: delivery is not dead")

// Redeliver makes a dead delivery pending again with a fresh attempt
// budget, due now. A missing delivery is registry.ErrNotFound; a pending
// or delivered one is ErrNotDead.
func (d *Dispatcher) Redeliver(ctx context.Context, subscriptionID uuid.UUID, eventID int64) error {
	return Redeliver(ctx, d.Pool, subscriptionID, eventID, d.now())
}

// Redeliver is Dispatcher.Redeliver on any DBTX, with the time it is due.
func Redeliver(ctx context.Context, q registry.DBTX, subscriptionID uuid.UUID, eventID int64, now time.Time) error {
	var status string
	err := q.QueryRow(ctx, `WITH cur AS (
			SELECT status FROM deliveries WHERE subscription_id = $1 AND event_id = $2
		), upd AS (
			UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $3, last_error = ''
			WHERE subscription_id = $1 AND event_id = $2 AND status = 'dead'
			RETURNING 1
		)
		SELECT status FROM cur`, subscriptionID, eventID, now).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%w: delivery %s", registry.ErrNotFound, DeliveryKey(subscriptionID, eventID))
	case err != nil:
		return fmt.Errorf("redelivering: %w", err)
	case status != "dead":
		return fmt.Errorf("%w: delivery %s is %s", ErrNotDead, DeliveryKey(subscriptionID, eventID), status)
	}
	return nil
}

// Delivery is a delivery receipt.
type Delivery struct {
	SubscriptionID uuid.UUID
	EventID        int64
	EventKind      string
	// Status is "pending", "delivered" or "dead".
	Status        string
	Attempts      int
	NextAttemptAt time.Time
	LastError     string
	DeliveredAt   *time.Time
}

// Key is the delivery's idempotency key.
func (d *Delivery) Key() string { return DeliveryKey(d.SubscriptionID, d.EventID) }

// DeliveryFilter selects receipts for ListDeliveries.
type DeliveryFilter struct {
	SubscriptionID uuid.UUID // required
	Status         string    // "" for every status
	// BeforeEventID pages: only events with a smaller id (0: from the
	// newest). Pass the last EventID of a page to get the next.
	BeforeEventID int64
	Limit         int
}

// ListDeliveries returns a subscription's delivery receipts, newest event
// first (keyset pagination on the event id).
func ListDeliveries(ctx context.Context, q registry.DBTX, f DeliveryFilter) ([]Delivery, error) {
	before := f.BeforeEventID
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := q.Query(ctx, `SELECT d.subscription_id, d.event_id, e.kind, d.status, d.attempts, d.next_attempt_at, d.last_error, d.delivered_at
		FROM deliveries d JOIN events e ON e.id = d.event_id
		WHERE d.subscription_id = $1 AND d.event_id < $2 AND ($3 = '' OR d.status = $3)
		ORDER BY d.event_id DESC LIMIT $4`, f.SubscriptionID, before, f.Status, registry.ClampLimit(f.Limit))
	if err != nil {
		return nil, fmt.Errorf("listing deliveries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Delivery, error) {
		var d Delivery
		err := r.Scan(&d.SubscriptionID, &d.EventID, &d.EventKind, &d.Status, &d.Attempts, &d.NextAttemptAt, &d.LastError, &d.DeliveredAt)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing deliveries: %w", err)
	}
	return out, nil
}
