package registry

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Principal is an API identity.
type Principal struct {
	ID   uuid.UUID
	Name string
	Role string
}

// UpsertPrincipal returns the principal with this name, creating it with
// role if it does not exist (an existing principal keeps its role).
func (q *Queries) UpsertPrincipal(ctx context.Context, name, role string) (*Principal, error) {
	var p Principal
	err := q.db.QueryRow(ctx, `INSERT INTO principals (id, name, role) VALUES ($1,$2,$3)
		ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
		RETURNING id, name, role`, uuid.New(), name, role).Scan(&p.ID, &p.Name, &p.Role)
	return &p, mapErr(err, "principal "+name)
}

// CountPrincipals returns how many principals exist.
func (q *Queries) CountPrincipals(ctx context.Context) (int, error) {
	var n int
	err := q.db.QueryRow(ctx, `SELECT count(*) FROM principals`).Scan(&n)
	return n, mapErr(err, "principals")
}

// Token is an API token row (the secret itself is never stored).
type Token struct {
	ID          uuid.UUID
	PrincipalID uuid.UUID
	Description string
	ExpiresAt   *time.Time
	RevokedAt   *time.Time
}

// InsertToken stores a token hash.
func (q *Queries) InsertToken(ctx context.Context, t *Token, hash []byte) error {
	_, err := q.db.Exec(ctx, `INSERT INTO api_tokens (id, principal_id, token_hash, description, expires_at) VALUES ($1,$2,$3,$4,$5)`,
		t.ID, t.PrincipalID, hash, t.Description, t.ExpiresAt)
	return mapErr(err, "token")
}

// EnsureToken stores a token hash for a principal unless it exists:
// configured tokens (the initial admin token) are installed this way at
// every start.
func (q *Queries) EnsureToken(ctx context.Context, principalID uuid.UUID, hash []byte, description string) error {
	_, err := q.db.Exec(ctx, `INSERT INTO api_tokens (id, principal_id, token_hash, description) VALUES ($1,$2,$3,$4)
		ON CONFLICT (token_hash) DO NOTHING`, uuid.New(), principalID, hash, description)
	return mapErr(err, "token")
}

// TokenByHash resolves a presented token to its principal. It returns
// ErrNotFound for unknown tokens; the caller checks expiry and revocation.
func (q *Queries) TokenByHash(ctx context.Context, hash []byte) (*Token, *Principal, error) {
	var t Token
	var p Principal
	err := q.db.QueryRow(ctx, `SELECT t.id, t.principal_id, t.description, t.expires_at, t.revoked_at, p.id, p.name, p.role
		FROM api_tokens t JOIN principals p ON p.id = t.principal_id WHERE t.token_hash = $1`, hash).
		Scan(&t.ID, &t.PrincipalID, &t.Description, &t.ExpiresAt, &t.RevokedAt, &p.ID, &p.Name, &p.Role)
	if err != nil {
		return nil, nil, mapErr(err, "token")
	}
	return &t, &p, nil
}

// RevokeToken marks a token revoked.
func (q *Queries) RevokeToken(ctx context.Context, id uuid.UUID, at time.Time) error {
	tag, err := q.db.Exec(ctx, `UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL`, id, at)
	if err == nil && tag.RowsAffected() == 0 {
		if _, gerr := q.getToken(ctx, id); gerr != nil {
			return gerr
		}
	}
	return mapErr(err, "token")
}

func (q *Queries) getToken(ctx context.Context, id uuid.UUID) (*Token, error) {
	var t Token
	err := q.db.QueryRow(ctx, `SELECT id, principal_id, description, expires_at, revoked_at FROM api_tokens WHERE id = $1`, id).
		Scan(&t.ID, &t.PrincipalID, &t.Description, &t.ExpiresAt, &t.RevokedAt)
	return &t, mapErr(err, "token "+id.String())
}
