package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/internal/testpki"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// MQTT 5 reason codes the tests expect.
const (
	codeGrantedQoS1       = 0x01
	codeBadClientID       = 0x85
	codeNotAuthorized     = 0x87
	codeServerUnavailable = 0x88
	codeBanned            = 0x8A
	codeAdministrative    = 0x98
)

func TestRoundTrip(t *testing.T) {
	e := newEnv(t)
	dmsID, cert := e.newDMS()
	cp := e.controlPlane("cp-1")

	dms, ca, err := e.connect(&cert, dmsID, connectOpts{zeroKeepAlive: true})
	if err != nil {
		t.Fatalf("dms connect: %v", err)
	}
	if ca.Properties == nil || ca.Properties.MaximumPacketSize == nil || *ca.Properties.MaximumPacketSize != DefaultMaxPacketSize {
		t.Errorf("connack maximum packet size: got %+v, want %d", ca.Properties, DefaultMaxPacketSize)
	}
	if ca.Properties == nil || ca.Properties.ServerKeepAlive == nil || *ca.Properties.ServerKeepAlive != defaultKeepAlive {
		t.Errorf("connack server keep alive for keep alive 0: got %+v, want %d", ca.Properties, defaultKeepAlive)
	}
	if ca.Properties == nil || ca.Properties.MaximumQoS == nil || *ca.Properties.MaximumQoS != 1 {
		t.Errorf("connack maximum qos: got %+v, want 1", ca.Properties)
	}
	if got := e.authz.count(dmsID); got != 1 {
		t.Errorf("Authorize calls: got %d, want 1", got)
	}

	dms.mustPublish(t, syncproto.UpTopic(dmsID), []byte("hello up"))
	cp.expect(t, syncproto.UpTopic(dmsID), []byte("hello up"))

	dms.subscribe(t, syncproto.DownTopic(dmsID), codeGrantedQoS1)
	cp.mustPublish(t, syncproto.DownTopic(dmsID), []byte("hello down"))
	dms.expect(t, syncproto.DownTopic(dmsID), []byte("hello down"))
}

func TestConnectRefused(t *testing.T) {
	e := newEnv(t)
	otherPKI := testpki.New(testpki.WithClock(time.Now))
	otherCA := otherPKI.Root("Some Other CA")
	// An intermediate below the DMS manager CA works (chain sent by the client).
	issuing := e.dmsCA.Intermediate("Outpost Test DMS Issuing CA", testpki.PathLen(0))

	type tc struct {
		name     string
		dmsID    string           // for Authorize bookkeeping; "" when no DMS identity
		cert     *tls.Certificate // nil: no client certificate
		clientID string
		authErr  error
		will     *paho.WillMessage
		// wantCode is the CONNACK reason code; 0 means the TLS handshake
		// must fail (no CONNACK at all), -1 means the connect succeeds.
		wantCode      int
		wantAuthorize bool
	}
	var cases []tc
	add := func(c tc) { cases = append(cases, c) }
	{
		id, cert := e.newDMS()
		add(tc{name: "client id is not the common name", dmsID: id, cert: &cert, clientID: uuid.NewString(), wantCode: codeBadClientID})
	}
	{
		id, cert := e.newDMS()
		add(tc{name: "empty client id", dmsID: id, cert: &cert, clientID: "", wantCode: codeBadClientID})
	}
	{
		id, cert := e.newDMS()
		add(tc{name: "client id in upper case", dmsID: id, cert: &cert, clientID: strings.ToUpper(id), wantCode: codeBadClientID})
	}
	{
		id := uuid.NewString()
		cert := otherCA.Leaf(id, testpki.ExtKeyUsage(x509.ExtKeyUsageClientAuth)).TLSCertificate()
		add(tc{name: "certificate from another CA", dmsID: id, cert: &cert, clientID: id})
	}
	{
		cert := otherCA.Leaf(cpName, testpki.ExtKeyUsage(x509.ExtKeyUsageClientAuth)).TLSCertificate()
		add(tc{name: "control plane name from another CA", cert: &cert, clientID: "cp"})
	}
	{
		cert := e.dmsCA.Leaf(cpName, testpki.ExtKeyUsage(x509.ExtKeyUsageClientAuth)).TLSCertificate()
		add(tc{name: "control plane name from the DMS CA", cert: &cert, clientID: "cp"})
	}
	{
		cert := e.dmsCA.Leaf("gateway-7", testpki.ExtKeyUsage(x509.ExtKeyUsageClientAuth)).TLSCertificate()
		add(tc{name: "common name is not a UUID", cert: &cert, clientID: "gateway-7"})
	}
	{
		id := strings.ToUpper(uuid.NewString())
		cert := e.dmsCA.Leaf(id, testpki.ExtKeyUsage(x509.ExtKeyUsageClientAuth)).TLSCertificate()
		add(tc{name: "common name is a non-canonical UUID", cert: &cert, clientID: id})
	}
	{
		id := uuid.NewString()
		cert := e.dmsCA.Leaf(id, testpki.ExtKeyUsage(x509.ExtKeyUsageServerAuth)).TLSCertificate()
		add(tc{name: "dms certificate without clientAuth", dmsID: id, cert: &cert, clientID: id})
	}
	{
		id := uuid.NewString()
		cert := e.dmsCA.Leaf(id, testpki.ExtKeyUsage()).TLSCertificate()
		add(tc{name: "dms certificate without extended key usage", dmsID: id, cert: &cert, clientID: id})
	}
	{
		id := uuid.NewString()
		cert := e.dmsCA.Leaf(id, testpki.ExtKeyUsage(x509.ExtKeyUsageClientAuth),
			testpki.NotBefore(time.Now().Add(-2*time.Hour)), testpki.NotAfter(time.Now().Add(-time.Hour))).TLSCertificate()
		add(tc{name: "expired dms certificate", dmsID: id, cert: &cert, clientID: id})
	}
	add(tc{name: "no client certificate", clientID: uuid.NewString()})
	{
		id, cert := e.newDMS()
		add(tc{name: "authorize refuses (unknown certificate)", dmsID: id, cert: &cert, clientID: id,
			authErr: errors.New("dms disabled"), wantCode: codeNotAuthorized, wantAuthorize: true})
	}
	{
		id, cert := e.newDMS()
		add(tc{name: "authorize bans (disabled by an operator)", dmsID: id, cert: &cert, clientID: id,
			authErr: fmt.Errorf("the dms is disabled: %w", ErrBanned), wantCode: codeBanned, wantAuthorize: true})
	}
	{
		id, cert := e.newDMS()
		add(tc{name: "authorize unavailable", dmsID: id, cert: &cert, clientID: id,
			authErr: fmt.Errorf("registry: %w", ErrUnavailable), wantCode: codeServerUnavailable, wantAuthorize: true})
	}
	{
		id, cert := e.newDMS()
		add(tc{name: "will on another dms's up topic", dmsID: id, cert: &cert, clientID: id,
			will: &paho.WillMessage{Topic: syncproto.UpTopic(uuid.NewString()), QoS: 1, Payload: []byte("x")}, wantCode: codeNotAuthorized})
	}
	{
		cert := e.cpCert()
		add(tc{name: "control plane with a dms id as client id", cert: &cert, clientID: uuid.NewString(), wantCode: codeBadClientID})
	}
	{
		id := uuid.NewString()
		cert := issuing.Leaf(id, testpki.ExtKeyUsage(x509.ExtKeyUsageClientAuth)).TLSCertificate()
		add(tc{name: "dms certificate from an intermediate (accepted)", dmsID: id, cert: &cert, clientID: id, wantCode: -1, wantAuthorize: true})
	}
	{
		id, cert := e.newDMS()
		add(tc{name: "will on its own up topic (accepted)", dmsID: id, cert: &cert, clientID: id,
			will: &paho.WillMessage{Topic: syncproto.UpTopic(id), QoS: 1, Payload: []byte("bye")}, wantCode: -1, wantAuthorize: true})
	}
	{
		cert := e.cpCert()
		add(tc{name: "control plane with an assigned client id (accepted)", cert: &cert, clientID: "", wantCode: -1})
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.dmsID != "" {
				e.authz.set(c.dmsID, c.authErr)
			}
			cl, ca, err := e.connect(c.cert, c.clientID, connectOpts{will: c.will})
			switch {
			case c.wantCode == -1:
				if err != nil {
					t.Fatalf("got error %v (connack %+v), want a connection", err, ca)
				}
				_ = cl.c.Disconnect(&paho.Disconnect{})
			case c.wantCode == 0:
				if err == nil {
					t.Fatalf("got a connection, want a TLS handshake failure")
				}
				if ca != nil {
					t.Fatalf("got connack %#x, want a TLS handshake failure", ca.ReasonCode)
				}
			default:
				if err == nil {
					t.Fatalf("got a connection, want connack %#x", c.wantCode)
				}
				if ca == nil {
					t.Fatalf("got error %v without connack, want connack %#x", err, c.wantCode)
				}
				if int(ca.ReasonCode) != c.wantCode {
					t.Fatalf("got connack %#x, want %#x", ca.ReasonCode, c.wantCode)
				}
			}
			if c.dmsID != "" {
				if got := e.authz.count(c.dmsID) > 0; got != c.wantAuthorize {
					t.Errorf("Authorize called: got %v, want %v", got, c.wantAuthorize)
				}
			}
		})
	}
}

func TestACL(t *testing.T) {
	e := newEnv(t)
	dmsID, cert := e.newDMS()
	otherID, _ := e.newDMS()
	cp := e.controlPlane("cp-acl")
	dms := e.mustConnect(cert, dmsID, connectOpts{})

	t.Run("dms publish", func(t *testing.T) {
		cases := []struct {
			topic string
			want  byte
		}{
			{syncproto.UpTopic(otherID), codeNotAuthorized},
			{syncproto.DownTopic(dmsID), codeNotAuthorized},
			{syncproto.DownTopic(otherID), codeNotAuthorized},
			{syncproto.UpTopic(dmsID) + "/x", codeNotAuthorized},
			{"outpost/v1/dms/" + dmsID, codeNotAuthorized},
			{"some/other/topic", codeNotAuthorized},
			{syncproto.UpTopic(dmsID), 0},
		}
		for _, c := range cases {
			if got := dms.publish(t, c.topic, []byte("from dms to "+c.topic)); got != c.want {
				t.Errorf("publish on %q: got reason code %#x, want %#x", c.topic, got, c.want)
			}
		}
		// Messages from one publisher arrive in order: had a refused one
		// been forwarded, it would come before the allowed one.
		cp.expect(t, syncproto.UpTopic(dmsID), []byte("from dms to "+syncproto.UpTopic(dmsID)))
	})

	t.Run("dms subscribe", func(t *testing.T) {
		cases := []struct {
			filter string
			want   byte
		}{
			{syncproto.DownTopic(otherID), codeNotAuthorized},
			{"outpost/v1/dms/+/down", codeNotAuthorized},
			{"outpost/v1/dms/#", codeNotAuthorized},
			{"#", codeNotAuthorized},
			{"$SYS/#", codeNotAuthorized},
			{syncproto.SharedUpSubscription, codeNotAuthorized},
			{"$share/g/" + syncproto.DownTopic(dmsID), codeNotAuthorized},
			{syncproto.UpTopic(dmsID), codeNotAuthorized},
			{syncproto.DownTopic(dmsID), codeGrantedQoS1},
		}
		for _, c := range cases {
			t.Run(c.filter, func(t *testing.T) { dms.subscribe(t, c.filter, c.want) })
		}
		// Only the allowed subscription delivers.
		cp.mustPublish(t, syncproto.DownTopic(otherID), []byte("for the other dms"))
		cp.mustPublish(t, syncproto.DownTopic(dmsID), []byte("for this dms"))
		dms.expect(t, syncproto.DownTopic(dmsID), []byte("for this dms"))
	})

	t.Run("control plane", func(t *testing.T) {
		subs := []struct {
			filter string
			want   byte
		}{
			{syncproto.UpTopicFilter, codeNotAuthorized},
			{syncproto.UpTopic(dmsID), codeNotAuthorized},
			{"$share/other-group/" + syncproto.UpTopicFilter, codeNotAuthorized},
			{"outpost/v1/dms/+/down", codeNotAuthorized},
			{"#", codeNotAuthorized},
			{syncproto.SharedUpSubscription, codeGrantedQoS1},
		}
		for _, c := range subs {
			t.Run("subscribe "+c.filter, func(t *testing.T) { cp.subscribe(t, c.filter, c.want) })
		}
		pubs := []struct {
			topic string
			want  byte
		}{
			{syncproto.UpTopic(dmsID), codeNotAuthorized},
			{"outpost/v1/dms/not-a-uuid/down", codeNotAuthorized},
			{"some/other/topic", codeNotAuthorized},
			{syncproto.DownTopic(uuid.NewString()), 0},
		}
		for _, c := range pubs {
			if got := cp.publish(t, c.topic, []byte("x")); got != c.want {
				t.Errorf("publish on %q: got reason code %#x, want %#x", c.topic, got, c.want)
			}
		}
		// The refused subscriptions deliver nothing: the next message
		// comes from the shared subscription only, once.
		dms.mustPublish(t, syncproto.UpTopic(dmsID), []byte("marker"))
		cp.expect(t, syncproto.UpTopic(dmsID), []byte("marker"))
		select {
		case m := <-cp.msgs:
			t.Errorf("unexpected second delivery %q on %q", m.Payload, m.Topic)
		case <-time.After(200 * time.Millisecond):
		}
	})
}

func TestSharedSubscription(t *testing.T) {
	e := newEnv(t)
	cps := []*client{e.controlPlane("cp-a"), e.controlPlane("cp-b")}
	const perDMS = 50
	var wg sync.WaitGroup
	for d := range 2 {
		id, cert := e.newDMS()
		dms := e.mustConnect(cert, id, connectOpts{})
		wg.Go(func() {
			for i := range perDMS {
				if code := dms.publish(t, syncproto.UpTopic(id), fmt.Appendf(nil, "dms%d-%d", d, i)); code != 0 {
					t.Errorf("publish: got reason code %#x, want 0", code)
					return
				}
			}
		})
	}
	wg.Wait()

	got := map[string]int{}
	perCP := make([]int, len(cps))
	deadline := time.After(waitTimeout)
	for total := 0; total < 2*perDMS; total++ {
		select {
		case m := <-cps[0].msgs:
			got[string(m.Payload)]++
			perCP[0]++
		case m := <-cps[1].msgs:
			got[string(m.Payload)]++
			perCP[1]++
		case <-deadline:
			t.Fatalf("received %d messages, want %d", total, 2*perDMS)
		}
	}
	// Give duplicates, if any, time to arrive.
	time.Sleep(300 * time.Millisecond)
	for i, cp := range cps {
		for len(cp.msgs) > 0 {
			m := <-cp.msgs
			got[string(m.Payload)]++
			perCP[i]++
		}
	}
	for d := range 2 {
		for i := range perDMS {
			if n := got[fmt.Sprintf("dms%d-%d", d, i)]; n != 1 {
				t.Errorf("message dms%d-%d delivered %d times, want 1", d, i, n)
			}
		}
	}
	if len(got) != 2*perDMS {
		t.Errorf("got %d distinct messages, want %d", len(got), 2*perDMS)
	}
	// Random choice among two members: all 100 to one of them has
	// probability 2^-99.
	if perCP[0] == 0 || perCP[1] == 0 {
		t.Errorf("messages per control plane client: got %v, want both > 0", perCP)
	}
}

// TestSharedSubscriptionPrefersConnected checks that a control plane
// replica gone with a persistent session does not take messages while
// another replica is connected.
func TestSharedSubscriptionPrefersConnected(t *testing.T) {
	e := newEnv(t)
	gone := e.mustConnect(e.cpCert(), "cp-gone", connectOpts{persistent: true})
	gone.subscribe(t, syncproto.SharedUpSubscription, codeGrantedQoS1)
	if err := gone.c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	live := e.controlPlane("cp-live")
	id, cert := e.newDMS()
	dms := e.mustConnect(cert, id, connectOpts{})
	for i := range 20 {
		dms.mustPublish(t, syncproto.UpTopic(id), fmt.Appendf(nil, "m%d", i))
	}
	for i := range 20 {
		live.expect(t, syncproto.UpTopic(id), fmt.Appendf(nil, "m%d", i))
	}
}

func TestPersistentSession(t *testing.T) {
	e := newEnv(t)
	dmsID, cert := e.newDMS()
	dms := e.mustConnect(cert, dmsID, connectOpts{persistent: true})
	dms.subscribe(t, syncproto.DownTopic(dmsID), codeGrantedQoS1)
	if err := dms.c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect: %v", err)
	}

	cp := e.mustConnect(e.cpCert(), "cp-persist", connectOpts{})
	want := make([][]byte, 5)
	for i := range want {
		want[i] = fmt.Appendf(nil, "queued %d", i)
		cp.mustPublish(t, syncproto.DownTopic(dmsID), want[i])
	}
	if err := cp.c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect: %v", err)
	}

	e.restart()

	dms, ca, err := e.connect(&cert, dmsID, connectOpts{persistent: true})
	if err != nil {
		t.Fatalf("reconnect: %v (connack %+v)", err, ca)
	}
	if !ca.SessionPresent {
		t.Errorf("connack session present: got false, want true")
	}
	got := map[string]bool{}
	for range want {
		m := dms.next(t)
		if m.Topic != syncproto.DownTopic(dmsID) {
			t.Errorf("got message on %q, want %q", m.Topic, syncproto.DownTopic(dmsID))
		}
		got[string(m.Payload)] = true
	}
	for _, w := range want {
		if !got[string(w)] {
			t.Errorf("message %q not delivered after restart (got %v)", w, got)
		}
	}
	// The subscription survived too: a new message arrives.
	cp = e.mustConnect(e.cpCert(), "cp-persist", connectOpts{})
	cp.mustPublish(t, syncproto.DownTopic(dmsID), []byte("after restart"))
	dms.expect(t, syncproto.DownTopic(dmsID), []byte("after restart"))
}

func TestDisconnect(t *testing.T) {
	e := newEnv(t)
	dmsID, cert := e.newDMS()
	otherID, otherCert := e.newDMS()
	dms := e.mustConnect(cert, dmsID, connectOpts{})
	other := e.mustConnect(otherCert, otherID, connectOpts{})

	e.authz.set(dmsID, errors.New("dms disabled"))
	e.b.Disconnect(dmsID)
	d := dms.waitDropped(t)
	if d == nil || d.ReasonCode != codeAdministrative {
		t.Errorf("disconnect packet: got %+v, want reason code %#x", d, codeAdministrative)
	}
	// Disabled, it cannot come back.
	if _, ca, err := e.connect(&cert, dmsID, connectOpts{}); err == nil || ca == nil || ca.ReasonCode != codeNotAuthorized {
		t.Errorf("reconnect after disable: got connack %+v, err %v; want %#x", ca, err, codeNotAuthorized)
	}
	// Other DMSs are untouched, and unknown ids are ignored.
	e.b.Disconnect(uuid.NewString())
	e.b.Disconnect("not-a-uuid")
	other.subscribe(t, syncproto.DownTopic(otherID), codeGrantedQoS1)
}

// TestDisconnectWhileAuthorizing covers a Disconnect that arrives while the
// DMS's Authorize call (which may have read the registry before the DMS
// was disabled) is still running.
func TestDisconnectWhileAuthorizing(t *testing.T) {
	e := newEnv(t)
	dmsID, cert := e.newDMS()
	gate := make(chan struct{})
	e.authz.mu.Lock()
	e.authz.gates[dmsID] = gate
	e.authz.entered = make(chan string, 1)
	e.authz.mu.Unlock()

	type result struct {
		cl  *client
		err error
	}
	done := make(chan result, 1)
	go func() {
		cl, _, err := e.connect(&cert, dmsID, connectOpts{})
		done <- result{cl, err}
	}()
	select {
	case <-e.authz.entered:
	case <-time.After(waitTimeout):
		t.Fatal("Authorize not called")
	}
	e.b.Disconnect(dmsID)
	close(gate)
	r := <-done
	if r.err != nil {
		return // refused or dropped before the CONNACK was read: fine
	}
	r.cl.waitDropped(t)
}

func TestCertificateExpiryDisconnects(t *testing.T) {
	e := newEnv(t)
	dmsID, cert := e.newDMS(testpki.NotAfter(time.Now().Add(2 * time.Second)))
	dms := e.mustConnect(cert, dmsID, connectOpts{})
	d := dms.waitDropped(t)
	if d == nil || d.ReasonCode != codeNotAuthorized {
		t.Errorf("disconnect packet: got %+v, want reason code %#x", d, codeNotAuthorized)
	}
}

func TestConfigValidate(t *testing.T) {
	p := testpki.NewT(t)
	ca := p.Root("CA")
	valid := Config{
		TLSCert:           ca.Leaf("broker").TLSCertificate(),
		ClientCAs:         ca.Pool(),
		ControlPlaneCAs:   ca.Pool(),
		ControlPlaneNames: []string{cpName},
		Authorize:         func(context.Context, string, *x509.Certificate) error { return nil },
		DataDir:           t.TempDir(),
	}
	cases := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"valid", func(*Config) {}, ""},
		{"no server certificate", func(c *Config) { c.TLSCert = tls.Certificate{} }, "TLSCert"},
		{"no client CAs", func(c *Config) { c.ClientCAs = nil }, "ClientCAs"},
		{"names without CAs", func(c *Config) { c.ControlPlaneCAs = nil }, "ControlPlaneCAs"},
		{"no control plane", func(c *Config) { c.ControlPlaneCAs, c.ControlPlaneNames = nil, nil }, ""},
		{"uuid control plane name", func(c *Config) { c.ControlPlaneNames = []string{uuid.NewString()} }, "canonical UUID"},
		{"empty control plane name", func(c *Config) { c.ControlPlaneNames = []string{""} }, "empty name"},
		{"no authorize", func(c *Config) { c.Authorize = nil }, "Authorize"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir"},
		{"tiny packets", func(c *Config) { c.MaxPacketSize = 10 }, "MaxPacketSize"},
		{"negative expiry", func(c *Config) { c.MaxSessionExpiry = -time.Hour }, "MaxSessionExpiry"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := valid
			c.mod(&cfg)
			err := cfg.Validate()
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("got %v, want an error mentioning %q", err, c.wantErr)
			}
		})
	}
}

func TestStartAfterClose(t *testing.T) {
	e := newEnv(t)
	if err := e.b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := e.b.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: got %v, want ErrClosed", err)
	}
}

// TestTLSResumption checks that a resumed TLS session (no certificate on
// the wire, the chain comes from the ticket) is identified like a full
// handshake, and that resumption works across connections at all.
func TestTLSResumption(t *testing.T) {
	e := newEnv(t)
	dmsID, cert := e.newDMS()
	cache := tls.NewLRUClientSessionCache(4)
	first := e.mustConnect(cert, dmsID, connectOpts{sessionCache: cache})
	// The ticket arrives after the handshake; a round trip makes sure the
	// client has read it.
	first.subscribe(t, syncproto.DownTopic(dmsID), codeGrantedQoS1)
	if err := first.c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	second := e.mustConnect(cert, dmsID, connectOpts{sessionCache: cache})
	if !second.resumed {
		t.Errorf("second connection: got a full handshake, want a resumed session")
	}
	second.mustPublish(t, syncproto.UpTopic(dmsID), []byte("resumed"))
	if got := second.publish(t, syncproto.UpTopic(uuid.NewString()), []byte("x")); got != codeNotAuthorized {
		t.Errorf("publish on another dms's topic after resumption: got %#x, want %#x", got, codeNotAuthorized)
	}
	if got := e.authz.count(dmsID); got != 2 {
		t.Errorf("Authorize calls: got %d, want 2", got)
	}
}

func TestStartAddressInUse(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg
	cfg.Addr = e.b.Addr()
	cfg.DataDir = t.TempDir()
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := b.Start(); err == nil {
		_ = b.Close()
		t.Fatal("Start on a used address: got no error")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close after failed Start: %v", err)
	}
	// The failed broker released its store: another can open it.
	cfg.Addr = "127.0.0.1:0"
	b2, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := b2.Start(); err != nil {
		t.Fatalf("Start on the released data directory: %v", err)
	}
	if err := b2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// BenchmarkUpPath measures QoS 1 messages from 4 DMSs to one control plane
// client through the broker (each message costs 4 fsynced store writes).
func BenchmarkUpPath(b *testing.B) {
	e := newEnv(b)
	cp := e.controlPlane("cp-bench")
	const dmss = 4
	clients := make([]*client, dmss)
	ids := make([]string, dmss)
	for i := range clients {
		id, cert := e.newDMS()
		ids[i], clients[i] = id, e.mustConnect(cert, id, connectOpts{})
	}
	payload := make([]byte, 512)
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for range b.N / dmss {
				if code := clients[i].publish(b, syncproto.UpTopic(ids[i]), payload); code != 0 {
					b.Errorf("publish: reason code %#x", code)
					return
				}
			}
		})
	}
	for range b.N / dmss * dmss {
		cp.next(b)
	}
	wg.Wait()
}
