package agent

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/outpost-pki/outpost/internal/sdnotify"
)

// Health is the check behind systemd's watchdog (and /readyz): the store
// answers, the key store signs with the identity key (a TPM or HSM that
// stopped answering fails it, within ctx), and the EST server, once it
// listens, accepts connections. It returns the first failure.
func (a *Agent) Health(ctx context.Context) error {
	if _, err := a.store.Depth(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	digest := sha256.Sum256([]byte("outpost-agent health check"))
	key := a.identity().Key
	done := make(chan error, 1)
	go func() {
		_, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("key store: signing with the identity key: %w", err)
		}
	case <-ctx.Done():
		return errors.New("key store: signing with the identity key did not finish in time")
	}
	if addr, ok := a.estAddr.Load().(string); ok && addr != "" {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("est server: %w", err)
		}
		c.Close()
	}
	return nil
}

// notifySystemd tells systemd the agent serves (READY=1: the admin
// endpoint and the sync link run; the EST server follows once it has its
// certificate, which may need the uplink) and starts the watchdog pings.
// Outside systemd it does nothing.
func (a *Agent) notifySystemd(ctx context.Context) {
	if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		a.log.Warn("telling systemd the agent is ready", "err", err)
	}
	go sdnotify.RunWatchdog(ctx, a.Health, a.log)
}
