package syncclient

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

type emptyOutbox struct{}

func (emptyOutbox) Peek(int) ([]store.OutboxRecord, error) { return nil, nil }
func (emptyOutbox) Ack(...string) (int, error)             { return 0, nil }
func (emptyOutbox) Depth() (int, error)                    { return 0, nil }

// TestOversizedPacketFromBroker: the client announces
// syncproto.MaxPacketSize as its Maximum Packet Size in the CONNECT, and
// a broker that sends a packet announcing 200 MiB anyway (compromised or
// misconfigured) gets the connection closed before the client allocates
// it; the client connects again.
func TestOversizedPacketFromBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dmsID := "00000000-0000-0000-0000-0000000000aa"
	c := &Client{Store: emptyOutbox{}, DMSID: dmsID, BrokerURL: "mqtt://" + ln.Addr().String(), Heartbeat: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	accept := func() (net.Conn, *packets.Connect) {
		t.Helper()
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Second))
		conn, err := ln.Accept()
		if err != nil {
			t.Fatalf("the client did not connect: %v", err)
		}
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		p, err := packets.ReadPacket(conn)
		if err != nil {
			t.Fatalf("reading CONNECT: %v", err)
		}
		ack := packets.NewControlPacket(packets.CONNACK)
		if _, err := ack.WriteTo(conn); err != nil {
			t.Fatal(err)
		}
		return conn, p.Content.(*packets.Connect)
	}
	conn, cp := accept()
	defer conn.Close()
	if cp.Properties == nil || cp.Properties.MaximumPacketSize == nil || *cp.Properties.MaximumPacketSize != syncproto.MaxPacketSize {
		t.Errorf("CONNECT maximum packet size: %+v, want %d", cp.Properties, syncproto.MaxPacketSize)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	// PUBLISH QoS 1 on the down topic announcing 200 MiB, and a first
	// kilobyte of it.
	size := 200 << 20
	header := []byte{0x32, byte(size&0x7f | 0x80), byte(size>>7&0x7f | 0x80), byte(size>>14&0x7f | 0x80), byte(size >> 21)}
	if _, err := conn.Write(append(header, make([]byte, 1024)...)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		// Whatever the client sent first (a SUBSCRIBE): read on.
		buf := make([]byte, 4096)
		for err == nil {
			_, err = conn.Read(buf)
		}
	}
	t.Logf("the client closed the connection %v after the oversized header", time.Since(start).Round(time.Millisecond))
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("the client allocated %d MiB after the oversized header", grew>>20)
	}
	conn2, _ := accept()
	conn2.Close()
}
