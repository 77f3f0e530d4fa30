// Package tpmconn carries TPM 2.0 commands over a byte stream: a TCP
// connection to an swtpm "socket" server (raw commands, the protocol of
// tpm2-tools' swtpm TCTI) or a TPM character device.
//
// go-tpm's generic stream wrapper issues one Read per response, which can
// return half a response on a socket; this transport reads the response
// header first and then exactly the size it announces.
package tpmconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// headerSize is the size of a TPM 2.0 response header: tag (2), size (4),
// response code (4).
const headerSize = 10

// maxResponse caps what a response header may announce. TPM 2.0 responses
// are bounded by MAX_RESPONSE_SIZE (4096 on common TPMs); a larger value
// means a corrupt or hostile peer, and reading it would let the peer make
// us allocate without bound.
const maxResponse = 64 << 10

// DefaultTimeout bounds one command round trip on a socket.
const DefaultTimeout = 30 * time.Second

// ErrResponseTooLarge is returned when a response header announces more
// than maxResponse bytes.
var ErrResponseTooLarge = errors.New("tpmconn: response larger than 64 KiB")

// Conn is a TPM transport over a stream. It is safe for concurrent use:
// commands are serialised, as the TPM requires.
type Conn struct {
	mu      sync.Mutex
	rw      io.ReadWriteCloser
	timeout time.Duration
}

// Dial connects to an swtpm server socket at addr ("host:port").
func Dial(addr string) (*Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("tpmconn: dialing %s: %w", addr, err)
	}
	return New(c), nil
}

// New wraps an open stream to a TPM.
func New(rw io.ReadWriteCloser) *Conn {
	return &Conn{rw: rw, timeout: DefaultTimeout}
}

// Response codes after which the TPM wants the same command again
// (TPM 2.0 Part 2, 6.6.3): TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING.
const (
	rcRetry   = 0x922
	rcYielded = 0x908
	rcTesting = 0x90A
)

// maxAttempts bounds resending a command the TPM asked to retry; with the
// doubling back-off below that is about 4 seconds in all.
const maxAttempts = 12

// Send writes one command and returns the complete response, resending it
// (with back-off) while the TPM answers that it is busy.
func (c *Conn) Send(cmd []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	backoff := time.Millisecond
	for attempt := 1; ; attempt++ {
		rsp, err := c.roundTrip(cmd)
		if err != nil {
			return nil, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcRetry, rcYielded, rcTesting:
			if attempt < maxAttempts {
				time.Sleep(backoff)
				backoff *= 2
				continue
			}
		}
		return rsp, nil
	}
}

func (c *Conn) roundTrip(cmd []byte) ([]byte, error) {
	if nc, ok := c.rw.(net.Conn); ok && c.timeout > 0 {
		_ = nc.SetDeadline(time.Now().Add(c.timeout))
		defer nc.SetDeadline(time.Time{})
	}
	if _, err := c.rw.Write(cmd); err != nil {
		return nil, fmt.Errorf("tpmconn: writing command: %w", err)
	}
	var hdr [headerSize]byte
	if _, err := io.ReadFull(c.rw, hdr[:]); err != nil {
		return nil, fmt.Errorf("tpmconn: reading response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize {
		return nil, fmt.Errorf("tpmconn: response announces %d bytes, less than its header", size)
	}
	if size > maxResponse {
		return nil, ErrResponseTooLarge
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(c.rw, rsp[headerSize:]); err != nil {
		return nil, fmt.Errorf("tpmconn: reading response body: %w", err)
	}
	return rsp, nil
}

// Close closes the stream.
func (c *Conn) Close() error { return c.rw.Close() }

var _ transport.TPMCloser = (*Conn)(nil)
