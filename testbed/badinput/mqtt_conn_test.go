package badinput

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/outpost-pki/outpost/proto/syncproto"
)

// mqttConnectCases are CONNECTs the broker must refuse: in the TLS
// handshake (no or an untrusted certificate) or with a CONNACK reason
// code of 0x80 or more (wantCode, when not 0).
func mqttConnectCases(t *testing.T, b *bed, r *rogueDMS, victim string) {
	boot, err := tls.LoadX509KeyPair(b.s.Path("bootstrap-device.pem"), b.s.Path("bootstrap-device.key"))
	if err != nil {
		t.Fatal(err)
	}
	forged := selfSigned(t, r.ID) // the rogue DMS's id, signed by nobody
	cases := []struct {
		name     string
		cert     *tls.Certificate
		cp       *paho.Connect
		wantCode byte
	}{
		{name: "no client certificate", cp: &paho.Connect{ClientID: r.ID, CleanStart: true}},
		{name: "self-signed certificate naming a DMS", cert: &forged, cp: &paho.Connect{ClientID: r.ID, CleanStart: true}},
		{name: "device certificate from the bootstrap CA", cert: &boot, cp: &paho.Connect{ClientID: "bootstrap-device-1", CleanStart: true}},
		{name: "client id of another DMS", cert: &r.Cert, cp: &paho.Connect{ClientID: victim, CleanStart: true}, wantCode: 0x85},
		{name: "will on another DMS's topic", cert: &r.Cert, cp: &paho.Connect{ClientID: r.ID, CleanStart: true,
			WillMessage: &paho.WillMessage{Topic: syncproto.UpTopic(victim), QoS: 1, Payload: []byte("x")}}, wantCode: 0x87},
		{name: "enhanced authentication", cert: &r.Cert, cp: &paho.Connect{ClientID: r.ID, CleanStart: true,
			Properties: &paho.ConnectProperties{AuthMethod: "SCRAM-SHA-1"}}, wantCode: 0x8C},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b.count("mqtt")
			cl, _, ca, err := connectMQTT(b, r.broker, c.cert, c.cp, nil)
			if err == nil {
				_ = cl.Disconnect(&paho.Disconnect{})
				t.Fatalf("the broker accepted the connection (CONNACK %+v)", ca)
			}
			if c.wantCode != 0 {
				if ca == nil {
					t.Fatalf("got no CONNACK (%v), want reason code %#x", err, c.wantCode)
				}
				if ca.ReasonCode != c.wantCode {
					t.Fatalf("got CONNACK reason code %#x, want %#x", ca.ReasonCode, c.wantCode)
				}
			} else if ca != nil && ca.ReasonCode < 0x80 {
				t.Fatalf("got a successful CONNACK %+v", ca)
			}
		})
	}
}

// mqttACLCases are publishes and subscriptions of the authenticated rogue
// DMS outside its own topics: each must get reason code 0x87.
func mqttACLCases(t *testing.T, b *bed, r *rogueDMS, victim string) {
	for _, c := range []struct{ name, topic string }{
		{"publish on another DMS's up topic", syncproto.UpTopic(victim)},
		{"publish on its own down topic", syncproto.DownTopic(r.ID)},
		{"publish on another DMS's down topic", syncproto.DownTopic(victim)},
	} {
		t.Run(c.name, func(t *testing.T) {
			b.count("mqtt")
			if code := r.publish(t, c.topic, mustMarshal(t, r.envelope(event("acl-1", "", "badinput.acl")))); code != 0x87 {
				t.Fatalf("got PUBACK reason code %#x, want 0x87", code)
			}
		})
	}
	for _, c := range []struct{ name, filter string }{
		{"subscribe to another DMS's down topic", syncproto.DownTopic(victim)},
		{"subscribe to the control plane's shared subscription", syncproto.SharedUpSubscription},
		{"subscribe to every topic", "#"},
		{"subscribe to every DMS's up topic", syncproto.UpTopicFilter},
	} {
		t.Run(c.name, func(t *testing.T) {
			b.count("mqtt")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sa, _ := r.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: c.filter, QoS: 1}}})
			if sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 0x87 {
				t.Fatalf("got SUBACK %+v, want reason code 0x87", sa)
			}
		})
	}
}

// mqttOversizedPacket announces a PUBLISH of 2 MiB on a connection of
// its own, over the broker's maximum packet size: the broker must drop
// the connection without reading it.
func mqttOversizedPacket(t *testing.T, b *bed, r *rogueDMS) {
	defer r.up(t)
	t.Run("PUBLISH packet of 2 MiB", func(t *testing.T) {
		b.count("mqtt")
		// The same client id takes over the rogue's session: reconnect
		// it afterwards.
		cl, conn, ca, err := connectMQTT(b, r.broker, &r.Cert, &paho.Connect{ClientID: r.ID, CleanStart: true, KeepAlive: 30}, nil)
		if err != nil {
			t.Fatalf("connecting: %v (%+v)", err, ca)
		}
		// Fixed header: PUBLISH QoS 0, remaining length 2 MiB (varint).
		n := 2 << 20
		hdr := []byte{0x30}
		for {
			d := byte(n % 128)
			n /= 128
			if n > 0 {
				d |= 0x80
			}
			hdr = append(hdr, d)
			if n == 0 {
				break
			}
		}
		if _, err := conn.Write(append(hdr, make([]byte, 1024)...)); err != nil {
			t.Fatalf("writing: %v", err)
		}
		select {
		case <-cl.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the broker kept the connection 10 s after an oversized packet header")
		}
	})
}
