package badinput

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// rogueDMS is a DMS the suite created and bootstrapped itself, with a
// key it holds: an authenticated broker client that sends what it likes.
type rogueDMS struct {
	ID     string
	Cert   tls.Certificate
	broker string
	b      *bed

	c     *paho.Client
	downs chan *syncpb.Envelope
	// probes counts the probe records sent (and acknowledged).
	probes int
}

// brokerAddr is the embedded broker's address (sync.broker.listen of
// the control plane's configuration).
func brokerAddr(t *testing.T, b *bed) string {
	t.Helper()
	cfg, err := os.ReadFile(b.s.Path("controlplane.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s+listen: (\S+)$`).FindSubmatch(cfg)
	if m == nil {
		t.Fatalf("no sync.broker.listen in controlplane.yaml:\n%s", cfg)
	}
	return string(m[1])
}

// newRogueDMS creates a DMS through the API (queued mode, the devices CA
// authorized) and bootstraps it with a key made here.
func newRogueDMS(t *testing.T, b *bed, caID string) *rogueDMS {
	t.Helper()
	var created struct {
		DMS            struct{ ID string } `json:"dms"`
		BootstrapToken string              `json:"bootstrap_token"`
	}
	b.api(t, "POST", "/api/v1/dmss", map[string]any{"name": "badinput-rogue", "authorized_cas": []string{caID}}, 201, &created)
	b.secret("DMS bootstrap token", created.BootstrapToken)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: created.DMS.ID}}, key)
	if err != nil {
		t.Fatal(err)
	}
	var boot struct {
		DMSID          string `json:"dms_id"`
		CertificatePEM string `json:"certificate_pem"`
		ChainPEM       string `json:"chain_pem"`
	}
	b.api(t, "POST", "/api/v1/dms/bootstrap", map[string]any{"token": created.BootstrapToken,
		"csr_pem": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, 200, &boot)
	var chain [][]byte
	rest := []byte(boot.CertificatePEM + boot.ChainPEM)
	for {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		chain = append(chain, blk.Bytes)
	}
	return &rogueDMS{ID: boot.DMSID, Cert: tls.Certificate{Certificate: chain, PrivateKey: key}, broker: brokerAddr(t, b), b: b,
		downs: make(chan *syncpb.Envelope, 100)}
}

// dial opens a TLS connection to the broker with cert (none when nil),
// presenting it whatever the broker asks for.
func dialBroker(b *bed, addr string, cert *tls.Certificate) (*tls.Conn, error) {
	cfg := &tls.Config{RootCAs: b.s.ESTCA, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c := *cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := conn.(*tls.Conn)
	// TLS 1.3 reports a refused client certificate only on the first
	// read: make it happen now.
	_ = tc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var one [1]byte
	if _, err := tc.Read(one[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		tc.Close()
		return nil, err
	}
	_ = tc.SetReadDeadline(time.Time{})
	return tc, nil
}

// connect sends CONNECT over a new connection and returns the client and
// the CONNACK.
func connectMQTT(b *bed, addr string, cert *tls.Certificate, cp *paho.Connect, onMsg func(*paho.Publish)) (*paho.Client, *tls.Conn, *paho.Connack, error) {
	conn, err := dialBroker(b, addr, cert)
	if err != nil {
		return nil, nil, nil, err
	}
	c := paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			if onMsg != nil {
				onMsg(pr.Packet)
			}
			return true, nil
		}},
		OnClientError: func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		return nil, nil, ca, err
	}
	return c, conn, ca, nil
}

// up connects the rogue DMS and subscribes to its down topic.
func (r *rogueDMS) up(t *testing.T) {
	t.Helper()
	c, _, ca, err := connectMQTT(r.b, r.broker, &r.Cert, &paho.Connect{ClientID: r.ID, CleanStart: true, KeepAlive: 30}, func(p *paho.Publish) {
		env, err := syncproto.Unmarshal(p.Payload)
		if err != nil {
			t.Errorf("the control plane sent a down message that does not decode: %v", err)
			return
		}
		r.downs <- env
	})
	if err != nil {
		t.Fatalf("connecting the rogue DMS: %v (connack %+v)", err, ca)
	}
	r.c = c
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: syncproto.DownTopic(r.ID), QoS: 1}}})
	if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] > 1 {
		t.Fatalf("subscribing to the rogue DMS's down topic: %v %+v", err, sa)
	}
}

// publish publishes payload at QoS 1 and returns the PUBACK reason code.
func (r *rogueDMS) publish(t *testing.T, topic string, payload []byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, err := r.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
	if pr == nil {
		t.Fatalf("publishing on %s: no PUBACK: %v", topic, err)
	}
	return pr.ReasonCode
}

// envelope is an up message of the rogue DMS with records.
func (r *rogueDMS) envelope(recs ...*syncpb.Record) *syncpb.Envelope {
	return &syncpb.Envelope{MessageId: syncproto.NewMessageID(), DmsId: r.ID, SentAtUnixMs: time.Now().UnixMilli(), ProtocolVersion: syncproto.ProtocolVersion,
		Body: &syncpb.Envelope_Up{Up: &syncpb.Up{Records: recs}}}
}

func event(id, device, kind string) *syncpb.Record {
	return &syncpb.Record{RecordId: id, DeviceId: device, Payload: &syncpb.Record_Event{Event: &syncpb.Event{Kind: kind, AtUnixMs: time.Now().UnixMilli()}}}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// probe sends a well-formed event and waits for its ack. The control
// plane's consumer handles messages in order, so every message published
// before has been dealt with when the ack comes; any other down message
// that arrives first is returned (an answer to the bad input). It fails
// t when the probe is not acknowledged within 15 s (the consumer is
// stuck or the connection is gone).
func (r *rogueDMS) probe(t *testing.T) []*syncpb.Envelope {
	t.Helper()
	r.probes++
	id := fmt.Sprintf("probe-%d", r.probes)
	if code := r.publish(t, syncproto.UpTopic(r.ID), mustMarshal(t, r.envelope(event(id, "", "badinput.probe")))); code != 0 {
		t.Fatalf("the probe's PUBACK: reason code %#x", code)
	}
	var others []*syncpb.Envelope
	deadline := time.After(15 * time.Second)
	for {
		select {
		case env := <-r.downs:
			ack := env.GetDown().GetAck()
			if len(ack.GetRecordIds()) == 1 && ack.GetRecordIds()[0] == id {
				return others
			}
			others = append(others, env)
		case <-deadline:
			t.Fatalf("probe %s was not acknowledged within 15 s: the sync consumer is stuck or dropped the link", id)
		}
	}
}

// mqttPayloadCase is a message the rogue DMS publishes on its own up
// topic and what must come of it: nothing (dropped before any database
// work) or an answer that check accepts.
type mqttPayloadCase struct {
	name    string
	payload func(r *rogueDMS) []byte
	// check judges the down messages that answered it; nil: there must
	// be none.
	check func(t *testing.T, answers []*syncpb.Envelope)
}

// rejected wants one ack message rejecting record id (reason holding
// keyword), acknowledging nothing.
func rejected(id, keyword string) func(*testing.T, []*syncpb.Envelope) {
	return func(t *testing.T, answers []*syncpb.Envelope) {
		t.Helper()
		if len(answers) != 1 {
			t.Fatalf("got %d answers, want 1 rejection: %v", len(answers), answers)
		}
		ack := answers[0].GetDown().GetAck()
		if len(ack.GetRecordIds()) != 0 || len(ack.GetRejections()) != 1 || ack.GetRejections()[0].GetRecordId() != id {
			t.Fatalf("got %v, want a rejection of %s only", ack, id)
		}
		if reason := ack.GetRejections()[0].GetReason(); !strings.Contains(reason, keyword) {
			t.Fatalf("got rejection reason %q, want it to say %q", reason, keyword)
		}
	}
}

// refusedEnrollment wants the record acknowledged with an enrollment
// result that carries an error holding keyword and no certificate.
func refusedEnrollment(id, keyword string) func(*testing.T, []*syncpb.Envelope) {
	return func(t *testing.T, answers []*syncpb.Envelope) {
		t.Helper()
		if len(answers) != 1 {
			t.Fatalf("got %d answers, want 1: %v", len(answers), answers)
		}
		down := answers[0].GetDown()
		if ids := down.GetAck().GetRecordIds(); len(ids) != 1 || ids[0] != id {
			t.Fatalf("got ack %v, want %s", down.GetAck(), id)
		}
		if len(down.GetUpdates()) != 1 || down.GetUpdates()[0].GetEnrollmentResult() == nil {
			t.Fatalf("got updates %v, want one enrollment result", down.GetUpdates())
		}
		res := down.GetUpdates()[0].GetEnrollmentResult()
		if len(res.GetCertificateDer()) != 0 || !strings.Contains(res.GetError(), keyword) {
			t.Fatalf("got enrollment result %v, want a refusal saying %q", res, keyword)
		}
	}
}

// mqttPayloadCases: foreignCA is the gateway's edge CA (another DMS's),
// foreignCert a certificate it issued, otherCA an existing CA this DMS
// is not authorized for, victimDMS the gateway's DMS id.
func mqttPayloadCases(t *testing.T, foreignCA string, foreignCert *x509.Certificate, otherCA, victimDMS string) []mqttPayloadCase {
	env := func(r *rogueDMS, recs ...*syncpb.Record) []byte { return mustMarshal(t, r.envelope(recs...)) }
	issued := func(id, caID string, der []byte) *syncpb.Record {
		return &syncpb.Record{RecordId: id, DeviceId: "dev-x", Payload: &syncpb.Record_IssuedCertificate{IssuedCertificate: &syncpb.IssuedCertificate{
			CertificateDer: der, CaId: caID, DeviceId: "dev-x", IssuedAtUnixMs: time.Now().UnixMilli()}}}
	}
	enroll := func(id, caID string, csr []byte) *syncpb.Record {
		return &syncpb.Record{RecordId: id, DeviceId: "dev-y", Payload: &syncpb.Record_EnrollmentRequest{EnrollmentRequest: &syncpb.EnrollmentRequest{
			RequestId: id, CsrDer: csr, CaId: caID, DeviceId: "dev-y", ReceivedAtUnixMs: time.Now().UnixMilli()}}}
	}
	return []mqttPayloadCase{
		{name: "random bytes", payload: func(*rogueDMS) []byte { return []byte("\x00\xffnot protobuf at all\x12\x34") }},
		{name: "empty payload", payload: func(*rogueDMS) []byte { return []byte{} }},
		{name: "protobuf of another message", payload: func(*rogueDMS) []byte {
			return mustMarshal(t, &syncpb.Heartbeat{AgentVersion: "x", QueueDepth: 3})
		}},
		{name: "message over 1 MiB", payload: func(r *rogueDMS) []byte {
			e := r.envelope(&syncpb.Record{RecordId: "big", Payload: &syncpb.Record_Event{Event: &syncpb.Event{Kind: "k", DetailJson: `"` + strings.Repeat("x", 1<<20) + `"`}}})
			return mustMarshal(t, e)
		}},
		{name: "envelope naming another DMS", payload: func(r *rogueDMS) []byte {
			e := r.envelope(event("spoof-1", "", "badinput.spoof"))
			e.DmsId = victimDMS
			return mustMarshal(t, e)
		}},
		{name: "unsupported protocol version", payload: func(r *rogueDMS) []byte {
			e := r.envelope(event("future-1", "", "badinput.future"))
			e.ProtocolVersion = 99
			return mustMarshal(t, e)
		}},
		{name: "protocol version zero", payload: func(r *rogueDMS) []byte {
			e := r.envelope(event("v0-1", "", "badinput.v0"))
			e.ProtocolVersion = 0
			return mustMarshal(t, e)
		}},
		{name: "duplicated record ids", payload: func(r *rogueDMS) []byte {
			return env(r, event("dup-1", "", "badinput.dup"), event("dup-1", "", "badinput.dup"))
		}},
		{name: "501 records", payload: func(r *rogueDMS) []byte {
			var recs []*syncpb.Record
			for i := 0; i < 501; i++ {
				recs = append(recs, event(fmt.Sprintf("many-%d", i), "", "badinput.many"))
			}
			return env(r, recs...)
		}},
		{name: "up message with neither records nor heartbeat", payload: func(r *rogueDMS) []byte { return env(r) }},
		{name: "record id with a space", payload: func(r *rogueDMS) []byte { return env(r, event("bad id", "", "badinput.space")) }},
		{name: "event without a kind", payload: func(r *rogueDMS) []byte { return env(r, event("nokind-1", "", "")) }},
		{name: "down message on the up topic", payload: func(r *rogueDMS) []byte {
			e := r.envelope()
			e.Body = &syncpb.Envelope_Down{Down: &syncpb.Down{Ack: &syncpb.Ack{RecordIds: []string{"x"}}}}
			return mustMarshal(t, e)
		}},
		{name: "event with a NUL byte in the device id", payload: func(r *rogueDMS) []byte {
			return env(r, event("nul-1", "dev\x00ice", "badinput.nul"))
		}},
		{name: "event with a NUL byte in the kind", payload: func(r *rogueDMS) []byte {
			return env(r, event("nul-2", "", "bad\x00kind"))
		}},
		{name: "event at the end of time", payload: func(r *rogueDMS) []byte {
			rec := event("eot-1", "", "badinput.eot")
			rec.GetEvent().AtUnixMs = math.MaxInt64
			return env(r, rec)
		}, check: rejected("eot-1", "at_unix_ms")},
		{name: "heartbeat with a NUL byte in the agent version", payload: func(r *rogueDMS) []byte {
			e := r.envelope()
			e.GetUp().Heartbeat = &syncpb.Heartbeat{AgentVersion: "1.0\x00evil", ProtocolVersion: syncproto.ProtocolVersion}
			return mustMarshal(t, e)
		}},
		{name: "issued certificate of another DMS's edge CA", payload: func(r *rogueDMS) []byte {
			return env(r, issued("foreign-1", foreignCA, foreignCert.Raw))
		}, check: rejected("foreign-1", "not this DMS's edge CA")},
		{name: "issued certificate of an unknown CA", payload: func(r *rogueDMS) []byte {
			return env(r, issued("foreign-2", "00000000-0000-4000-8000-00000000beef", foreignCert.Raw))
		}, check: rejected("foreign-2", "unknown CA")},
		{name: "issued certificate with a CA id that is no UUID", payload: func(r *rogueDMS) []byte {
			return env(r, issued("foreign-3", "edge", foreignCert.Raw))
		}, check: rejected("foreign-3", "not a CA id")},
		{name: "issued certificate that is no DER", payload: func(r *rogueDMS) []byte {
			return env(r, issued("foreign-4", foreignCA, []byte("certainly not DER")))
		}, check: rejected("foreign-4", "not a DER certificate")},
		{name: "enrollment request for an unauthorized CA", payload: func(r *rogueDMS) []byte {
			return env(r, enroll("enr-1", otherCA, newCSR(t, "dev-y")))
		}, check: refusedEnrollment("enr-1", "authorized")},
		{name: "enrollment request with a garbage CSR", payload: func(r *rogueDMS) []byte {
			return env(r, enroll("enr-2", "", []byte("garbage csr")))
		}, check: refusedEnrollment("enr-2", "csr")},
		{name: "revocation report of another DMS's certificate", payload: func(r *rogueDMS) []byte {
			return env(r, &syncpb.Record{RecordId: "revoke-1", Payload: &syncpb.Record_RevocationReport{RevocationReport: &syncpb.RevocationReport{
				SerialHex: strings.ToLower(foreignCert.SerialNumber.Text(16)), Reason: 1, RevokedAtUnixMs: time.Now().UnixMilli()}}})
		}, check: rejected("revoke-1", "not handled")},
	}
}
