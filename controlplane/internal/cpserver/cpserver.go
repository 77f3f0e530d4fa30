// Package cpserver wires the control plane together from its
// configuration: database, key store, CA service, bootstrap, API server.
package cpserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-pki/outpost/controlplane/internal/api"
	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/cpconfig"
	"github.com/outpost-pki/outpost/controlplane/internal/db"
	"github.com/outpost-pki/outpost/controlplane/internal/lifecycle"
	"github.com/outpost-pki/outpost/controlplane/internal/ocspresponder"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/controlplane/internal/ui"
	"github.com/outpost-pki/outpost/internal/buildinfo"
	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/keystore/filekeys"
	"github.com/outpost-pki/outpost/internal/keystore/pkcs11keys"
	"github.com/outpost-pki/outpost/internal/tlspolicy"
)

// App is a running control plane (without its listener).
type App struct {
	Config *cpconfig.Config
	Pool   *pgxpool.Pool
	Keys   keystore.Store
	Svc    *caservice.Service
	API    *api.Server
	// UI is the admin dashboard, served under /ui.
	UI *ui.Server
	// Bootstrapped is true when this process created the bootstrap CAs.
	Bootstrapped bool
	OCSP         *ocspresponder.Responder
	// CRL issues and serves CRLs once AttachCRL was called (the binary
	// attaches controlplane/internal/crl; this package does not import it,
	// so that the crl tests can start a control plane).
	CRL     CRLService
	Sweeper *lifecycle.Sweeper
	// Jobs are more background loops RunBackground starts (the binary
	// adds the notification dispatcher here; this package does not import
	// it, so that its tests can start a control plane).
	Jobs    []func(ctx context.Context)
	log     *slog.Logger
	handler http.Handler
	mux     *http.ServeMux
}

// OpenKeystore opens the configured key store.
func OpenKeystore(cfg *cpconfig.Config) (keystore.Store, error) {
	switch cfg.Keystore.Backend {
	case "pkcs11":
		pin, err := cfg.Keystore.PKCS11.PIN.Resolve("keystore.pkcs11.pin")
		if err != nil {
			return nil, err
		}
		return pkcs11keys.Open(pkcs11keys.Config{Module: cfg.Keystore.PKCS11.Module, TokenLabel: cfg.Keystore.PKCS11.TokenLabel, PIN: pin})
	default:
		pass, err := cfg.Keystore.File.Passphrase.Resolve("keystore.file.passphrase")
		if err != nil {
			return nil, err
		}
		return filekeys.Open(filekeys.Config{Dir: cfg.Keystore.File.Dir, Passphrase: pass})
	}
}

// Build opens everything and bootstraps. Close the App when done.
func Build(ctx context.Context, cfg *cpconfig.Config, log *slog.Logger) (*App, error) {
	pool, err := db.Open(ctx, cfg.Database.URL)
	if err != nil {
		return nil, err
	}
	keys, err := OpenKeystore(cfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("opening the key store: %w", err)
	}
	alg, err := keystore.ParseAlgorithm(cfg.Keystore.KeyAlgorithm)
	if err != nil {
		pool.Close()
		keys.Close()
		return nil, err
	}
	svc := &caservice.Service{Reg: registry.New(pool), Keys: keys, Log: log, KeyAlgorithm: alg, PublicURL: cfg.PublicURL}
	app := &App{Config: cfg, Pool: pool, Keys: keys, Svc: svc, log: log}
	app.OCSP = &ocspresponder.Responder{Reg: svc.Reg, Keys: keys, Validity: cfg.OCSP.ResponseValidity.D(), Log: log}

	thresholds := map[string]time.Duration{}
	for k, v := range cfg.Lifecycle.ProfileThresholds {
		thresholds[k] = v.D()
	}
	app.Sweeper = &lifecycle.Sweeper{Pool: pool, DefaultThreshold: cfg.Lifecycle.ExpiryThreshold.D(), ProfileThresholds: thresholds, Log: log}
	svc.OnRevoked = app.onRevoked
	app.Bootstrapped, err = svc.Bootstrap(ctx, caservice.BootstrapConfig{
		Organization: cfg.Bootstrap.Organization, RootCommonName: cfg.Bootstrap.RootCommonName,
		IssuingCommonName: cfg.Bootstrap.IssuingCommonName, DMSManagerCommonName: cfg.Bootstrap.DMSManagerCommonName,
	})
	if err != nil {
		app.Close()
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if cfg.AdminToken.IsSet() {
		tok, err := cfg.AdminToken.Resolve("admin_token")
		if err != nil {
			app.Close()
			return nil, err
		}
		if err := svc.EnsureAdminToken(ctx, tok.Reveal()); err != nil {
			app.Close()
			return nil, err
		}
	}
	roots := x509.NewCertPool()
	if mgr, err := svc.Reg.GetCAByRole(ctx, "dms_manager"); err == nil {
		if c, err := x509.ParseCertificate(mgr.CertDER); err == nil {
			roots.AddCert(c)
		}
	}
	var rate float64 // a Config built in code without defaults: unlimited
	if cfg.API.RatePerIdentity != nil {
		rate = *cfg.API.RatePerIdentity
	}
	app.API = api.New(svc, api.Options{Log: log, DMSRoots: roots, RatePerIdentity: rate, BurstPerIdentity: cfg.API.BurstPerIdentity})
	app.UI, err = ui.New(svc, ui.Options{Log: log, Version: buildinfo.Version})
	if err != nil {
		app.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(ui.PathPrefix, app.UI.Handler())
	mux.Handle(ui.PathPrefix+"/", app.UI.Handler())
	mux.Handle(ocspresponder.PathPrefix, app.OCSP.Handler())
	mux.Handle(ocspresponder.PathPrefix+"/", app.OCSP.Handler())
	mux.Handle("/", app.API.Handler())
	app.handler = mux
	app.mux = mux
	return app, nil
}

// CRLService is what the control plane needs of the CRL service.
type CRLService interface {
	// OnRevoked issues fresh (delta) CRLs of the CAs after a revocation.
	OnRevoked(ctx context.Context, caIDs ...uuid.UUID) error
	// Handler serves CRLs under prefix.
	Handler() http.Handler
	// Run refreshes CRLs before their nextUpdate until ctx ends.
	Run(ctx context.Context, every time.Duration)
	// SetBaseURL sets the URL prefix CRLs are published under.
	SetBaseURL(u string)
}

// AttachCRL mounts the CRL service under prefix and hooks it to
// revocations. Call it before serving.
func (a *App) AttachCRL(c CRLService, prefix string) {
	c.SetBaseURL(a.Svc.PublicURL)
	a.CRL = c
	a.mux.Handle(prefix, c.Handler())
}

// Health is the watchdog's check: the database answers.
func (a *App) Health(ctx context.Context) error {
	if err := a.Svc.Reg.Pool().Ping(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	return nil
}

// Handler serves the API, OCSP, CRLs and the dashboard (/ui).
func (a *App) Handler() http.Handler { return a.handler }

// SetPublicURL changes the base URL of OCSP and CRLs (tests that learn
// their listener's address after Build).
func (a *App) SetPublicURL(u string) {
	a.Svc.PublicURL = u
	if a.CRL != nil {
		a.CRL.SetBaseURL(u)
	}
}

// onRevoked runs after a revocation committed: this replica's OCSP cache
// forgets the serials (the shared pre-signed rows went in the revoking
// transaction), and the CAs' delta CRLs are issued at once. A failure is
// logged, not returned: the revocation stands, and the CRL refresher
// catches up within a minute.
func (a *App) onRevoked(ctx context.Context, cas []uuid.UUID, serials []string) {
	for _, ca := range cas {
		a.OCSP.Forget(ca, serials...)
	}
	if a.CRL == nil || a.Svc.PublicURL == "" {
		return
	}
	if err := a.CRL.OnRevoked(context.WithoutCancel(ctx), cas...); err != nil {
		a.log.Error("issuing delta CRLs after a revocation", "err", err)
	}
}

// RunBackground runs the periodic jobs (lifecycle sweeps, OCSP refresh,
// notification dispatch)
// until ctx ends. Every replica runs them; advisory locks make one do
// the work.
func (a *App) RunBackground(ctx context.Context) {
	go a.Sweeper.Run(ctx, a.Config.Lifecycle.SweepInterval.D())
	go a.OCSP.Run(ctx, time.Minute)
	if a.CRL != nil && a.Svc.PublicURL != "" {
		go a.CRL.Run(ctx, time.Minute)
	}
	for _, job := range a.Jobs {
		go job(ctx)
	}
}

// Close releases the pool and the key store.
func (a *App) Close() {
	a.Pool.Close()
	a.Keys.Close()
}

// Serve listens on the configured address until ctx ends, then shuts
// down gracefully. ready is called with the bound address once serving.
func (a *App) Serve(ctx context.Context, ready func(addr string)) error {
	ln, err := net.Listen("tcp", a.Config.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", a.Config.Listen, err)
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	if a.Config.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(a.Config.TLS.CertFile, a.Config.TLS.KeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("loading the TLS certificate: %w", err)
		}
		// Client certificates (DMS identities) are verified against the DMS
		// manager CA only.
		srv.TLSConfig = tlspolicy.Server(&tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: a.API.ClientCAs()})
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	bctx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	syncLink, err := a.StartSync(bctx)
	if err != nil {
		ln.Close()
		return err
	}
	if syncLink != nil {
		defer syncLink.Stop()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	a.RunBackground(bctx)
	a.log.Info("control plane serving", "addr", ln.Addr().String(), "tls", a.Config.TLS.CertFile != "")
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
