package notify

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

// Channels a subscription delivers through.
const (
	ChannelWebhook = "webhook"
	ChannelEmail   = "email"
	ChannelChat    = "chat"
)

// Limits on what a subscription may hold (all of it comes from API
// clients).
const (
	maxNameLen   = 200
	maxTargetLen = 2048
	maxKinds     = 64
	maxKindLen   = 100
	maxSecretLen = 256
)

// Subscription routes matching events to one target.
type Subscription struct {
	ID uuid.UUID
	// Name is required; it is for people.
	Name string
	// Channel is ChannelWebhook, ChannelEmail or ChannelChat.
	Channel string
	// Target is an http(s) URL (webhook, chat) or a bare email address.
	Target string
	// Secret is the webhook's HMAC-SHA256 key. Create generates one when
	// it is empty; List and Get never return it (it is shown once, on
	// creation).
	Secret string
	// EventKinds selects events by kind: exact kinds, "prefix.*" for a
	// family ("certificate.*") or "*". Empty means every kind.
	EventKinds []string
	// Optional filters: only events about this CA, DMS or device.
	CAID     *uuid.UUID
	DMSID    *uuid.UUID
	DeviceID *string

	CreatedAt  time.Time
	DisabledAt *time.Time
}

// ValidationError is a subscription a caller must fix; Field names the
// offending field (JSON spelling) and Message is safe to show the client.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string {
	return "notify: invalid " + e.Field + ": " + e.Message
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Validate checks s as Create would, without touching the database.
// It normalises EventKinds (trimmed, deduplicated).
func (s *Subscription) Validate() error {
	s.Name = strings.TrimSpace(s.Name)
	switch {
	case s.Name == "":
		return invalid("name", "name is required")
	case len(s.Name) > maxNameLen:
		return invalid("name", "name is longer than %d bytes", maxNameLen)
	}
	switch s.Channel {
	case ChannelWebhook, ChannelChat:
		if err := validateURL(s.Target); err != nil {
			return err
		}
	case ChannelEmail:
		if err := validateAddress(s.Target); err != nil {
			return err
		}
	default:
		return invalid("channel", "channel must be %q, %q or %q", ChannelWebhook, ChannelEmail, ChannelChat)
	}
	if len(s.Secret) > maxSecretLen {
		return invalid("secret", "secret is longer than %d bytes", maxSecretLen)
	}
	if len(s.EventKinds) > maxKinds {
		return invalid("event_kinds", "at most %d event kinds", maxKinds)
	}
	seen := map[string]bool{}
	kinds := make([]string, 0, len(s.EventKinds))
	for _, k := range s.EventKinds {
		k = strings.TrimSpace(k)
		if err := validateKind(k); err != nil {
			return err
		}
		if !seen[k] {
			seen[k] = true
			kinds = append(kinds, k)
		}
	}
	s.EventKinds = kinds
	if s.DeviceID != nil && *s.DeviceID == "" {
		return invalid("device_id", "device_id must not be empty when given")
	}
	return nil
}

func validateURL(target string) error {
	if len(target) > maxTargetLen {
		return invalid("target", "target is longer than %d bytes", maxTargetLen)
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return invalid("target", "target must be an absolute http or https URL")
	}
	if u.Fragment != "" {
		return invalid("target", "target must not have a fragment")
	}
	return nil
}

func validateAddress(target string) error {
	if len(target) > 254 { // RFC 5321 4.5.3.1.3 path limit, less the brackets
		return invalid("target", "email address is too long")
	}
	a, err := mail.ParseAddress(target)
	if err != nil || a.Address != target || a.Name != "" || !strings.Contains(target, "@") {
		return invalid("target", "target must be a bare email address such as ops@example.com")
	}
	return nil
}

// validateKind accepts "kind.name", "prefix.*" and "*".
func validateKind(k string) error {
	if k == "" {
		return invalid("event_kinds", "event kinds must not be empty")
	}
	if len(k) > maxKindLen {
		return invalid("event_kinds", "event kind %.20q... is too long", k)
	}
	if k == "*" {
		return nil
	}
	base := strings.TrimSuffix(k, ".*")
	for _, r := range base {
		if !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) || r == '.' || r == '_' || r == '-') {
			return invalid("event_kinds", "event kind %q: use letters, digits, '.', '_', '-', and '*' only as a trailing \".*\"", k)
		}
	}
	if base == "" || strings.HasPrefix(base, ".") || strings.HasSuffix(base, ".") {
		return invalid("event_kinds", "event kind %q is not valid", k)
	}
	return nil
}

// NewSecret returns a fresh webhook signing secret.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// Create validates s and stores it. A zero ID gets a new one; an empty
// Secret on a webhook gets a generated one, left in s.Secret for the
// caller to show once. A CA, DMS or device filter that does not exist is
// a *ValidationError.
func Create(ctx context.Context, q registry.DBTX, s *Subscription) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.ID == uuid.Nil {
		s.ID = uuid.New()
	}
	if s.Channel == ChannelWebhook && s.Secret == "" {
		s.Secret = NewSecret()
	}
	if s.EventKinds == nil {
		s.EventKinds = []string{}
	}
	err := q.QueryRow(ctx, `INSERT INTO subscriptions (id, name, channel, target, secret, event_kinds, ca_id, dms_id, device_id)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) RETURNING created_at`,
		s.ID, s.Name, s.Channel, s.Target, s.Secret, s.EventKinds, s.CAID, s.DMSID, s.DeviceID).Scan(&s.CreatedAt)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23503" && strings.Contains(pgErr.ConstraintName, "ca_id"):
			return invalid("ca_id", "CA %s does not exist", s.CAID)
		case pgErr.Code == "23503" && strings.Contains(pgErr.ConstraintName, "dms_id"):
			return invalid("dms_id", "DMS %s does not exist", s.DMSID)
		case pgErr.Code == "23503" && strings.Contains(pgErr.ConstraintName, "device_id"):
			return invalid("device_id", "device %q is not registered", *s.DeviceID)
		case pgErr.Code == "23505":
			return fmt.Errorf("%w: subscription %s", registry.ErrConflict, s.ID)
		}
	}
	if err != nil {
		return fmt.Errorf("creating subscription: %w", err)
	}
	return nil
}

const subscriptionColumns = `id, name, channel, target, event_kinds, ca_id, dms_id, device_id, created_at, disabled_at`

func scanSubscription(row pgx.Row) (*Subscription, error) {
	var s Subscription
	err := row.Scan(&s.ID, &s.Name, &s.Channel, &s.Target, &s.EventKinds, &s.CAID, &s.DMSID, &s.DeviceID, &s.CreatedAt, &s.DisabledAt)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// Get returns a subscription (without its secret), or an error wrapping
// registry.ErrNotFound.
func Get(ctx context.Context, q registry.DBTX, id uuid.UUID) (*Subscription, error) {
	s, err := scanSubscription(q.QueryRow(ctx, `SELECT `+subscriptionColumns+` FROM subscriptions WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: subscription %s", registry.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("reading subscription: %w", err)
	}
	return s, nil
}

// listCursor is the sort key of a page's last row (created_at, id).
type listCursor struct {
	T time.Time `json:"t"`
	K uuid.UUID `json:"k"`
}

// List returns subscriptions (without secrets), disabled ones included,
// oldest first, with keyset pagination: pass the returned cursor to get
// the next page ("" when there is none). A cursor this package did not
// produce is registry.ErrBadCursor.
func List(ctx context.Context, q registry.DBTX, cursor string, limit int) ([]*Subscription, string, error) {
	limit = registry.ClampLimit(limit)
	after := listCursor{T: time.Unix(0, 0)}
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		if len(cursor) > 256 || err != nil || json.Unmarshal(b, &after) != nil {
			return nil, "", registry.ErrBadCursor
		}
	}
	rows, err := q.Query(ctx, `SELECT `+subscriptionColumns+` FROM subscriptions
		WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3`, after.T, after.K, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("listing subscriptions: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Subscription, error) { return scanSubscription(r) })
	if err != nil {
		return nil, "", fmt.Errorf("listing subscriptions: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		b, _ := json.Marshal(listCursor{T: last.CreatedAt, K: last.ID})
		next = base64.RawURLEncoding.EncodeToString(b)
	}
	return out, next, nil
}

// Disable stops a subscription: no new deliveries are created for it and
// its pending ones are not sent (they stay, and resume on Enable).
// Disabling a disabled subscription is not an error.
func Disable(ctx context.Context, q registry.DBTX, id uuid.UUID, now time.Time) error {
	return setDisabled(ctx, q, id, &now)
}

// Enable resumes a disabled subscription.
func Enable(ctx context.Context, q registry.DBTX, id uuid.UUID) error {
	return setDisabled(ctx, q, id, nil)
}

func setDisabled(ctx context.Context, q registry.DBTX, id uuid.UUID, at *time.Time) error {
	tag, err := q.Exec(ctx, `UPDATE subscriptions SET disabled_at = CASE WHEN $2::timestamptz IS NULL THEN NULL ELSE coalesce(disabled_at, $2) END WHERE id = $1`, id, at)
	if err != nil {
		return fmt.Errorf("updating subscription: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: subscription %s", registry.ErrNotFound, id)
	}
	return nil
}

// Delete removes a subscription and its delivery records.
func Delete(ctx context.Context, q registry.DBTX, id uuid.UUID) error {
	tag, err := q.Exec(ctx, `DELETE FROM subscriptions WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("deleting subscription: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: subscription %s", registry.ErrNotFound, id)
	}
	return nil
}
