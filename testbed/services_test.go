package testbed

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ThalesIgnite/crypto11"
	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"
	"github.com/google/go-tpm/tpm2"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/internal/tpmconn"
)

// assertGone fails t if any process of p is alive.
func assertGone(t *testing.T, name string, p *process) {
	t.Helper()
	if left := p.alive(); len(left) > 0 {
		t.Errorf("%s: processes %v still running after Close", name, left)
	}
}

func TestPostgres(t *testing.T) {
	pg := NewPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	dsn := pg.NewDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting to %s: %v", dsn, err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (1, 'outpost')"); err != nil {
		t.Fatal(err)
	}
	var v, version string
	if err := conn.QueryRow(ctx, "SELECT v, current_setting('server_version_num') FROM t WHERE id = 1").Scan(&v, &version); err != nil {
		t.Fatal(err)
	}
	if v != "outpost" {
		t.Errorf("got %q, want %q", v, "outpost")
	}
	if !strings.HasPrefix(version, pgVersion) {
		t.Errorf("server version %s, want %s.x", version, pgVersion)
	}
	conn.Close(ctx)

	// A second database is isolated from the first.
	other, err := pgx.Connect(ctx, pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "SELECT 1 FROM t"); err == nil {
		t.Error("table t visible from another database")
	}
	other.Close(ctx)

	proc := pg.proc
	if err := pg.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, "postgres", proc)
	if _, err := os.Stat(pg.dir); !os.IsNotExist(err) {
		t.Errorf("directory %s left behind (stat: %v)", pg.dir, err)
	}
}

// TestPostgresRestart: Restart keeps the port and the data, and drops
// the sessions open at the time; Start refuses a running server.
func TestPostgresRestart(t *testing.T) {
	pg := NewPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dsn := pg.NewDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	port, old := pg.Port(), pg.proc
	if err := pg.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	assertGone(t, "postgres before the restart", old)
	if got := pg.Port(); got != port {
		t.Errorf("port after the restart: got %d, want %d", got, port)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Error("a session opened before the restart still works")
	}
	again, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting after the restart: %v", err)
	}
	defer again.Close(context.Background())
	var n int
	if err := again.QueryRow(ctx, "SELECT count(*) FROM t WHERE id = 1").Scan(&n); err != nil || n != 1 {
		t.Errorf("the row written before the restart: got %d, %v; want 1, nil", n, err)
	}
	if err := pg.Start(ctx); err == nil {
		t.Error("Start of a running server succeeded")
	}
}

func TestSoftHSM(t *testing.T) {
	h := NewSoftHSM(t)

	ctx, err := crypto11.Configure(&crypto11.Config{Path: h.Module, TokenLabel: h.Label, Pin: h.PIN})
	if err != nil {
		t.Fatalf("PKCS#11 login to token %q: %v", h.Label, err)
	}
	defer ctx.Close()

	key, err := ctx.GenerateECDSAKeyPair([]byte("test-key"), elliptic.P256())
	if err != nil {
		t.Fatalf("generating a key in the token: %v", err)
	}
	digest := sha256.Sum256([]byte("outpost"))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("signing in the token: %v", err)
	}
	pub, ok := key.Public().(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("public key is %T, want *ecdsa.PublicKey", key.Public())
	}
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		t.Error("token signature does not verify")
	}
	found, err := ctx.FindKeyPair([]byte("test-key"), nil)
	if err != nil || found == nil {
		t.Errorf("finding the key again: got %v, %v", found, err)
	}
}

func TestSoftHSMWrongPIN(t *testing.T) {
	h := NewSoftHSM(t)
	ctx, err := crypto11.Configure(&crypto11.Config{Path: h.Module, TokenLabel: h.Label, Pin: "not-the-pin"})
	if err == nil {
		ctx.Close()
		t.Fatal("login with a wrong PIN succeeded")
	}
}

func TestSwtpm(t *testing.T) {
	s := NewSwtpm(t)

	getRandom := func() []byte {
		t.Helper()
		conn, err := tpmconn.Dial(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		rsp, err := tpm2.GetRandom{BytesRequested: 32}.Execute(conn)
		if err != nil {
			t.Fatalf("TPM2_GetRandom: %v", err)
		}
		if got := len(rsp.RandomBytes.Buffer); got != 32 {
			t.Fatalf("got %d random bytes, want 32", got)
		}
		return rsp.RandomBytes.Buffer
	}
	a, b := getRandom(), getRandom()
	if bytes.Equal(a, b) {
		t.Error("two GetRandom calls returned the same bytes")
	}

	// A reboot keeps the TPM usable without any PowerOn/Startup from us.
	if err := s.Restart(context.Background()); err != nil {
		t.Fatalf("restart: %v", err)
	}
	getRandom()

	proc := s.proc
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, "swtpm", proc)
}

// mqttRoundTrip connects two MQTT v5 clients to m, subscribes with one,
// publishes with the other at QoS 1 and checks the message arrives.
func mqttRoundTrip(t *testing.T, m *Mosquitto, clientCN string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	received := make(chan *paho.Publish, 1)
	connect := func(id string, onPublish func(paho.PublishReceived) (bool, error)) *paho.Client {
		t.Helper()
		conn, err := m.Dial(ctx, clientCN)
		if err != nil {
			t.Fatalf("dialing broker: %v", err)
		}
		cfg := paho.ClientConfig{ClientID: id, Conn: conn}
		if onPublish != nil {
			cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){onPublish}
		}
		c := paho.NewClient(cfg)
		ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
		if err != nil {
			t.Fatalf("MQTT connect %s: %v", id, err)
		}
		if ack.ReasonCode != 0 {
			t.Fatalf("MQTT connect %s: reason code %d", id, ack.ReasonCode)
		}
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
		return c
	}

	sub := connect("sub", func(pr paho.PublishReceived) (bool, error) {
		select {
		case received <- pr.Packet:
		default:
		}
		return true, nil
	})
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "outpost/test/#", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	pub := connect("pub", nil)
	payload := []byte(fmt.Sprintf("hello %d", time.Now().UnixNano()))
	if _, err := pub.Publish(ctx, &paho.Publish{
		Topic:   "outpost/test/a",
		QoS:     1,
		Payload: payload,
		Properties: &paho.PublishProperties{
			User: paho.UserProperties{{Key: "msg_id", Value: "42"}},
		},
	}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case p := <-received:
		if !bytes.Equal(p.Payload, payload) {
			t.Errorf("got payload %q, want %q", p.Payload, payload)
		}
		if got := p.Properties.User.Get("msg_id"); got != "42" {
			t.Errorf("got user property msg_id=%q, want 42 (MQTT v5 properties lost)", got)
		}
	case <-ctx.Done():
		t.Fatal("published message never arrived")
	}
}

func TestMosquitto(t *testing.T) {
	m := NewMosquitto(t, MosquittoOptions{})
	if !strings.HasPrefix(m.URL(), "mqtt://127.0.0.1:") {
		t.Errorf("URL %s, want mqtt://127.0.0.1:port", m.URL())
	}
	mqttRoundTrip(t, m, "")

	proc := m.proc
	if err := m.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, "mosquitto", proc)
}

func TestMosquittoTLSClientCert(t *testing.T) {
	m := NewMosquitto(t, MosquittoOptions{TLS: true, RequireClientCert: true})
	if !strings.HasPrefix(m.URL(), "mqtts://") {
		t.Errorf("URL %s, want mqtts://", m.URL())
	}
	mqttRoundTrip(t, m, "dms-test")

	// Without a client certificate the broker must refuse the client.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := m.Dial(ctx, "")
	if err == nil {
		c := paho.NewClient(paho.ClientConfig{Conn: conn})
		_, err = c.Connect(ctx, &paho.Connect{ClientID: "anon", KeepAlive: 30, CleanStart: true})
		conn.Close()
	}
	if err == nil {
		t.Error("broker accepted a client without a certificate")
	}
}

func TestChromium(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><html><head><title>Outpost test page</title></head><body>
<button id="go" onclick="document.getElementById('out').textContent='clicked '+(1+1)">go</button>
<p id="out">waiting</p></body></html>`)
	}))
	defer srv.Close()

	c := NewChromium(t)
	if !strings.HasPrefix(c.WebSocketURL(), "ws://127.0.0.1:") {
		t.Errorf("DevTools URL %q, want ws://127.0.0.1:port/...", c.WebSocketURL())
	}
	ctx, cancel := c.NewContext(context.Background())
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	defer cancelT()

	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatalf("reading the title: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("go"))); err != nil {
		t.Fatalf("clicking: %v", err)
	}
	out, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("out")))
	if err != nil {
		t.Fatalf("reading the result: %v", err)
	}
	if title != "Outpost test page" {
		t.Errorf("got title %q, want %q", title, "Outpost test page")
	}
	// The page's script ran in the browser: 1+1 was computed there.
	if out != "clicked 2" {
		t.Errorf("got text %q, want %q", out, "clicked 2")
	}
	cancel()

	proc := c.proc
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, "chromium", proc)
}
