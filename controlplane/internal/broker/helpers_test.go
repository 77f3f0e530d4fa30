package broker

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/internal/testpki"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// cpName is the control plane's client certificate common name in tests.
const cpName = "outpost-controlplane"

// waitTimeout bounds every wait for a message or an event.
const waitTimeout = 10 * time.Second

// env is a broker on loopback with three test CAs: the DMS manager CA
// (verifies DMSs), the control plane CA and the broker's server CA.
type env struct {
	t     testing.TB
	pki   *testpki.PKI
	dmsCA *testpki.CA
	cpCA  *testpki.CA
	srvCA *testpki.CA
	cfg   Config
	authz *authorizer
	logs  *syncBuffer
	b     *Broker
}

func newEnv(t testing.TB) *env {
	t.Helper()
	// The broker checks certificates against the wall clock.
	p := testpki.NewT(t, testpki.WithClock(time.Now))
	e := &env{
		t:     t,
		pki:   p,
		dmsCA: p.Root("Outpost Test DMS Manager CA"),
		cpCA:  p.Root("Outpost Test Control Plane CA"),
		srvCA: p.Root("Outpost Test Broker CA"),
		authz: &authorizer{calls: map[string]int{}, errs: map[string]error{}, gates: map[string]chan struct{}{}},
		logs:  &syncBuffer{},
	}
	srv := e.srvCA.Leaf("127.0.0.1",
		testpki.DNSNames("localhost"),
		testpki.IPAddresses(net.IPv4(127, 0, 0, 1)),
		testpki.ExtKeyUsage(x509.ExtKeyUsageServerAuth))
	e.cfg = Config{
		Addr:              "127.0.0.1:0",
		TLSCert:           srv.TLSCertificate(),
		ClientCAs:         e.dmsCA.Pool(),
		ControlPlaneCAs:   e.cpCA.Pool(),
		ControlPlaneNames: []string{cpName},
		Authorize:         e.authz.authorize,
		DataDir:           t.TempDir(),
		Log:               slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker logs:\n%s", e.logs.String())
		}
	})
	e.start()
	return e
}

// start starts a broker on e.cfg (again).
func (e *env) start() {
	e.t.Helper()
	b, err := New(e.cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	if err := b.Start(); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	e.b = b
	e.t.Cleanup(func() {
		if err := b.Close(); err != nil {
			e.t.Errorf("Close: %v", err)
		}
	})
}

// restart closes the broker and starts a new one on the same address and
// data directory.
func (e *env) restart() {
	e.t.Helper()
	addr := e.b.Addr()
	if err := e.b.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.cfg.Addr = addr
	e.start()
}

// newDMS issues a DMS certificate for a new DMS id.
func (e *env) newDMS(opts ...testpki.CertOption) (string, tls.Certificate) {
	id := uuid.NewString()
	opts = append([]testpki.CertOption{testpki.ExtKeyUsage(x509.ExtKeyUsageClientAuth)}, opts...)
	return id, e.dmsCA.Leaf(id, opts...).TLSCertificate()
}

// cpCert issues a control plane client certificate.
func (e *env) cpCert() tls.Certificate {
	return e.cpCA.Leaf(cpName, testpki.ExtKeyUsage(x509.ExtKeyUsageClientAuth)).TLSCertificate()
}

// connectOpts tunes env.connect.
type connectOpts struct {
	persistent    bool // CleanStart false, session expiry 1 hour
	zeroKeepAlive bool // keep alive 0 instead of 30 s
	will          *paho.WillMessage
	sessionCache  tls.ClientSessionCache // for TLS session resumption
}

// client is a connected paho client and what it received.
type client struct {
	resumed      bool // the TLS handshake resumed a session
	c            *paho.Client
	msgs         chan *paho.Publish
	disconnected chan *paho.Disconnect
}

// connect dials the broker with cert (none when nil) and sends CONNECT.
// On failure it returns the CONNACK if there was one.
func (e *env) connect(cert *tls.Certificate, clientID string, o connectOpts) (*client, *paho.Connack, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tcfg := &tls.Config{RootCAs: e.srvCA.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12, ClientSessionCache: o.sessionCache}
	if cert != nil {
		tcfg.Certificates = []tls.Certificate{*cert}
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: waitTimeout}, Config: tcfg}
	conn, err := d.DialContext(ctx, "tcp", e.b.Addr())
	if err != nil {
		return nil, nil, err
	}
	cl := &client{msgs: make(chan *paho.Publish, 1000), disconnected: make(chan *paho.Disconnect, 1)}
	cl.resumed = conn.(*tls.Conn).ConnectionState().DidResume
	cl.c = paho.NewClient(paho.ClientConfig{
		// paho writes from several goroutines; keep packets whole.
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cl.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case cl.disconnected <- d:
			default:
			}
		},
		OnClientError: func(error) {},
	})
	cp := &paho.Connect{ClientID: clientID, CleanStart: !o.persistent, KeepAlive: 30, WillMessage: o.will}
	if o.zeroKeepAlive {
		cp.KeepAlive = 0
	}
	if o.persistent {
		exp := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	}
	ca, err := cl.c.Connect(ctx, cp)
	if err != nil {
		return nil, ca, err
	}
	e.t.Cleanup(func() { _ = cl.c.Disconnect(&paho.Disconnect{}) })
	return cl, ca, nil
}

// mustConnect connects or fails the test.
func (e *env) mustConnect(cert tls.Certificate, clientID string, o connectOpts) *client {
	e.t.Helper()
	cl, ca, err := e.connect(&cert, clientID, o)
	if err != nil {
		e.t.Fatalf("connecting %q: %v (connack %+v)", clientID, err, ca)
	}
	return cl
}

// controlPlane connects a control plane client subscribed to the shared
// up subscription.
func (e *env) controlPlane(clientID string) *client {
	e.t.Helper()
	cp := e.mustConnect(e.cpCert(), clientID, connectOpts{})
	cp.subscribe(e.t, syncproto.SharedUpSubscription, 0x01)
	return cp
}

// subscribe subscribes with QoS 1 and checks the SUBACK reason code.
func (c *client) subscribe(t testing.TB, filter string, want byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sa, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if sa == nil {
		t.Fatalf("subscribe %q: no suback: %v", filter, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] != want {
		t.Fatalf("subscribe %q: got reason codes %#x, want [%#x] (err %v)", filter, sa.Reasons, want, err)
	}
}

// publish publishes with QoS 1 and returns the PUBACK reason code.
func (c *client) publish(t testing.TB, topic string, payload []byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pr, err := c.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
	if pr == nil {
		t.Fatalf("publish on %q: no puback: %v", topic, err)
	}
	return pr.ReasonCode
}

// mustPublish publishes with QoS 1 and requires success.
func (c *client) mustPublish(t testing.TB, topic string, payload []byte) {
	t.Helper()
	if code := c.publish(t, topic, payload); code != 0 {
		t.Fatalf("publish on %q: got reason code %#x, want 0", topic, code)
	}
}

// next waits for the next message.
func (c *client) next(t testing.TB) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no message within %v", waitTimeout)
		return nil
	}
}

// expect waits for the next message and checks its topic and payload.
func (c *client) expect(t testing.TB, topic string, payload []byte) {
	t.Helper()
	m := c.next(t)
	if m.Topic != topic || !bytes.Equal(m.Payload, payload) {
		t.Fatalf("got message %q on %q, want %q on %q", m.Payload, m.Topic, payload, topic)
	}
}

// waitDropped waits until the broker ends the client's connection and
// returns the DISCONNECT it sent, if any.
func (c *client) waitDropped(t testing.TB) *paho.Disconnect {
	t.Helper()
	select {
	case <-c.c.Done():
	case <-time.After(waitTimeout):
		t.Fatalf("connection still up after %v", waitTimeout)
	}
	select {
	case d := <-c.disconnected:
		return d
	case <-time.After(time.Second):
		return nil
	}
}

// authorizer is a fake registry for Config.Authorize.
type authorizer struct {
	mu      sync.Mutex
	calls   map[string]int
	errs    map[string]error
	gates   map[string]chan struct{} // Authorize waits for the channel to close
	entered chan string              // receives the DMS id of gated calls
}

func (a *authorizer) authorize(ctx context.Context, dmsID string, cert *x509.Certificate) error {
	if cert == nil || cert.Subject.CommonName != dmsID {
		return errors.New("authorize: certificate does not match the dms id")
	}
	a.mu.Lock()
	a.calls[dmsID]++
	err := a.errs[dmsID]
	gate := a.gates[dmsID]
	entered := a.entered
	a.mu.Unlock()
	if gate != nil {
		entered <- dmsID
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (a *authorizer) set(dmsID string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errs[dmsID] = err
}

func (a *authorizer) count(dmsID string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[dmsID]
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
