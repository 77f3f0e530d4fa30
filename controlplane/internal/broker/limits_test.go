package broker

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/outpost-pki/outpost/internal/tlspolicy/tlspolicytest"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// TestListenerTLSPolicy: the broker's listener refuses TLS 1.1 and TLS
// 1.2 clients offering only CBC suites or only RSA key exchange (with a
// valid DMS certificate: the refusal is the protocol's, not the
// identity's); a TLS 1.2 client with an ECDHE AEAD suite and a default
// (TLS 1.3) client connect.
func TestListenerTLSPolicy(t *testing.T) {
	e := newEnv(t)
	_, cert := e.newDMS()
	dial := func(c *tls.Config) (tls.ConnectionState, error) {
		c = c.Clone()
		c.RootCAs, c.ServerName, c.Certificates = e.srvCA.Pool(), "127.0.0.1", []tls.Certificate{cert}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", e.b.Addr(), c)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer conn.Close()
		return conn.ConnectionState(), nil
	}
	tlspolicytest.Check(t, tlspolicytest.Clients(), dial)
}

// TestSlowClientsDisconnected: a client that sends one byte a second
// (slowloris), before the TLS handshake or after it in its CONNECT
// packet, is disconnected once ConnectTimeout has passed since it
// connected, however steadily it sends.
func TestSlowClientsDisconnected(t *testing.T) {
	e := newEnv(t)
	e.cfg.ConnectTimeout = 2 * time.Second
	e.restart()
	dmsID, cert := e.newDMS()
	var connect bytes.Buffer
	cp := packets.NewControlPacket(packets.CONNECT)
	cp.Content.(*packets.Connect).ClientID = dmsID
	cp.Content.(*packets.Connect).KeepAlive = 30
	cp.Content.(*packets.Connect).CleanStart = true
	if _, err := cp.WriteTo(&connect); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		dial  func() (net.Conn, error)
		bytes []byte
	}{
		{"before the handshake", func() (net.Conn, error) { return net.Dial("tcp", e.b.Addr()) },
			// A TLS record header of a ClientHello, then its body, never whole.
			append([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}, make([]byte, 64)...)},
		{"in the CONNECT packet", func() (net.Conn, error) {
			return tls.Dial("tcp", e.b.Addr(), &tls.Config{RootCAs: e.srvCA.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		}, connect.Bytes()},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			conn, err := c.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			elapsed := tlspolicytest.Slowloris(conn, c.bytes[:len(c.bytes)-1], time.Second, 3*e.cfg.ConnectTimeout, start)
			if elapsed < e.cfg.ConnectTimeout-200*time.Millisecond || elapsed > e.cfg.ConnectTimeout+time.Second {
				t.Errorf("disconnected after %v, want after the connect timeout %v (+1 s)", elapsed, e.cfg.ConnectTimeout)
			}
		})
	}
}

// TestOversizedPacketRefused: a DMS that sends a PUBLISH larger than the
// maximum packet size (advertised in the CONNACK) is disconnected with
// reason 0x95 Packet too large, and its message reaches nobody; a packet
// of exactly the maximum size gets through.
func TestOversizedPacketRefused(t *testing.T) {
	e := newEnv(t)
	e.cfg.MaxPacketSize = 4096
	e.restart()
	cpc := e.controlPlane("cp-limits")
	dmsID, cert := e.newDMS()
	conn, err := tls.Dial("tcp", e.b.Addr(), &tls.Config{RootCAs: e.srvCA.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(waitTimeout))
	send := func(p *packets.ControlPacket) {
		t.Helper()
		if _, err := p.WriteTo(conn); err != nil {
			t.Fatalf("sending %s: %v", p, err)
		}
	}
	connect := packets.NewControlPacket(packets.CONNECT)
	connect.Content.(*packets.Connect).ClientID = dmsID
	connect.Content.(*packets.Connect).KeepAlive = 30
	connect.Content.(*packets.Connect).CleanStart = true
	send(connect)
	ack, err := packets.ReadPacket(conn)
	if err != nil {
		t.Fatal(err)
	}
	ca, ok := ack.Content.(*packets.Connack)
	if !ok || ca.ReasonCode != 0 || ca.Properties == nil || ca.Properties.MaximumPacketSize == nil || *ca.Properties.MaximumPacketSize != 4096 {
		t.Fatalf("connack: %v, want success advertising a maximum packet size of 4096", ack)
	}
	publish := func(id uint16, size int) {
		p := packets.NewControlPacket(packets.PUBLISH)
		pub := p.Content.(*packets.Publish)
		pub.Topic, pub.QoS, pub.PacketID, pub.Payload = syncproto.UpTopic(dmsID), 1, id, bytes.Repeat([]byte{'x'}, size)
		send(p)
	}
	// 1 (type) + 2 (remaining length) + 2+len(topic) + 2 (packet id) +
	// 1 (no properties) + payload = 4096.
	fits := 4096 - 3 - 2 - len(syncproto.UpTopic(dmsID)) - 2 - 1
	publish(1, fits)
	if p, err := packets.ReadPacket(conn); err != nil || p.Type != packets.PUBACK || p.Content.(*packets.Puback).ReasonCode != 0 {
		t.Fatalf("a packet of the maximum size: got %v (%v), want a PUBACK", p, err)
	}
	if m := cpc.next(t); len(m.Payload) != fits {
		t.Fatalf("the control plane got %d bytes, want %d", len(m.Payload), fits)
	}
	// mochi compares the remaining length plus one with the maximum (it
	// leaves out the 1 to 4 bytes of the length itself), so a packet a
	// few bytes over still passes: 64 bytes over does not.
	publish(2, fits+64)
	p, err := packets.ReadPacket(conn)
	switch {
	case err == nil && p.Type == packets.DISCONNECT:
		if rc := p.Content.(*packets.Disconnect).ReasonCode; rc != 0x95 {
			t.Errorf("DISCONNECT reason %#x, want 0x95 Packet too large", rc)
		}
		if _, err := packets.ReadPacket(conn); err == nil {
			t.Error("the connection stays open after the DISCONNECT")
		}
	case err == nil:
		t.Fatalf("an oversized packet got %v, want a DISCONNECT", p)
	case errors.Is(err, io.EOF):
		t.Log("the broker closed the connection without a DISCONNECT")
	default:
		t.Fatalf("after an oversized packet: %v", err)
	}
	select {
	case m := <-cpc.msgs:
		t.Errorf("the oversized message reached the control plane (%d bytes)", len(m.Payload))
	case <-time.After(500 * time.Millisecond):
	}
}
