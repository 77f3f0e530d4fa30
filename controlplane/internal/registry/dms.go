package registry

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// DMS is a row of dmss with its authorized CAs.
type DMS struct {
	ID               uuid.UUID
	Name             string
	Status           string
	Mode             string
	DeviceAuth       string
	Profile          string
	ReenrollWindow   time.Duration
	LocalQuota       int
	BootstrapCAPEMs  []string
	IdentitySerial   *string
	IdentityNotAfter *time.Time
	// AuthorizedCAs in the order they were given (the first one is the
	// default for enrollments and the parent of edge CAs).
	AuthorizedCAs []uuid.UUID
	// Labels are the EST labels, each naming one of AuthorizedCAs.
	Labels              []DMSLabel
	EdgeCAValidity      time.Duration
	EdgeNameConstraints []string
	WebhookURL          string
	OnlineWait          time.Duration
	JITRegistration     bool
	CreatedAt           time.Time
	// UpdatedAt changes with every policy, status or identity change.
	UpdatedAt time.Time
	// From the agent's heartbeats.
	LastSeenAt   *time.Time
	AgentVersion string
	QueueDepth   int64
}

// DMSLabel is an EST label of a DMS policy (stored as JSON in dmss.labels).
type DMSLabel struct {
	Name    string    `json:"name"`
	CAID    uuid.UUID `json:"ca_id"`
	Profile string    `json:"profile,omitempty"`
	// DeviceAuth overrides the policy's device authentication.
	DeviceAuth string `json:"device_auth,omitempty"`
}

const dmsColumns = `id, name, status, mode, device_auth, profile, reenroll_window, local_quota, bootstrap_ca_pems, identity_serial, identity_not_after, created_at,
	ARRAY(SELECT ca_id FROM dms_authorized_cas a WHERE a.dms_id = dmss.id ORDER BY position, ca_id), last_seen_at, agent_version, queue_depth,
	labels, edge_ca_validity, edge_name_constraints, webhook_url, online_wait_ms, jit_registration, updated_at`

func scanDMS(row interface{ Scan(...any) error }) (*DMS, error) {
	var d DMS
	var labels []byte
	var onlineWaitMS int64
	err := row.Scan(&d.ID, &d.Name, &d.Status, &d.Mode, &d.DeviceAuth, &d.Profile, &d.ReenrollWindow, &d.LocalQuota,
		&d.BootstrapCAPEMs, &d.IdentitySerial, &d.IdentityNotAfter, &d.CreatedAt, &d.AuthorizedCAs, &d.LastSeenAt, &d.AgentVersion, &d.QueueDepth,
		&labels, &d.EdgeCAValidity, &d.EdgeNameConstraints, &d.WebhookURL, &onlineWaitMS, &d.JITRegistration, &d.UpdatedAt)
	if err == nil && len(labels) > 0 {
		err = json.Unmarshal(labels, &d.Labels)
	}
	d.OnlineWait = time.Duration(onlineWaitMS) * time.Millisecond
	return &d, err
}

// policyArgs returns the policy columns' values, defaults filled in.
func (d *DMS) policyArgs() (labels []byte, constraints []string, err error) {
	if d.BootstrapCAPEMs == nil {
		d.BootstrapCAPEMs = []string{}
	}
	if d.EdgeCAValidity == 0 {
		d.EdgeCAValidity = 30 * 24 * time.Hour
	}
	ls := d.Labels
	if ls == nil {
		ls = []DMSLabel{}
	}
	labels, err = json.Marshal(ls)
	constraints = d.EdgeNameConstraints
	if constraints == nil {
		constraints = []string{}
	}
	return labels, constraints, err
}

// InsertDMS stores a DMS and its authorized CAs.
// Zero EdgeCAValidity stores the default (30 days).
func (q *Queries) InsertDMS(ctx context.Context, d *DMS) error {
	labels, constraints, err := d.policyArgs()
	if err != nil {
		return err
	}
	err = q.db.QueryRow(ctx, `INSERT INTO dmss (id, name, status, mode, device_auth, profile, reenroll_window, local_quota, bootstrap_ca_pems,
			labels, edge_ca_validity, edge_name_constraints, webhook_url, online_wait_ms, jit_registration)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) RETURNING created_at, updated_at`,
		d.ID, d.Name, d.Status, d.Mode, d.DeviceAuth, d.Profile, d.ReenrollWindow, d.LocalQuota, d.BootstrapCAPEMs,
		labels, d.EdgeCAValidity, constraints, d.WebhookURL, d.OnlineWait.Milliseconds(), d.JITRegistration).Scan(&d.CreatedAt, &d.UpdatedAt)
	if err != nil {
		return mapErr(err, "dms "+d.Name)
	}
	return q.setAuthorizedCAs(ctx, d.ID, d.AuthorizedCAs)
}

func (q *Queries) setAuthorizedCAs(ctx context.Context, id uuid.UUID, cas []uuid.UUID) error {
	if _, err := q.db.Exec(ctx, `DELETE FROM dms_authorized_cas WHERE dms_id = $1`, id); err != nil {
		return mapErr(err, "authorized cas")
	}
	if len(cas) == 0 {
		return nil
	}
	_, err := q.db.Exec(ctx, `INSERT INTO dms_authorized_cas (dms_id, ca_id, position)
		SELECT $1, t.ca_id, t.ord FROM unnest($2::uuid[]) WITH ORDINALITY AS t(ca_id, ord)`, id, cas)
	return mapErr(err, "authorized cas")
}

// UpdateDMS writes policy fields and authorized CAs (in order), and
// moves updated_at forward (the policy version agents see).
func (q *Queries) UpdateDMS(ctx context.Context, d *DMS) error {
	labels, constraints, err := d.policyArgs()
	if err != nil {
		return err
	}
	// updated_at never goes backwards, even if the database clock does:
	// it is the policy version agents compare.
	tag, err := q.db.Exec(ctx, `UPDATE dmss SET mode=$2, device_auth=$3, profile=$4, reenroll_window=$5, local_quota=$6, bootstrap_ca_pems=$7,
			labels=$8, edge_ca_validity=$9, edge_name_constraints=$10, webhook_url=$11, online_wait_ms=$12, jit_registration=$13,
			updated_at=greatest(now(), updated_at + interval '1 millisecond')
		WHERE id = $1`, d.ID, d.Mode, d.DeviceAuth, d.Profile, d.ReenrollWindow, d.LocalQuota, d.BootstrapCAPEMs,
		labels, d.EdgeCAValidity, constraints, d.WebhookURL, d.OnlineWait.Milliseconds(), d.JITRegistration)
	if err != nil {
		return mapErr(err, "dms "+d.ID.String())
	}
	if tag.RowsAffected() == 0 {
		return mapErr(errNoRows, "dms "+d.ID.String())
	}
	return q.setAuthorizedCAs(ctx, d.ID, d.AuthorizedCAs)
}

// SetDMSStatus changes a DMS's status.
func (q *Queries) SetDMSStatus(ctx context.Context, id uuid.UUID, status string) error {
	tag, err := q.db.Exec(ctx, `UPDATE dmss SET status=$2, updated_at=greatest(now(), updated_at + interval '1 millisecond') WHERE id=$1`, id, status)
	if err == nil && tag.RowsAffected() == 0 {
		err = errNoRows
	}
	return mapErr(err, "dms "+id.String())
}

// SetDMSIdentity records the DMS's identity certificate and activates it.
func (q *Queries) SetDMSIdentity(ctx context.Context, id uuid.UUID, serial string, notAfter time.Time) error {
	_, err := q.db.Exec(ctx, `UPDATE dmss SET identity_serial=$2, identity_not_after=$3, status='active', updated_at=greatest(now(), updated_at + interval '1 millisecond') WHERE id=$1`, id, serial, notAfter)
	return mapErr(err, "dms "+id.String())
}

// GetDMS returns a DMS by id.
func (q *Queries) GetDMS(ctx context.Context, id uuid.UUID) (*DMS, error) {
	d, err := scanDMS(q.db.QueryRow(ctx, `SELECT `+dmsColumns+` FROM dmss WHERE id = $1`, id))
	return d, mapErr(err, "dms "+id.String())
}

// ListDMSs pages through DMSs by name.
func (q *Queries) ListDMSs(ctx context.Context, cur string, limit int) ([]*DMS, string, error) {
	c, err := decodeCursor(cur)
	if err != nil {
		return nil, "", err
	}
	limit = ClampLimit(limit)
	args := []any{limit + 1}
	where := ""
	if c != nil {
		where = `WHERE name > $2`
		args = append(args, c.K)
	}
	rows, err := q.db.Query(ctx, `SELECT `+dmsColumns+` FROM dmss `+where+` ORDER BY name LIMIT $1`, args...)
	if err != nil {
		return nil, "", mapErr(err, "listing dmss")
	}
	defer rows.Close()
	var out []*DMS
	for rows.Next() {
		d, err := scanDMS(rows)
		if err != nil {
			return nil, "", mapErr(err, "reading dmss")
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, "", mapErr(err, "reading dmss")
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = cursor{K: out[limit-1].Name}.encode()
	}
	return out, next, nil
}

// InsertBootstrapToken stores the hash of a one-time DMS bootstrap token.
func (q *Queries) InsertBootstrapToken(ctx context.Context, hash []byte, dmsID uuid.UUID, expires time.Time) error {
	_, err := q.db.Exec(ctx, `INSERT INTO dms_bootstrap_tokens (token_hash, dms_id, expires_at) VALUES ($1,$2,$3)`, hash, dmsID, expires)
	return mapErr(err, "bootstrap token")
}

// Bootstrap token outcomes.
var (
	ErrTokenUsed    = errorString("registry: bootstrap token already used")
	ErrTokenExpired = errorString("registry: bootstrap token expired")
)

type errorString string

func (e errorString) Error() string { return string(e) }

// ConsumeBootstrapToken marks a token used and returns its DMS. The row
// is locked, so two concurrent uses cannot both succeed. Call it in the
// transaction that issues the certificate.
func (q *Queries) ConsumeBootstrapToken(ctx context.Context, hash []byte, now time.Time) (uuid.UUID, error) {
	var dmsID uuid.UUID
	var expires time.Time
	var used *time.Time
	err := q.db.QueryRow(ctx, `SELECT dms_id, expires_at, used_at FROM dms_bootstrap_tokens WHERE token_hash = $1 FOR UPDATE`, hash).Scan(&dmsID, &expires, &used)
	if err != nil {
		return uuid.Nil, mapErr(err, "bootstrap token")
	}
	if used != nil {
		return uuid.Nil, ErrTokenUsed
	}
	if !now.Before(expires) {
		return uuid.Nil, ErrTokenExpired
	}
	_, err = q.db.Exec(ctx, `UPDATE dms_bootstrap_tokens SET used_at = $2 WHERE token_hash = $1`, hash, now)
	return dmsID, mapErr(err, "bootstrap token")
}
