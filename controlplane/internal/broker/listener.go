package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tlsListener is a mochi listener for TLS connections that (unlike mochi's
// TCP listener) bounds the time to the CONNECT packet, identifies the peer
// certificate during the handshake, survives transient Accept errors and
// closes half-open connections on Close.
type tlsListener struct {
	id       string
	addr     string
	base     *tls.Config // per-connection settings, cloned for each handshake
	outer    *tls.Config // what tls.Server gets: picks base's clone, owns the session ticket keys
	identify func(certs []*x509.Certificate) (identity, error)
	log      *slog.Logger
	// connectTimeout is Config.ConnectTimeout.
	connectTimeout time.Duration

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]*peerConn // by the accepted (raw) connection
	closed bool
	end    atomic.Bool
}

func newTLSListener(id, addr string, cfg *tls.Config, identify func([]*x509.Certificate) (identity, error), log *slog.Logger) *tlsListener {
	l := &tlsListener{id: id, addr: addr, base: cfg, identify: identify, log: log, conns: make(map[net.Conn]*peerConn), connectTimeout: DefaultConnectTimeout}
	// Session tickets are encrypted with keys of the config given to
	// tls.Server; sharing one outer config (rather than one clone per
	// connection) lets clients resume across connections.
	l.outer = cfg.Clone()
	l.outer.GetConfigForClient = l.configForClient
	return l
}

// configForClient returns the handshake configuration of one connection:
// base, with a VerifyConnection that records the peer's identity in its
// peerConn.
func (l *tlsListener) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	l.mu.Lock()
	pc := l.conns[hello.Conn]
	l.mu.Unlock()
	if pc == nil {
		return nil, errors.New("connection closed")
	}
	remote := hello.Conn.RemoteAddr().String()
	cfg := l.base.Clone()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		id, err := l.identify(cs.PeerCertificates)
		if err != nil {
			l.log.Warn("refusing mqtt client certificate", "remote_addr", remote, "error", err)
			return err
		}
		pc.id = id
		pc.verified = true
		return nil
	}
	return cfg, nil
}

// ID implements listeners.Listener.
func (l *tlsListener) ID() string { return l.id }

// Protocol implements listeners.Listener.
func (l *tlsListener) Protocol() string { return "mqtts" }

// Address returns the bound address once Init has run, else the configured one.
func (l *tlsListener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Init binds the address.
func (l *tlsListener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	return nil
}

// Serve accepts connections until Close.
func (l *tlsListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	ln := l.ln
	l.mu.Unlock()
	var delay time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if l.end.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as
			// net/http does instead of giving up.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("mqtt accept failed", "error", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		// Covers the handshake, the CONNECT packet and Authorize; mochi
		// replaces it with the keep alive deadline once connected.
		_ = raw.SetDeadline(time.Now().Add(l.connectTimeout))
		pc := l.track(raw)
		if pc == nil {
			_ = raw.Close()
			return
		}
		go func() {
			if err := establish(l.id, pc); err != nil {
				l.log.Debug("mqtt connection ended", "remote_addr", raw.RemoteAddr().String(), "error", err)
			}
		}()
	}
}

// track wraps raw in a peerConn whose handshake records the peer's
// identity; nil after Close.
func (l *tlsListener) track(raw net.Conn) *peerConn {
	pc := &peerConn{Conn: tls.Server(raw, l.outer), raw: raw, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.conns[raw] = pc
	return pc
}

func (l *tlsListener) untrack(pc *peerConn) {
	l.mu.Lock()
	delete(l.conns, pc.raw)
	l.mu.Unlock()
}

// Close stops accepting, disconnects the clients through mochi and closes
// connections that had not finished connecting.
func (l *tlsListener) Close(closeClients listeners.CloseFn) {
	if l.end.Swap(true) {
		return
	}
	l.mu.Lock()
	l.closed = true
	ln := l.ln
	l.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	closeClients(l.id)
	l.mu.Lock()
	pending := make([]*peerConn, 0, len(l.conns))
	for _, pc := range l.conns {
		pending = append(pending, pc)
	}
	l.mu.Unlock()
	for _, pc := range pending {
		_ = pc.Close()
	}
}

// peerConn is a server-side TLS connection with what the broker learnt
// about its peer. The handshake (run by the goroutine that first reads,
// mochi's connection goroutine) sets id and verified; the auth hook sets
// the rest from the same goroutine before the session exists.
type peerConn struct {
	*tls.Conn
	raw net.Conn
	l   *tlsListener

	id       identity
	verified bool

	authenticated atomic.Bool // OnConnect accepted the CONNECT
	kickSeq       uint64      // kickLog sequence before Authorize

	mu     sync.Mutex
	expiry *time.Timer // disconnects when the certificate expires
	closed bool
}

// setExpiry arranges for f to run at t unless the connection closes first.
func (c *peerConn) setExpiry(t time.Time, f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.expiry = time.AfterFunc(time.Until(t), f)
}

// Close closes the connection (mochi closes every connection it was given
// through this method) and stops the expiry timer.
func (c *peerConn) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.mu.Unlock()
	c.l.untrack(c)
	return c.Conn.Close()
}

var _ listeners.Listener = (*tlsListener)(nil)
