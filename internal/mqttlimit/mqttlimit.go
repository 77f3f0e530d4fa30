// Package mqttlimit caps the MQTT packets a client reads. paho.golang
// reads a packet by allocating the remaining length its fixed header
// announces (up to 256 MiB) before reading the body, and ignores the
// Maximum Packet Size the client sent in its CONNECT: one header from a
// compromised or misconfigured broker would make a gateway allocate a
// quarter of a gigabyte. Conn checks each fixed header as it streams by
// and ends the connection before paho sees a header over the limit.
package mqttlimit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// ErrPacketTooLarge is returned by Read once a packet announced more
// than the maximum size; the connection is closed.
var ErrPacketTooLarge = errors.New("mqttlimit: packet larger than the maximum packet size")

// errMalformed: a remaining length of more than four bytes (MQTT 5
// 1.5.5).
var errMalformed = errors.New("mqttlimit: malformed remaining length")

// Conn returns c with reads checked: a packet whose size (fixed header
// included, as MQTT 5 3.1.2.11 counts it) is over max fails the read with
// ErrPacketTooLarge and closes c. c must be read from its first byte, by
// one goroutine at a time (paho reads from one).
func Conn(c net.Conn, max uint32) net.Conn { return &conn{Conn: c, max: max} }

type conn struct {
	net.Conn
	max uint32

	mu  sync.Mutex
	err error
	// The scanner: in a body (remaining > 0), else at a type byte
	// (!inLength), else inside the remaining length.
	inLength  bool
	lenBytes  int
	length    uint64
	mult      uint64
	remaining uint64
}

// Read reads from the connection and checks what it read.
func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(p)
	if serr := c.scan(p[:n]); serr != nil {
		c.err = serr
		_ = c.Conn.Close()
		return 0, serr
	}
	return n, err
}

// scan follows the packet framing over b.
func (c *conn) scan(b []byte) error {
	for i := 0; i < len(b); {
		switch {
		case c.remaining > 0:
			k := min(c.remaining, uint64(len(b)-i))
			c.remaining -= k
			i += int(k)
		case !c.inLength:
			c.inLength, c.lenBytes, c.length, c.mult = true, 0, 0, 1
			i++
		default:
			x := b[i]
			i++
			c.length += uint64(x&0x7f) * c.mult
			c.mult *= 128
			c.lenBytes++
			if x&0x80 != 0 {
				if c.lenBytes == 4 {
					return errMalformed
				}
				continue
			}
			if size := 1 + uint64(c.lenBytes) + c.length; size > uint64(c.max) {
				return fmt.Errorf("%w: %d bytes, at most %d", ErrPacketTooLarge, size, c.max)
			}
			c.inLength, c.remaining = false, c.length
		}
	}
	return nil
}

// Dial connects to addr (over TLS with cfg, plain TCP when cfg is nil)
// within ctx and returns the connection with its reads capped at max
// bytes per packet and its writes safe for concurrent use (as paho
// needs).
func Dial(ctx context.Context, cfg *tls.Config, addr string, max uint32) (net.Conn, error) {
	var c net.Conn
	var err error
	if cfg != nil {
		c, err = (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	} else {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	return packets.NewThreadSafeConn(Conn(c, max)), nil
}

// AutopahoTLS reports whether autopaho dials a broker URL's scheme over
// TLS (its schemes for TLS: ssl, tls, mqtts, mqtt+ssl, tcps).
func AutopahoTLS(scheme string) bool {
	switch scheme {
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		return true
	}
	return false
}

// Autopaho makes an autopaho client announce max as its Maximum Packet
// Size in its CONNECT (a broker then discards larger messages for it) and
// enforce it on every connection it dials (paho would allocate whatever a
// packet header announces): it sets cfg's AttemptConnection and
// ConnectPacketBuilder.
func Autopaho(cfg *autopaho.ClientConfig, max uint32) {
	cfg.AttemptConnection = func(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
		tc := cfg.TlsCfg
		if !AutopahoTLS(u.Scheme) {
			tc = nil
		}
		return Dial(ctx, tc, u.Host, max)
	}
	cfg.ConnectPacketBuilder = func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
		if cp.Properties == nil {
			cp.Properties = &paho.ConnectProperties{}
		}
		cp.Properties.MaximumPacketSize = new(max)
		return cp, nil
	}
}
