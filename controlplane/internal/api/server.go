// Package api is the control plane's REST API under /api/v1 (gin). Every
// route is declared once in the route table with the role it needs; the
// router, the authorization check, the OpenAPI document and the tests all
// read that table, so none of them can drift from the others. Access is
// denied by default.
package api

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/ratelimit"
)

// Role is what a route requires.
type Role int

// Roles, ordered: a higher role may do what a lower one may.
const (
	// RolePublic needs no credential.
	RolePublic Role = iota
	// RoleDMS is a gateway agent authenticated by its DMS certificate
	// (mutual TLS); it reaches only routes marked for DMSs.
	RoleDMS
	RoleViewer
	RoleOperator
	RoleAdmin
)

func (r Role) String() string {
	return [...]string{"public", "dms", "viewer", "operator", "admin"}[r]
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

// Route is one entry of the route table.
type Route struct {
	Method, Path string // gin syntax, e.g. /api/v1/cas/:id
	Role         Role
	// DMSAllowed lets DMS identities through as well.
	DMSAllowed bool
	Summary    string
	Request    any // body type, for the OpenAPI document
	Response   any // success body type
	Status     int // success status, default 200
	handler    gin.HandlerFunc
}

// Server is the API.
type Server struct {
	svc    *caservice.Service
	reg    *registry.Registry
	log    *slog.Logger
	now    func() time.Time
	routes []Route
	engine *gin.Engine
	// dmsRoots verifies DMS client certificates (the DMS manager CA).
	dmsRoots *x509.CertPool
	// limiter bounds the requests of each authenticated identity (API
	// token or DMS certificate), per replica.
	limiter *ratelimit.Limiter

	openapiOnce sync.Once
	openapiDoc  map[string]any
}

// Options configure the server.
type Options struct {
	Log *slog.Logger
	Now func() time.Time
	// DMSRoots verifies DMS identity certificates presented over mutual
	// TLS; nil disables DMS authentication.
	DMSRoots *x509.CertPool
	// RatePerIdentity is how many requests per second each authenticated
	// identity may make on this replica, in bursts of BurstPerIdentity;
	// beyond that the API answers 429 with Retry-After. 0: unlimited.
	RatePerIdentity  float64
	BurstPerIdentity int
}

// maxLimitedIdentities bounds the limiter's memory (least recently seen
// identities are forgotten first).
const maxLimitedIdentities = 100_000

// New builds the API.
func New(svc *caservice.Service, opts Options) *Server {
	gin.SetMode(gin.ReleaseMode)
	s := &Server{svc: svc, reg: svc.Reg, log: opts.Log, now: opts.Now, dmsRoots: opts.DMSRoots,
		limiter: ratelimit.New(opts.RatePerIdentity, opts.BurstPerIdentity, maxLimitedIdentities)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.routes = append(s.routeTable(), s.subscriptionRoutes()...)
	e := gin.New()
	e.Use(gin.CustomRecoveryWithWriter(nil, func(c *gin.Context, err any) {
		s.log.Error("panic in handler", "path", c.FullPath(), "panic", err)
		problem(c, http.StatusInternalServerError, "internal", "the control plane hit an internal error; the cause is in its log", "")
	}))
	e.Use(textParams)
	e.HandleMethodNotAllowed = true
	e.NoRoute(func(c *gin.Context) {
		problem(c, http.StatusNotFound, "not-found", "no such route: see /api/v1/openapi.json", "")
	})
	e.NoMethod(func(c *gin.Context) {
		problem(c, http.StatusMethodNotAllowed, "method-not-allowed", "this method is not allowed on this route", "")
	})
	for _, r := range s.routes {
		e.Handle(r.Method, r.Path, s.authorize(r), r.handler)
	}
	e.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok\n") })
	e.GET("/readyz", s.readyz)
	s.engine = e
	return s
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.engine }

// Routes returns the route table.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// GinRoutes returns what the router actually serves.
func (s *Server) GinRoutes() gin.RoutesInfo { return s.engine.Routes() }

func (s *Server) readyz(c *gin.Context) {
	if err := s.reg.Pool().Ping(c); err != nil {
		problem(c, http.StatusServiceUnavailable, "not-ready", "the database is not reachable", "")
		return
	}
	c.String(http.StatusOK, "ready\n")
}

// caller is the authenticated principal of a request.
type caller struct {
	name    string
	role    Role
	tokenID string
	dmsID   uuid.UUID
}

const callerKey = "outpost.caller"

func callerOf(c *gin.Context) caller {
	v, _ := c.Get(callerKey)
	cl, _ := v.(caller)
	return cl
}

func actorOf(c *gin.Context) caservice.Actor { return caservice.Actor(callerOf(c).name) }

// authorize authenticates the caller and checks the route's role.
func (s *Server) authorize(r Route) gin.HandlerFunc {
	return func(c *gin.Context) {
		if r.Role == RolePublic {
			return
		}
		cl, err := s.authenticate(c)
		if err != nil {
			c.Header("WWW-Authenticate", `Bearer realm="outpost"`)
			problem(c, http.StatusUnauthorized, "unauthenticated", err.Error(), "")
			return
		}
		if cl.role == RoleDMS {
			if !r.DMSAllowed {
				problem(c, http.StatusForbidden, "forbidden-role", "a DMS identity cannot use this route", "")
				return
			}
		} else if cl.role < r.Role {
			problem(c, http.StatusForbidden, "forbidden-role", "this route needs the "+r.Role.String()+" role; you are "+cl.role.String(), "")
			return
		}
		key := "token:" + cl.tokenID
		if cl.role == RoleDMS {
			key = "dms:" + cl.dmsID.String()
		}
		if ok, wait := s.limiter.Allow(key); !ok {
			secs := int(math.Ceil(wait.Seconds()))
			c.Header("Retry-After", strconv.Itoa(secs))
			problem(c, http.StatusTooManyRequests, "rate-limited", fmt.Sprintf("too many requests for this identity; retry in %d s", secs), "")
			return
		}
		c.Set(callerKey, cl)
	}
}

var errNoCredential = errors.New("send an API token as 'Authorization: Bearer <token>' (or a DMS certificate over mutual TLS)")

func (s *Server) authenticate(c *gin.Context) (caller, error) {
	h := c.GetHeader("Authorization")
	if h == "" {
		return s.authenticateDMS(c)
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" || len(tok) > 256 {
		return caller{}, errors.New("the Authorization header must be 'Bearer <token>'")
	}
	t, p, err := s.reg.TokenByHash(c, caservice.HashSecret(tok))
	if errors.Is(err, registry.ErrNotFound) {
		return caller{}, errors.New("the token is not valid")
	}
	if err != nil {
		s.log.Error("looking up a token", "err", err)
		return caller{}, errors.New("the token could not be checked")
	}
	now := s.now()
	if t.RevokedAt != nil {
		return caller{}, errors.New("the token was revoked")
	}
	if t.ExpiresAt != nil && !now.Before(*t.ExpiresAt) {
		return caller{}, errors.New("the token has expired")
	}
	role, ok := parseRole(p.Role)
	if !ok {
		return caller{}, errors.New("the token's principal has no valid role")
	}
	return caller{name: p.Name, role: role, tokenID: t.ID.String()}, nil
}

// authenticateDMS accepts a verified DMS client certificate whose common
// name is the id of an active DMS.
func (s *Server) authenticateDMS(c *gin.Context) (caller, error) {
	tls := c.Request.TLS
	if s.dmsRoots == nil || tls == nil || len(tls.PeerCertificates) == 0 {
		return caller{}, errNoCredential
	}
	leaf := tls.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, ic := range tls.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.dmsRoots, Intermediates: inter, CurrentTime: s.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return caller{}, errors.New("the client certificate is not a DMS identity")
	}
	id, err := uuid.Parse(leaf.Subject.CommonName)
	if err != nil {
		return caller{}, errors.New("the client certificate is not a DMS identity")
	}
	if err := s.svc.CheckDMSIdentity(c, id, leaf); err != nil {
		if errors.Is(err, caservice.ErrIdentityRefused) {
			return caller{}, err
		}
		s.log.Error("checking a DMS identity", "dms_id", id, "err", err)
		return caller{}, errors.New("the DMS identity could not be checked; try again")
	}
	return caller{name: "dms:" + id.String(), role: RoleDMS, dmsID: id}, nil
}

// SetClock replaces the clock used to check token expiry and DMS
// certificates (tests).
func (s *Server) SetClock(now func() time.Time) { s.now = now }

// ClientCAs is the pool a TLS listener in front of the API must use to
// request and verify DMS client certificates (the DMS manager CA).
func (s *Server) ClientCAs() *x509.CertPool { return s.dmsRoots }
