package mqttlimit

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

// publish is a PUBLISH packet with a payload of n bytes.
func publish(t *testing.T, n int) []byte {
	t.Helper()
	p := packets.NewControlPacket(packets.PUBLISH)
	p.Content.(*packets.Publish).Topic = "outpost/v1/dms/x/down"
	p.Content.(*packets.Publish).QoS = 1
	p.Content.(*packets.Publish).PacketID = 1
	p.Content.(*packets.Publish).Payload = bytes.Repeat([]byte{'p'}, n)
	var b bytes.Buffer
	if _, err := p.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestConnLimits: packets up to the maximum pass through byte for byte,
// whatever the read sizes; a packet over it fails the read before any
// of it is returned, and the connection is closed; so does a header
// announcing 256 MiB, before its body exists; a remaining length of five
// bytes is malformed.
func TestConnLimits(t *testing.T) {
	const max = 4096
	small, exact := publish(t, 10), publish(t, 0)
	exact = publish(t, max-len(exact)-1) // the remaining length grows to two bytes
	if len(exact) != max {
		t.Fatalf("test packet of %d bytes, want %d", len(exact), max)
	}
	over := publish(t, max)
	huge := []byte{0x32, 0xff, 0xff, 0xff, 0x7f} // PUBLISH QoS 1, 268435455 bytes to follow
	for _, c := range []struct {
		name    string
		stream  [][]byte
		readBuf int
		wantErr error // nil: all of stream comes through
		wantOK  int   // bytes returned before the error
	}{
		{"small and exact packets", [][]byte{small, exact, small}, 4096, nil, 0},
		{"one byte at a time", [][]byte{small, exact}, 1, nil, 0},
		{"over the maximum", [][]byte{small, over}, 4096, ErrPacketTooLarge, len(small)},
		{"over the maximum, one byte at a time", [][]byte{small, over}, 1, ErrPacketTooLarge, len(small) + 2},
		{"256 MiB announced", [][]byte{huge}, 64, ErrPacketTooLarge, 0},
		{"five length bytes", [][]byte{{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}}, 64, errMalformed, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			client, server := net.Pipe()
			go func() {
				for _, p := range c.stream {
					if _, err := server.Write(p); err != nil {
						return
					}
				}
				server.Close()
			}()
			lc := Conn(client, max)
			var got []byte
			buf := make([]byte, c.readBuf)
			var err error
			for {
				var n int
				n, err = lc.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
			}
			want := bytes.Join(c.stream, nil)
			if c.wantErr == nil {
				if !errors.Is(err, io.EOF) || !bytes.Equal(got, want) {
					t.Fatalf("got %d bytes (%v), want all %d", len(got), err, len(want))
				}
				return
			}
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("got %v, want %v", err, c.wantErr)
			}
			if len(got) > c.wantOK || !bytes.Equal(got, want[:len(got)]) {
				t.Errorf("%d bytes came through before the error, want at most %d", len(got), c.wantOK)
			}
			if _, err := lc.Read(buf); !errors.Is(err, c.wantErr) {
				t.Errorf("the next read: %v, want the same error", err)
			}
			if _, err := server.Write([]byte{0}); err == nil {
				t.Error("the connection is still open")
			}
		})
	}
}
