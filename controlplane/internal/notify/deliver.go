package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// maxErrorLen caps last_error (it holds receiver-controlled text).
const maxErrorLen = 500

// Event is an event as subscribers see it.
type Event struct {
	ID       int64           `json:"id"`
	Kind     string          `json:"kind"`
	At       time.Time       `json:"at"`
	DeviceID *string         `json:"device_id"`
	DMSID    *uuid.UUID      `json:"dms_id"`
	CAID     *uuid.UUID      `json:"ca_id"`
	Detail   json.RawMessage `json:"detail"`
}

// delivery is a claimed delivery with what sending it needs.
type delivery struct {
	SubscriptionID uuid.UUID
	Attempt        int // this attempt's number, 1-based (the fencing token)
	Channel        string
	Target         string
	Secret         string
	Event          Event
}

// Key is the idempotency key "subscription:event".
func (dl *delivery) Key() string { return DeliveryKey(dl.SubscriptionID, dl.Event.ID) }

// DeliveryKey is the idempotency key of the delivery of an event to a
// subscription, as receivers see it.
func DeliveryKey(subscriptionID uuid.UUID, eventID int64) string {
	return subscriptionID.String() + ":" + strconv.FormatInt(eventID, 10)
}

// claimSQL claims up to $2 due deliveries of enabled subscriptions:
// pushes next_attempt_at to the lease end ($3) and counts the attempt, in
// one statement (its own short transaction). SKIP LOCKED lets replicas
// claim disjoint rows.
const claimSQL = `WITH due AS (
	SELECT d.subscription_id, d.event_id FROM deliveries d
	JOIN subscriptions s ON s.id = d.subscription_id
	WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND d.attempts < $4 AND s.disabled_at IS NULL
	ORDER BY d.next_attempt_at
	LIMIT $2
	FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d SET next_attempt_at = $3, attempts = d.attempts + 1
FROM due, subscriptions s, events e
WHERE d.subscription_id = due.subscription_id AND d.event_id = due.event_id
  AND s.id = d.subscription_id AND e.id = d.event_id
RETURNING d.subscription_id, d.attempts, s.channel, s.target, s.secret,
	e.id, e.kind, e.at, e.device_id, e.dms_id, e.ca_id, e.detail`

// claim claims up to n due deliveries.
func (d *Dispatcher) claim(ctx context.Context, n int) ([]*delivery, error) {
	now := d.now()
	leaseEnd := now.Add(d.lease())
	rows, err := d.Pool.Query(ctx, claimSQL, now, n, leaseEnd, d.maxAttempts())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*delivery, error) {
		var dl delivery
		var detail []byte
		err := r.Scan(&dl.SubscriptionID, &dl.Attempt, &dl.Channel, &dl.Target, &dl.Secret,
			&dl.Event.ID, &dl.Event.Kind, &dl.Event.At, &dl.Event.DeviceID, &dl.Event.DMSID, &dl.Event.CAID, &detail)
		dl.Event.At = dl.Event.At.UTC()
		dl.Event.Detail = json.RawMessage(detail)
		return &dl, err
	})
}

// deliver sends up to BatchSize due deliveries with Concurrency workers,
// each claiming one delivery at a time (so a lease covers a single send).
func (d *Dispatcher) deliver(ctx context.Context) error {
	// A delivery claimed by a process that died on its last allowed
	// attempt is never claimed again: give it its final status here.
	if _, err := d.Pool.Exec(ctx, `UPDATE deliveries SET status = 'dead',
		last_error = CASE WHEN last_error = '' THEN 'the last attempt did not complete (lease expired)' ELSE last_error END
		WHERE status = 'pending' AND attempts >= $1 AND next_attempt_at <= $2`, d.maxAttempts(), d.now()); err != nil {
		return err
	}

	var (
		mu     sync.Mutex
		budget = d.batchSize()
		errs   []error
		wg     sync.WaitGroup
	)
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if budget == 0 {
			return false
		}
		budget--
		return true
	}
	for range d.concurrency() {
		wg.Go(func() {
			for ctx.Err() == nil && take() {
				claimed, err := d.claim(ctx, 1)
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
					return
				}
				if len(claimed) == 0 {
					return
				}
				if err := d.attempt(ctx, claimed[0]); err != nil && ctx.Err() == nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// attempt sends one claimed delivery and records the outcome. The
// returned error is about recording it (a failed send is an outcome).
func (d *Dispatcher) attempt(ctx context.Context, dl *delivery) error {
	log := d.log().With(logSubscription, dl.SubscriptionID, logEvent, dl.Event.ID, logAttempt, dl.Attempt, logChannel, dl.Channel)
	sendErr := d.send(ctx, dl)
	// Record even when ctx ended meanwhile: the outcome is known now.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	now := d.now()
	if sendErr == nil {
		tag, err := d.Pool.Exec(rctx, `UPDATE deliveries SET status = 'delivered', delivered_at = $3, last_error = ''
			WHERE subscription_id = $1 AND event_id = $2 AND status = 'pending'`, dl.SubscriptionID, dl.Event.ID, now)
		if err != nil {
			return fmt.Errorf("recording delivery %s: %w", dl.Key(), err)
		}
		if tag.RowsAffected() == 0 {
			log.Debug("notify: delivery was already recorded by another worker")
		} else {
			log.Debug("notify: delivered")
		}
		return nil
	}
	if ctx.Err() != nil {
		// Stopped mid-send: hand the delivery back without counting the
		// attempt (the receiver may have got it; it deduplicates).
		_, err := d.Pool.Exec(rctx, `UPDATE deliveries SET attempts = attempts - 1, next_attempt_at = $4
			WHERE subscription_id = $1 AND event_id = $2 AND status = 'pending' AND attempts = $3`,
			dl.SubscriptionID, dl.Event.ID, dl.Attempt, now)
		if err != nil {
			return fmt.Errorf("releasing delivery %s: %w", dl.Key(), err)
		}
		return nil
	}
	wait := d.backoff(dl.Attempt)
	var ra *retryAfterError
	if errors.As(sendErr, &ra) && ra.after > wait {
		wait = min(ra.after, maxBackoff)
	}
	msg := truncateError(sendErr.Error())
	var status string
	err := d.Pool.QueryRow(rctx, `UPDATE deliveries SET last_error = $4, next_attempt_at = $5,
			status = CASE WHEN attempts >= $6 THEN 'dead' ELSE 'pending' END
		WHERE subscription_id = $1 AND event_id = $2 AND status = 'pending' AND attempts = $3
		RETURNING status`, dl.SubscriptionID, dl.Event.ID, dl.Attempt, msg, now.Add(wait), d.maxAttempts()).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		log.Debug("notify: delivery was taken over by another worker", logError, msg)
	case err != nil:
		return fmt.Errorf("recording failed delivery %s: %w", dl.Key(), err)
	case status == "dead":
		log.Warn("notify: delivery failed for the last time, marked dead", logError, msg)
	default:
		log.Info("notify: delivery failed, will retry", logError, msg, "retry_in", wait)
	}
	return nil
}

// send delivers through the subscription's channel.
func (d *Dispatcher) send(ctx context.Context, dl *delivery) error {
	switch dl.Channel {
	case ChannelWebhook:
		return d.sendWebhook(ctx, dl)
	case ChannelChat:
		return d.sendChat(ctx, dl)
	case ChannelEmail:
		return d.sendEmail(ctx, dl)
	}
	return fmt.Errorf("unknown channel %q", dl.Channel)
}

// truncateError makes s storable and short: valid UTF-8 without NULs
// (PostgreSQL text rejects both), at most maxErrorLen bytes.
func truncateError(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "")
	if len(s) <= maxErrorLen {
		return s
	}
	cut := maxErrorLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
