package cpserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/broker"
	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/syncsvc"
	"github.com/outpost-pki/outpost/internal/tlspolicy"
)

// ControlPlaneClientName is the common name of the sync consumer's client
// certificate: the embedded broker lets it read every DMS's up topic
// through the shared subscription; an external broker's ACL names it.
const ControlPlaneClientName = "outpost-controlplane"

// Key store names of the sync link's service keys.
const (
	brokerKeyName = "sync-broker-tls"
	clientKeyName = "sync-client-tls"
)

// serviceCertValidity is the lifetime of the broker's and the consumer's
// certificates; they are renewed when two thirds of it has passed.
const serviceCertValidity = 30 * 24 * time.Hour

// Sync is the running sync link: the embedded broker (nil with an
// external broker) and this replica's consumer.
type Sync struct {
	Broker   *broker.Broker
	Consumer *syncsvc.Consumer
	// BrokerURL is where the consumer connects (mqtts://...).
	BrokerURL string
	stop      func()
}

// Stop stops the consumer, then the broker (its sessions stay on disk).
func (s *Sync) Stop() { s.stop() }

// StartSync starts the embedded broker (unless an external broker is
// configured) and this replica's sync consumer. They run until Stop or
// until ctx ends. It returns nil, nil when the sync link is switched off
// (no embedded broker and no external one).
func (a *App) StartSync(ctx context.Context) (*Sync, error) {
	cfg := a.Config.Sync
	if !a.Config.EmbeddedBrokerOn() && cfg.ExternalBrokerURL == "" {
		a.log.Warn("sync: no broker configured (sync.broker.enabled is false and sync.external_broker_url is empty): agents cannot sync")
		return nil, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	fail := func(err error) (*Sync, error) {
		cancel()
		wg.Wait()
		return nil, err
	}
	clientCert, err := a.serviceCert(ctx, &wg, clientKeyName, ControlPlaneClientName, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return fail(err)
	}
	s := &Sync{}
	tlsCfg := tlspolicy.Client(&tls.Config{GetClientCertificate: clientCert.client})
	applier := &syncsvc.Applier{Reg: a.Svc.Reg, Svc: a.Svc, Log: a.log, OCSP: a.OCSP}
	if a.Config.EmbeddedBrokerOn() {
		pool, err := a.dmsManagerPool(ctx)
		if err != nil {
			return fail(err)
		}
		serverCert, err := a.serviceCert(ctx, &wg, brokerKeyName, "outpost-broker", a.brokerHostnames(), x509.ExtKeyUsageServerAuth)
		if err != nil {
			return fail(err)
		}
		b, err := broker.New(broker.Config{
			Addr: cfg.Broker.Listen, GetCertificate: serverCert.server,
			ClientCAs: pool, ControlPlaneCAs: pool, ControlPlaneNames: []string{ControlPlaneClientName},
			Authorize: a.authorizeDMS, DataDir: cfg.Broker.DataDir, MaxSessionExpiry: cfg.Broker.MaxSessionExpiry.D(),
			Log: a.log.With("component", "broker"),
		})
		if err != nil {
			return fail(err)
		}
		if err := b.Start(); err != nil {
			return fail(err)
		}
		s.Broker = b
		a.Svc.OnDMSDisabled = func(id uuid.UUID) { b.Disconnect(id.String()) }
		applier.OnIdentityReplaced = func(id uuid.UUID) { b.Disconnect(id.String()) }
		host, port, _ := net.SplitHostPort(b.Addr())
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		s.BrokerURL = "mqtts://" + net.JoinHostPort(host, port)
		tlsCfg.RootCAs = pool
		tlsCfg.ServerName = host
	} else {
		s.BrokerURL = cfg.ExternalBrokerURL
		u, _ := url.Parse(cfg.ExternalBrokerURL)
		tlsCfg.ServerName = u.Hostname()
		if cfg.ExternalBrokerCAFile != "" {
			pem, err := os.ReadFile(cfg.ExternalBrokerCAFile)
			if err != nil {
				return fail(fmt.Errorf("sync.external_broker_ca_file: %w", err))
			}
			tlsCfg.RootCAs = x509.NewCertPool()
			if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
				return fail(errors.New("sync.external_broker_ca_file: no PEM certificate in it"))
			}
		}
	}
	s.Consumer = &syncsvc.Consumer{Applier: applier, BrokerURL: s.BrokerURL, TLS: tlsCfg, ClientID: cfg.ClientID, Log: a.log.With("component", "sync")}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.Consumer.Run(ctx); err != nil {
			a.log.Error("sync consumer stopped", "err", err)
		}
	}()
	a.log.Info("sync link running", "broker", s.BrokerURL, "embedded", s.Broker != nil, "client_id", cfg.ClientID)
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			if s.Broker != nil {
				if err := s.Broker.Close(); err != nil {
					a.log.Error("closing the broker", "err", err)
				}
			}
		})
	}
	return s, nil
}

// authorizeDMS is the embedded broker's connect check.
func (a *App) authorizeDMS(ctx context.Context, dmsID string, cert *x509.Certificate) error {
	id, err := uuid.Parse(dmsID)
	if err != nil {
		return fmt.Errorf("%w: not a DMS id", caservice.ErrIdentityRefused)
	}
	err = a.Svc.CheckDMSIdentity(ctx, id, cert)
	switch {
	case errors.Is(err, caservice.ErrDMSDisabled):
		return fmt.Errorf("%w: %v", broker.ErrBanned, err)
	case err != nil && !errors.Is(err, caservice.ErrIdentityRefused):
		return fmt.Errorf("%w: %v", broker.ErrUnavailable, err)
	}
	return err
}

func (a *App) dmsManagerPool(ctx context.Context) (*x509.CertPool, error) {
	mgr, err := a.Svc.Reg.GetCAByRole(ctx, "dms_manager")
	if err != nil {
		return nil, fmt.Errorf("sync: the DMS manager CA: %w", err)
	}
	c, err := x509.ParseCertificate(mgr.CertDER)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return pool, nil
}

// brokerHostnames lists the names in the broker's certificate.
func (a *App) brokerHostnames() []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	if u, err := url.Parse(a.Config.PublicURL); err == nil && u.Hostname() != "" {
		names = append(names, u.Hostname())
	}
	if host, _, err := net.SplitHostPort(a.Config.Sync.Broker.Listen); err == nil && host != "" && !net.ParseIP(host).IsUnspecified() {
		names = append(names, host)
	}
	names = append(names, a.Config.Sync.Broker.Hostnames...)
	seen := map[string]bool{}
	out := names[:0]
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// rotatingCert is a service certificate renewed in the background when
// two thirds of its lifetime has passed.
type rotatingCert struct {
	cur atomic.Pointer[tls.Certificate]
}

func (r *rotatingCert) server(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}
func (r *rotatingCert) client(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// serviceCert issues a service certificate now and keeps renewing it
// until ctx ends.
func (a *App) serviceCert(ctx context.Context, wg *sync.WaitGroup, keyName, cn string, hosts []string, usage x509.ExtKeyUsage) (*rotatingCert, error) {
	issue := func() (*tls.Certificate, error) {
		return a.Svc.ServiceCertificate(ctx, keyName, cn, hosts, usage, serviceCertValidity)
	}
	c, err := issue()
	if err != nil {
		return nil, fmt.Errorf("sync: issuing the %s certificate: %w", cn, err)
	}
	r := &rotatingCert{}
	r.cur.Store(c)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			leaf := r.cur.Load().Leaf
			renewAt := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
			wait := max(time.Until(renewAt), time.Minute)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			c, err := issue()
			if err != nil {
				a.log.Error("sync: renewing a service certificate; retrying in a minute", "common_name", cn, "err", err)
				continue
			}
			r.cur.Store(c)
			a.log.Info("sync: renewed a service certificate", "common_name", cn, "not_after", c.Leaf.NotAfter)
		}
	}()
	return r, nil
}
