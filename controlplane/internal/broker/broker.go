package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"

	"github.com/outpost-pki/outpost/internal/tlspolicy"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// Defaults for the zero values of Config.
const (
	// DefaultAddr is the agents' listener address.
	DefaultAddr = ":8883"
	// DefaultMaxPacketSize is one MiB of payload plus 16 KiB for the
	// fixed header, topic and properties (user properties, correlation
	// data) of a sync message.
	DefaultMaxPacketSize = 1<<20 + 16<<10
	// DefaultMaxSessionExpiry caps the session expiry interval clients ask
	// for: how long a disconnected DMS keeps its subscription and queued
	// messages.
	DefaultMaxSessionExpiry = 7 * 24 * time.Hour
	// DefaultConnectTimeout bounds the TLS handshake, the CONNECT packet
	// and the Authorize call of a new connection, so idle or slow
	// (slowloris) sockets cannot pile up.
	DefaultConnectTimeout = 30 * time.Second
)

const (
	// authorizeTimeout bounds one Config.Authorize call.
	authorizeTimeout = 10 * time.Second
	// defaultKeepAlive replaces a client's keep alive of 0 (none), and
	// maxKeepAlive caps larger ones; both are sent back in the CONNACK
	// (MQTT 5 server keep alive), so dead connections are noticed.
	defaultKeepAlive = 60
	maxKeepAlive     = 15 * 60
	// listenerID names the agents' listener inside mochi (and in stored
	// sessions).
	listenerID = "outpost-agents"
	// dbFile is the bbolt file under DataDir.
	dbFile = "mqtt.db"
	// dbOpenTimeout is how long Start waits for another process to release
	// the bbolt file lock.
	dbOpenTimeout = 5 * time.Second
)

// ErrUnavailable, wrapped in an error returned by Config.Authorize, means
// the decision could not be made (registry unreachable, ...): the client
// gets CONNACK 0x88 "server unavailable" and should retry, instead of 0x87
// "not authorized". A deadline exceeded is treated the same way.
var ErrUnavailable = errors.New("broker: authorization unavailable")

// ErrBanned, wrapped in an error returned by Config.Authorize, means the
// DMS exists but an operator disabled it: the client gets CONNACK 0x8A
// "banned" instead of 0x87 "not authorized", so the agent can tell "you
// have been disabled" from "I do not know this certificate".
var ErrBanned = errors.New("broker: dms disabled")

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("broker: closed")

// Config configures a Broker. Fields marked required have no default.
type Config struct {
	// Addr is the TLS listener for agents and control plane clients.
	// Default DefaultAddr (":8883"); use "127.0.0.1:0" in tests and read
	// the port back with Broker.Addr.
	Addr string
	// TLSCert is the broker's server certificate (required unless
	// GetCertificate is set).
	TLSCert tls.Certificate
	// GetCertificate, if set, returns the server certificate for each
	// handshake instead of TLSCert (a certificate that is rotated while
	// the broker runs).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// ClientCAs verifies DMS certificates: the DMS manager CA (required).
	ClientCAs *x509.CertPool
	// ControlPlaneCAs verifies the control plane's client certificates.
	// It may be the same pool as ClientCAs. Required when
	// ControlPlaneNames is not empty.
	ControlPlaneCAs *x509.CertPool
	// ControlPlaneNames are the subject common names of the control plane
	// client certificates: they may use the shared up subscription and
	// publish on any down topic. None may be a canonical UUID, and such a
	// client's MQTT client id may not be one either (ids that are belong
	// to DMSs).
	ControlPlaneNames []string
	// Authorize is called on every DMS connect, after the certificate and
	// client id checks, with the DMS id (the certificate's common name)
	// and the verified leaf certificate. It returns an error for unknown,
	// disabled or revoked DMSs, wrapping ErrBanned for a disabled one and
	// ErrUnavailable when it cannot tell. It must be safe for concurrent use, return when ctx ends
	// (10 s per call, and Close cancels it) and should be fast: after a
	// broker restart every DMS reconnects at once. Required.
	Authorize func(ctx context.Context, dmsID string, cert *x509.Certificate) error
	// DataDir holds the broker's bbolt file (sessions, queued QoS 1
	// messages, retained messages). Required; created with mode 0700.
	// One broker at a time per directory.
	DataDir string
	// MaxPacketSize is the largest MQTT packet accepted, advertised in
	// the CONNACK. Default DefaultMaxPacketSize.
	MaxPacketSize uint32
	// MaxSessionExpiry caps the session expiry clients ask for, and is
	// also how long a queued message is kept. Default
	// DefaultMaxSessionExpiry (7 days).
	MaxSessionExpiry time.Duration
	// ConnectTimeout is how long a new connection has for its TLS
	// handshake, its CONNECT packet and Authorize, however slowly it
	// sends; past it the connection is closed. Default
	// DefaultConnectTimeout (30 s).
	ConnectTimeout time.Duration
	// Log receives the broker's and mochi's logs. Default: discarded.
	Log *slog.Logger
}

// Validate reports the first invalid field of c, with defaults applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.GetCertificate == nil && (len(c.TLSCert.Certificate) == 0 || c.TLSCert.PrivateKey == nil):
		return errors.New("broker: config: TLSCert needs a certificate and a private key")
	case c.ClientCAs == nil:
		return errors.New("broker: config: ClientCAs is required (the DMS manager CA)")
	case len(c.ControlPlaneNames) > 0 && c.ControlPlaneCAs == nil:
		return errors.New("broker: config: ControlPlaneCAs is required with ControlPlaneNames")
	case c.Authorize == nil:
		return errors.New("broker: config: Authorize is required")
	case c.DataDir == "":
		return errors.New("broker: config: DataDir is required")
	case c.MaxSessionExpiry < time.Second || c.MaxSessionExpiry > math.MaxUint32*time.Second:
		return fmt.Errorf("broker: config: MaxSessionExpiry %v is out of range [1s, %d s]", c.MaxSessionExpiry, uint32(math.MaxUint32))
	case c.ConnectTimeout < 0:
		return fmt.Errorf("broker: config: ConnectTimeout %v is negative", c.ConnectTimeout)
	case c.MaxPacketSize < 1024:
		return fmt.Errorf("broker: config: MaxPacketSize %d is below 1024 bytes", c.MaxPacketSize)
	}
	for _, n := range c.ControlPlaneNames {
		if n == "" {
			return errors.New("broker: config: empty name in ControlPlaneNames")
		}
		if syncproto.ValidDMSID(n) {
			return fmt.Errorf("broker: config: control plane name %q is a DMS id (canonical UUID)", n)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = DefaultMaxPacketSize
	}
	if c.MaxSessionExpiry == 0 {
		c.MaxSessionExpiry = DefaultMaxSessionExpiry
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Broker is the embedded MQTT broker. Its methods are safe for concurrent
// use. A Broker runs once: after Close, make a new one (on the same DataDir
// to keep the sessions).
type Broker struct {
	cfg     Config
	log     *slog.Logger
	cpNames map[string]bool
	srv     *mqtt.Server
	ln      *tlsListener
	store   *store
	kicks   kickLog

	// ctx ends at Close; Authorize calls derive from it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	started bool
	closed  bool
}

// New checks cfg and prepares a broker; Start opens the data directory and
// the listener.
func New(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	b := &Broker{
		cfg:     cfg,
		log:     cfg.Log,
		cpNames: make(map[string]bool, len(cfg.ControlPlaneNames)),
		kicks:   kickLog{last: make(map[string]uint64)},
	}
	for _, n := range cfg.ControlPlaneNames {
		b.cpNames[n] = true
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())

	expiry := uint32(cfg.MaxSessionExpiry / time.Second)
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumSessionExpiryInterval = expiry
	// A queued message lives as long as the session that holds it (mochi's
	// default drops inflight messages after one day).
	caps.MaximumMessageExpiryInterval = int64(expiry)
	caps.MaximumPacketSize = cfg.MaxPacketSize
	caps.MinimumProtocolVersion = 5
	// The sync protocol is at-least-once with idempotent consumers.
	caps.MaximumQos = 1
	// mochi checks the ACL before it resolves an inbound topic alias, so
	// aliases would either bypass or break it: refuse them.
	caps.TopicAliasMaximum = 0
	// Don't echo a PUBLISH's properties (user properties, ...) in its ack.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true

	b.srv = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       slog.New(quietMochi{cfg.Log.Handler()}).With("component", "mqtt"),
		// Nobody may read $SYS (see the ACL), and each tick writes the
		// stats to the store: once an hour is plenty.
		SysTopicResendInterval: 3600,
	})
	srvTLS := tlspolicy.Server(&tls.Config{
		GetCertificate: cfg.GetCertificate,
		// Verification happens in VerifyConnection against ClientCAs or
		// ControlPlaneCAs depending on the certificate (crypto/x509 has no
		// union of two pools). With no ClientCAs here, the CertificateRequest
		// lists no acceptable CAs, so Go clients send their certificate
		// whichever CA issued it.
		ClientAuth: tls.RequireAnyClientCert,
	})
	if cfg.GetCertificate == nil {
		srvTLS.Certificates = []tls.Certificate{cfg.TLSCert}
	}
	b.ln = newTLSListener(listenerID, cfg.Addr, srvTLS, b.identify, cfg.Log)
	b.ln.connectTimeout = cfg.ConnectTimeout
	return b, nil
}

// Start opens the store under DataDir (restoring sessions), binds the
// listener and serves. It returns once connections are being accepted.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case b.started:
		return errors.New("broker: already started")
	}
	if err := os.MkdirAll(b.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("broker: creating data directory: %w", err)
	}
	b.store = &store{Hook: new(bolt.Hook)}
	if err := b.srv.AddHook(&authHook{b: b}, nil); err != nil {
		return fmt.Errorf("broker: adding auth hook: %w", err)
	}
	err := b.srv.AddHook(b.store, &bolt.Options{
		Path:    filepath.Join(b.cfg.DataDir, dbFile),
		Options: &bbolt.Options{Timeout: dbOpenTimeout},
	})
	if err != nil {
		b.abort()
		return fmt.Errorf("broker: opening store: %w", err)
	}
	if err := b.srv.AddListener(b.ln); err != nil {
		b.abort()
		return fmt.Errorf("broker: listening on %s: %w", b.cfg.Addr, err)
	}
	if err := b.srv.Serve(); err != nil {
		b.abort()
		return fmt.Errorf("broker: serving: %w", err)
	}
	b.started = true
	b.log.Info("mqtt broker listening", "addr", b.ln.Address(), "data_dir", b.cfg.DataDir)
	return nil
}

// abort releases what a failed Start acquired; b.mu is held.
func (b *Broker) abort() {
	b.closed = true
	b.cancel()
	_ = b.srv.Close()
}

// Addr returns the listener's address (with the real port once started).
func (b *Broker) Addr() string {
	return b.ln.Address()
}

// Close disconnects every client (sessions stay in the store), closes the
// listener and the store. It is safe to call more than once.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.cancel()
	if !b.started {
		return nil
	}
	_ = b.srv.Close() // always nil
	if err := b.store.stopErr(); err != nil {
		return fmt.Errorf("broker: closing store: %w", err)
	}
	return nil
}

// Disconnect drops the connection of DMS dmsID if it is connected (MQTT 5
// DISCONNECT 0x98 "administrative action"), and also a connection of that
// DMS whose Authorize call was under way when Disconnect was called. Call
// it after the registry says the DMS is disabled or revoked, so its next
// connect fails Authorize. The session and its queued messages stay until
// they expire.
func (b *Broker) Disconnect(dmsID string) {
	if !syncproto.ValidDMSID(dmsID) {
		return
	}
	b.kicks.mark(dmsID)
	cl, ok := b.srv.Clients.Get(dmsID)
	if !ok || cl.Closed() {
		return
	}
	b.log.Info("disconnecting dms", "dms_id", dmsID, "remote_addr", cl.Net.Remote)
	_ = b.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
}

// kickLog remembers the latest Disconnect per DMS as a sequence number, so
// a connect that called Authorize before a Disconnect can be dropped once
// its session is established (Disconnect could not see it yet). It holds
// one entry per DMS ever disconnected.
type kickLog struct {
	mu   sync.Mutex
	seq  uint64
	last map[string]uint64
}

func (k *kickLog) current() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.seq
}

func (k *kickLog) mark(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.seq++
	k.last[id] = k.seq
}

// since reports whether id was disconnected after sequence number seq.
func (k *kickLog) since(id string, seq uint64) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.last[id] > seq
}

// quietMochi drops mochi's error log about the missing $SYS record on a
// first start with an empty store: expected, and not an error.
type quietMochi struct{ slog.Handler }

func (q quietMochi) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelError && r.Message == "failed to get data" {
		sysMissing := false
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "key" && a.Value.String() == "SYS" {
				sysMissing = true
			}
			return !sysMissing
		})
		if sysMissing {
			return nil
		}
	}
	return q.Handler.Handle(ctx, r)
}

func (q quietMochi) WithAttrs(as []slog.Attr) slog.Handler {
	return quietMochi{q.Handler.WithAttrs(as)}
}
func (q quietMochi) WithGroup(g string) slog.Handler { return quietMochi{q.Handler.WithGroup(g)} }
