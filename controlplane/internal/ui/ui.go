// Package ui is the control plane's admin dashboard under /ui: server-
// rendered HTML pages (html/template), one CSS file, one small script and
// charts drawn on the server as inline SVG (gonum.org/v1/plot). Templates,
// styles and script are embedded in the binary; nothing is fetched from
// elsewhere at run time.
//
// People log in with an API token (the same principals and roles as the
// REST API: viewer, operator, admin). A session lives in PostgreSQL
// (ui_sessions) so every replica accepts it; its cookie is HttpOnly,
// SameSite=Strict, Path=/ui and Secure except for plain HTTP to a loopback
// address. Each request re-checks the session's API token, so revoking the
// token ends its sessions. Every change is a POST form carrying the
// session's CSRF token, from the same origin; GET never changes anything.
// The server checks the role of every action, whatever the page showed.
package ui

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

// PathPrefix is where the dashboard is mounted.
const PathPrefix = "/ui"

// MaxFormSize caps every request body the dashboard reads: the largest
// legitimate form is a CA import (a certificate and a key, a few KiB) or a
// DMS policy with bootstrap CA certificates.
const MaxFormSize = 1 << 20

// Defaults of Options.
const (
	DefaultSessionTTL         = 12 * time.Hour
	DefaultSessionMaxLifetime = 7 * 24 * time.Hour
	// DefaultOnlineWindow matches the API: a DMS is online when its last
	// heartbeat (every 30 s by default) is more recent than this.
	DefaultOnlineWindow = 2 * time.Minute
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Role is what an action needs. A higher role may do what a lower one may.
type Role int

// Roles, as in the API.
const (
	RoleViewer Role = iota + 1
	RoleOperator
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleOperator:
		return "operator"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

func parseRole(s string) (Role, bool) {
	switch s {
	case "viewer":
		return RoleViewer, true
	case "operator":
		return RoleOperator, true
	case "admin":
		return RoleAdmin, true
	}
	return 0, false
}

// Options configure the dashboard. The zero value is usable.
type Options struct {
	Log *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// SessionTTL is how long a session lives without being used (it
	// slides forward with each request). Default 12 h.
	SessionTTL time.Duration
	// SessionMaxLifetime bounds a session however much it is used.
	// Default 7 days.
	SessionMaxLifetime time.Duration
	// OnlineWindow: a DMS heard from within it is online. Default 2 min.
	OnlineWindow time.Duration
	// CRLPrefix is the path the CRL service serves <ca-id>.crl under;
	// default "/crl/".
	CRLPrefix string
	// Version is shown in the footer.
	Version string
}

// Server is the dashboard.
type Server struct {
	svc   *caservice.Service
	reg   *registry.Registry
	pool  *pgxpool.Pool
	log   *slog.Logger
	opts  Options
	pages *templates
	mux   *http.ServeMux

	clockMu sync.RWMutex
	now     func() time.Time

	audit *chainVerifier
	stats *statsCache
}

// New builds the dashboard on the CA service.
func New(svc *caservice.Service, opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.SessionMaxLifetime <= 0 {
		opts.SessionMaxLifetime = DefaultSessionMaxLifetime
	}
	if opts.OnlineWindow <= 0 {
		opts.OnlineWindow = DefaultOnlineWindow
	}
	if opts.CRLPrefix == "" {
		opts.CRLPrefix = "/crl/"
	}
	pages, err := loadTemplates()
	if err != nil {
		return nil, err
	}
	s := &Server{svc: svc, reg: svc.Reg, pool: svc.Reg.Pool(), log: opts.Log, opts: opts, pages: pages, now: opts.Now}
	s.audit = newChainVerifier(s.pool, s.log)
	s.stats = &statsCache{compute: s.computeStats, log: s.log}
	s.routes()
	return s, nil
}

// SetClock replaces the clock (tests).
func (s *Server) SetClock(now func() time.Time) {
	s.clockMu.Lock()
	s.now = now
	s.clockMu.Unlock()
}

func (s *Server) clock() time.Time {
	s.clockMu.RLock()
	defer s.clockMu.RUnlock()
	return s.now()
}

// Handler serves everything under /ui.
func (s *Server) Handler() http.Handler { return s.mux }

// handlerFunc is a page or action; an error it returns is rendered as an
// error page (see fail).
type handlerFunc func(w http.ResponseWriter, r *http.Request, sess *session) error

// routes declares every route with the role it needs. Mutating routes are
// POST only and pass the CSRF check before their handler runs.
func (s *Server) routes() {
	m := http.NewServeMux()
	s.mux = m
	static, _ := fs.Sub(staticFS, "static")
	fileServer := http.StripPrefix(PathPrefix+"/static/", http.FileServerFS(static))
	m.Handle("GET "+PathPrefix+"/static/", s.secured(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fileServer.ServeHTTP(w, r)
	})))
	m.Handle("GET "+PathPrefix+"/login", s.secured(http.HandlerFunc(s.loginPage)))
	m.Handle("POST "+PathPrefix+"/login", s.secured(http.HandlerFunc(s.login)))

	get := func(path string, role Role, h handlerFunc) {
		m.Handle("GET "+PathPrefix+path, s.secured(s.authed(role, false, h)))
	}
	post := func(path string, role Role, h handlerFunc) {
		m.Handle("POST "+PathPrefix+path, s.secured(s.authed(role, true, h)))
	}

	post("/logout", RoleViewer, s.logout)
	get("", RoleViewer, s.overview)
	get("/{$}", RoleViewer, s.overview)

	get("/cas", RoleViewer, s.casPage)
	post("/cas", RoleOperator, s.createCA) // a root needs admin: checked in the handler
	post("/cas/import", RoleAdmin, s.importCA)
	get("/cas/{id}", RoleViewer, s.caPage)
	get("/cas/{id}/chain.pem", RoleViewer, s.caChain)
	post("/cas/{id}/revoke", RoleAdmin, s.revokeCA)

	get("/dmss", RoleViewer, s.dmssPage)
	get("/dmss/new", RoleOperator, s.newDMSPage)
	post("/dmss", RoleOperator, s.createDMS)
	get("/dmss/{id}", RoleViewer, s.dmsPage)
	post("/dmss/{id}", RoleOperator, s.updateDMS)
	post("/dmss/{id}/disable", RoleOperator, s.disableDMS)

	get("/devices", RoleViewer, s.devicesPage)
	get("/devices/{id}", RoleViewer, s.devicePage)
	post("/devices/{id}/decommission", RoleOperator, s.decommission)

	get("/certificates", RoleViewer, s.certificatesPage)
	get("/certificates/{serial}", RoleViewer, s.certificatePage)
	get("/certificates/{serial}/pem", RoleViewer, s.certificateFile("pem"))
	get("/certificates/{serial}/der", RoleViewer, s.certificateFile("der"))
	post("/certificates/{serial}/revoke", RoleOperator, s.revokeCertificate)

	get("/audit", RoleOperator, s.auditPage)

	get("/subscriptions", RoleOperator, s.subscriptionsPage)
	post("/subscriptions", RoleAdmin, s.createSubscription)
	post("/subscriptions/{id}/delete", RoleAdmin, s.deleteSubscription)

	// Anything else: 405 when another method would match, else 404.
	m.Handle(PathPrefix+"/", s.secured(http.HandlerFunc(s.notFound)))
}

// secured sets the headers every dashboard response carries and turns a
// panic into a plain 500 page (the cause goes to the log, not the page).
func (s *Server) secured(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		// Inline SVG charts carry style attributes; nothing else is inline.
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		// Same-origin requests keep their Referer (the CSRF check may use
		// it); nothing leaks to other sites.
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic in dashboard handler", "path", r.URL.Path, "panic", v)
				s.renderError(w, r, nil, &httpError{Status: http.StatusInternalServerError, Message: "The control plane hit an internal error; the cause is in its log."})
			}
		}()
		h.ServeHTTP(w, r)
	})
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	// Show the navigation to someone logged in; nothing else depends on it.
	sess, _ := s.currentSession(r)
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if m == r.Method {
			continue
		}
		alt := r.Clone(r.Context())
		alt.Method = m
		if _, pattern := s.mux.Handler(alt); pattern != "" && pattern != PathPrefix+"/" {
			w.Header().Set("Allow", m)
			s.renderError(w, r, sess, &httpError{Status: http.StatusMethodNotAllowed, Message: "This address only accepts " + m + " requests."})
			return
		}
	}
	s.renderError(w, r, sess, &httpError{Status: http.StatusNotFound, Message: "There is no dashboard page at " + r.URL.Path + "."})
}

// httpError is a failure with a status and a message safe to show; Field
// names the form or query field at fault.
type httpError struct {
	Status  int
	Message string
	Field   string
}

func (e *httpError) Error() string { return e.Message }

func badField(field, msg string) error {
	return &httpError{Status: http.StatusBadRequest, Field: field, Message: msg}
}

// classify turns an error from a handler into a status and a message: service
// refusals keep their message and field; anything unexpected is a 500
// whose cause only goes to the log.
func (s *Server) classify(r *http.Request, err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	if se, ok := caservice.AsError(err); ok {
		status := map[caservice.Kind]int{
			caservice.KindInvalid:      http.StatusBadRequest,
			caservice.KindNotFound:     http.StatusNotFound,
			caservice.KindConflict:     http.StatusConflict,
			caservice.KindForbidden:    http.StatusForbidden,
			caservice.KindUnauthorized: http.StatusUnauthorized,
			caservice.KindGone:         http.StatusGone,
		}[se.Kind]
		if status == 0 {
			status = http.StatusBadRequest
		}
		return &httpError{Status: status, Message: se.Message, Field: se.Field}
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &httpError{Status: http.StatusRequestEntityTooLarge, Message: "The form is larger than 1 MiB."}
	case errors.Is(err, registry.ErrNotFound):
		return &httpError{Status: http.StatusNotFound, Message: strings.TrimPrefix(err.Error(), "registry: not found: ") + " does not exist."}
	case errors.Is(err, registry.ErrConflict):
		return &httpError{Status: http.StatusConflict, Message: "It already exists."}
	case errors.Is(err, registry.ErrBadCursor):
		return &httpError{Status: http.StatusBadRequest, Field: "cursor", Message: "The page cursor is not one this server made: start again from the first page."}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &httpError{Status: http.StatusServiceUnavailable, Message: "The request took too long or was cancelled; try again."}
	}
	s.log.Error("dashboard request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	return &httpError{Status: http.StatusInternalServerError, Message: "The control plane could not complete the request; the cause is in its log."}
}
