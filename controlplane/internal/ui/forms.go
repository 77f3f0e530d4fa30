package ui

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Form and query helpers: each refusal names the field.

// formInt reads an optional whole number between lo and hi; empty is def.
func formInt(r *http.Request, field string, def, lo, hi int) (int, error) {
	v := strings.TrimSpace(r.PostFormValue(field))
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, badField(field, field+" must be a whole number from "+strconv.Itoa(lo)+" to "+strconv.Itoa(hi)+".")
	}
	return n, nil
}

// optUUID reads an optional id.
func optUUID(field, v string) (*uuid.UUID, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	id, err := uuid.Parse(v)
	if err != nil {
		return nil, badField(field, field+" must be an id (a UUID such as 0b6c2f3e-…).")
	}
	return &id, nil
}

// pathUUID reads an id from the URL path.
func pathUUID(r *http.Request, name string) (uuid.UUID, error) {
	id, err := uuid.Parse(r.PathValue(name))
	if err != nil {
		return uuid.Nil, &httpError{Status: http.StatusNotFound, Field: name, Message: "There is nothing at this address: " + name + " is not an id."}
	}
	return id, nil
}

// lines splits a textarea into trimmed, non-empty lines (commas also
// separate, so "a, b" works on one line).
func lines(v string) []string {
	var out []string
	for _, l := range strings.FieldsFunc(v, func(r rune) bool { return r == '\n' || r == '\r' || r == ',' }) {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// queryDate reads a date (2027-01-31) or an RFC 3339 time from the query.
func queryDate(r *http.Request, field string) (time.Time, error) {
	v := strings.TrimSpace(r.URL.Query().Get(field))
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	return time.Time{}, badField(field, field+" must be a date such as 2027-01-31 (or an RFC 3339 time).")
}

// resolveCA finds a CA by id or by its unique name.
func (s *Server) resolveCA(ctx context.Context, field, v string) (uuid.UUID, error) {
	if id, err := uuid.Parse(v); err == nil {
		return id, nil
	}
	var id uuid.UUID
	err := s.pool.QueryRow(ctx, `SELECT id FROM cas WHERE name = $1`, v).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, badField(field, field+": there is no CA named or with the id "+strconvQuote(v)+".")
	}
	return id, err
}

func strconvQuote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strconv.Quote(s)
}

// names maps ids to names for one page of rows: one query per table.
func (s *Server) names(ctx context.Context, table string, ids []uuid.UUID) (map[uuid.UUID]string, error) {
	out := map[uuid.UUID]string{}
	if len(ids) == 0 {
		return out, nil
	}
	var sql string
	switch table {
	case "cas":
		sql = `SELECT id, name FROM cas WHERE id = ANY($1)`
	case "dmss":
		sql = `SELECT id, name FROM dmss WHERE id = ANY($1)`
	default:
		return nil, errors.New("ui: names of an unknown table")
	}
	rows, err := s.pool.Query(ctx, sql, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id uuid.UUID
		var n string
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}

// redirect answers a successful change: 303 to a page, with a fixed
// confirmation code.
func redirect(w http.ResponseWriter, r *http.Request, path, msg string) {
	if msg != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "msg=" + msg
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
}
