package ui

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/audit"
	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

// Cookie names. The session cookie is scoped to /ui; the login cookie
// (the CSRF token of the login form, before any session exists) to the
// login page.
const (
	sessionCookie = "outpost_ui_session"
	loginCookie   = "outpost_ui_login"
)

// slideEvery limits how often a session's expiry is written: at most once
// a minute per session, not on every request.
const slideEvery = time.Minute

// maxTokenLen caps a pasted token before it is hashed (API tokens are 47
// characters; the API refuses more than 256).
const maxTokenLen = 256

// session is a logged-in person: the principal behind an API token.
type session struct {
	idHash    []byte
	Name      string
	Role      Role
	principal uuid.UUID
	tokenID   uuid.UUID
	CSRF      string
	createdAt time.Time
	expiresAt time.Time
}

// actor is what the audit log records for the session's changes: the
// principal's name, as for API calls.
func (s *session) actor() caservice.Actor { return caservice.Actor(s.Name) }

func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func hashID(id string) []byte {
	h := sha256.Sum256([]byte(id))
	return h[:]
}

// secureRequest reports whether cookies must be Secure: always, except
// for plain HTTP that arrived on a loopback address (a developer's
// machine, a test). TLS, or a proxy saying the client used HTTPS
// (X-Forwarded-Proto or Forwarded), makes them Secure; those headers can
// only add the attribute, never remove it.
func secureRequest(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https") {
		return true
	}
	if f := strings.ToLower(r.Header.Get("Forwarded")); strings.Contains(f, "proto=https") {
		return true
	}
	addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return true
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return true
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, name, value, path string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: true,
		Secure: secureRequest(r), SameSite: http.SameSiteStrictMode})
}

// --- login and logout -------------------------------------------------

type loginData struct {
	Next  string
	Error string
	Field string
	CSRF  string
}

// safeNext keeps a post-login destination inside the dashboard.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, PathPrefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return PathPrefix
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || (u.Path != PathPrefix && !strings.HasPrefix(u.Path, PathPrefix+"/")) {
		return PathPrefix
	}
	return next
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, err := s.currentSession(r); err == nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.renderLogin(w, r, http.StatusOK, loginData{Next: safeNext(r.URL.Query().Get("next"))})
}

// renderLogin shows the login form with a fresh login CSRF token (a
// double-submit value: the same random string in a cookie and the form).
func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, d loginData) {
	d.CSRF = randomToken()
	s.setCookie(w, r, loginCookie, d.CSRF, PathPrefix+"/login", 3600)
	s.render(w, r, status, "login", &page{Title: "Log in", Data: d})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxFormSize)
	if err := r.ParseForm(); err != nil {
		s.renderError(w, r, nil, s.classify(r, err))
		return
	}
	if err := checkOrigin(r); err != nil {
		s.renderError(w, r, nil, err)
		return
	}
	c, err := r.Cookie(loginCookie)
	if err != nil || !equalSecret(c.Value, r.PostFormValue("csrf")) {
		s.renderError(w, r, nil, &httpError{Status: http.StatusForbidden, Field: "csrf",
			Message: "The login form expired or did not come from this dashboard: reload the login page and try again."})
		return
	}
	next := safeNext(r.PostFormValue("next"))
	tok := strings.TrimSpace(r.PostFormValue("token"))
	refuse := func(msg string) {
		s.renderLogin(w, r, http.StatusUnauthorized, loginData{Next: next, Error: msg, Field: "token"})
	}
	if tok == "" {
		refuse("Paste an API token (it starts with opk_).")
		return
	}
	if len(tok) > maxTokenLen {
		refuse("This is not an API token: it is too long.")
		return
	}
	ctx := r.Context()
	t, p, err := s.reg.TokenByHash(ctx, caservice.HashSecret(tok))
	if errors.Is(err, registry.ErrNotFound) {
		refuse("This token is not valid.")
		return
	}
	if err != nil {
		s.renderError(w, r, nil, s.classify(r, err))
		return
	}
	now := s.clock()
	switch {
	case t.RevokedAt != nil:
		refuse("This token was revoked.")
		return
	case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
		refuse("This token has expired.")
		return
	}
	role, ok := parseRole(p.Role)
	if !ok {
		refuse("This token's principal has no dashboard role.")
		return
	}
	id := randomToken()
	sess := &session{idHash: hashID(id), Name: p.Name, Role: role, principal: p.ID, tokenID: t.ID, CSRF: randomToken(),
		createdAt: now, expiresAt: s.expiry(now, now)}
	err = s.reg.Tx(ctx, func(tx pgx.Tx) error {
		// Expired sessions of anyone are purged here (an index range).
		if _, err := tx.Exec(ctx, `DELETE FROM ui_sessions WHERE expires_at < $1`, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO ui_sessions (id_hash, principal_id, token_id, role, csrf_token, created_at, expires_at)
			VALUES ($1,$2,$3,$4,$5,$6,$7)`, sess.idHash, sess.principal, sess.tokenID, role.String(), sess.CSRF, now, sess.expiresAt); err != nil {
			return err
		}
		_, err := audit.Append(ctx, tx, now, p.Name, "ui.login", t.ID.String(), map[string]any{"role": role.String()})
		return err
	})
	if err != nil {
		s.renderError(w, r, nil, s.classify(r, err))
		return
	}
	s.log.Info("dashboard login", "principal", p.Name, "role", role.String(), "token_id", t.ID)
	s.setCookie(w, r, loginCookie, "", PathPrefix+"/login", -1)
	// A session cookie (no Max-Age): the browser forgets it when it
	// closes; the server ends it after SessionTTL without use.
	s.setCookie(w, r, sessionCookie, id, PathPrefix, 0)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// expiry is the sliding expiry of a session created at created, used at now.
func (s *Server) expiry(created, now time.Time) time.Time {
	exp := now.Add(s.opts.SessionTTL)
	if limit := created.Add(s.opts.SessionMaxLifetime); exp.After(limit) {
		exp = limit
	}
	return exp
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) error {
	ctx := r.Context()
	err := s.reg.Tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM ui_sessions WHERE id_hash = $1`, sess.idHash); err != nil {
			return err
		}
		_, err := audit.Append(ctx, tx, s.clock(), sess.Name, "ui.logout", sess.tokenID.String(), nil)
		return err
	})
	if err != nil {
		return err
	}
	s.setCookie(w, r, sessionCookie, "", PathPrefix, -1)
	http.Redirect(w, r, PathPrefix+"/login?msg=logged-out", http.StatusSeeOther)
	return nil
}

// --- the session of a request ----------------------------------------

// errNoSession: no valid session; the person logs in again.
var errNoSession = errors.New("no session")

// currentSession loads the request's session in one query (three primary
// key lookups) and checks it: not expired or revoked, its API token
// neither revoked nor expired, its principal's role unchanged. A valid
// session's expiry slides forward (written at most once a minute).
func (s *Server) currentSession(r *http.Request) (*session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > 100 {
		return nil, errNoSession
	}
	ctx := r.Context()
	sess := &session{idHash: hashID(c.Value)}
	var role, principalRole string
	var revokedAt, tokExpires, tokRevoked *time.Time
	err = s.pool.QueryRow(ctx, `SELECT s.principal_id, s.token_id, s.role, s.csrf_token, s.created_at, s.expires_at, s.revoked_at,
			t.expires_at, t.revoked_at, p.name, p.role
		FROM ui_sessions s JOIN api_tokens t ON t.id = s.token_id JOIN principals p ON p.id = s.principal_id
		WHERE s.id_hash = $1`, sess.idHash).
		Scan(&sess.principal, &sess.tokenID, &role, &sess.CSRF, &sess.createdAt, &sess.expiresAt, &revokedAt, &tokExpires, &tokRevoked, &sess.Name, &principalRole)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNoSession
	}
	if err != nil {
		return nil, err
	}
	now := s.clock()
	switch {
	case revokedAt != nil, !now.Before(sess.expiresAt):
		return nil, errNoSession
	case tokRevoked != nil, tokExpires != nil && !now.Before(*tokExpires), principalRole != role:
		// The token behind the session no longer holds: end the session.
		if _, err := s.pool.Exec(ctx, `UPDATE ui_sessions SET revoked_at = $2 WHERE id_hash = $1 AND revoked_at IS NULL`, sess.idHash, now); err != nil {
			s.log.Warn("ending a dashboard session", "err", err)
		}
		return nil, errNoSession
	}
	var ok bool
	if sess.Role, ok = parseRole(role); !ok {
		return nil, errNoSession
	}
	if next := s.expiry(sess.createdAt, now); next.Sub(sess.expiresAt) >= slideEvery {
		if _, err := s.pool.Exec(ctx, `UPDATE ui_sessions SET expires_at = $2 WHERE id_hash = $1 AND revoked_at IS NULL`, sess.idHash, next); err != nil {
			return nil, err
		}
		sess.expiresAt = next
	}
	return sess, nil
}

type sessionKey struct{}

// authed runs h for a request with a valid session whose role is at least
// role. Without a session the browser goes to the login page. A mutating
// request must also carry the session's CSRF token and come from this
// origin.
func (s *Server) authed(role Role, mutating bool, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := s.currentSession(r)
		if err != nil {
			if !errors.Is(err, errNoSession) {
				s.renderError(w, r, nil, s.classify(r, err))
				return
			}
			s.setCookie(w, r, sessionCookie, "", PathPrefix, -1)
			target := PathPrefix + "/login"
			if r.Method == http.MethodGet {
				target += "?next=" + url.QueryEscape(r.URL.RequestURI())
			}
			http.Redirect(w, r, target, http.StatusSeeOther)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		if mutating {
			r.Body = http.MaxBytesReader(w, r.Body, MaxFormSize)
			if err := parseForm(r); err != nil {
				s.renderError(w, r, sess, s.classify(r, err))
				return
			}
		}
		if sess.Role < role {
			s.renderError(w, r, sess, &httpError{Status: http.StatusForbidden,
				Message: "Your role (" + sess.Role.String() + ") cannot do this: it needs the " + role.String() + " role."})
			return
		}
		if mutating {
			if err := checkOrigin(r); err != nil {
				s.renderError(w, r, sess, err)
				return
			}
			if !equalSecret(sess.CSRF, r.PostFormValue("csrf")) {
				s.renderError(w, r, sess, &httpError{Status: http.StatusForbidden, Field: "csrf",
					Message: "The form did not carry this session's security token (CSRF): reload the page and submit it again."})
				return
			}
		}
		r = r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess))
		err = h(w, r, sess)
		if mutating {
			// A change may move the overview's counts: recompute them on
			// the next view rather than show them up to statsFresh late.
			s.stats.invalidate()
		}
		if err != nil {
			s.renderError(w, r, sess, s.classify(r, err))
		}
	})
}

func parseForm(r *http.Request) error {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		return r.ParseMultipartForm(MaxFormSize)
	}
	return r.ParseForm()
}

// equalSecret compares a secret with what a client sent, in constant time.
func equalSecret(want, got string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

// checkOrigin refuses a request whose Origin (or, without one, Referer)
// names another host than the one it was sent to (the Host header, or the
// X-Forwarded-Host a reverse proxy sets: a cross-site form cannot set
// either). Browsers send Origin on every POST; a request with neither
// header still needs the CSRF token.
func checkOrigin(r *http.Request) *httpError {
	refuse := &httpError{Status: http.StatusForbidden, Message: "This form was sent from another site; the dashboard only accepts its own forms."}
	sameHost := func(h string) bool {
		if h == "" {
			return false
		}
		if strings.EqualFold(h, r.Host) {
			return true
		}
		fh := strings.TrimSpace(strings.Split(r.Header.Get("X-Forwarded-Host"), ",")[0])
		return fh != "" && strings.EqualFold(h, fh)
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if o == "null" || err != nil || !sameHost(u.Host) {
			return refuse
		}
		return nil
	}
	if ref := r.Header.Get("Referer"); ref != "" {
		u, err := url.Parse(ref)
		if err != nil || !sameHost(u.Host) {
			return refuse
		}
	}
	return nil
}
