// Package sdnotifytest plays systemd's side of sd_notify in tests: a
// datagram socket whose messages a test reads.
package sdnotifytest

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Socket is a listening notification socket.
type Socket struct {
	// Path is the value for NOTIFY_SOCKET.
	Path string
	msgs chan string
}

// Listen opens a socket in a temporary directory, closed when t ends.
func Listen(t testing.TB) *Socket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	return listenAt(t, path, path)
}

// ListenAbstract opens a socket in Linux's abstract namespace (NOTIFY_SOCKET
// "@name").
func ListenAbstract(t testing.TB, name string) *Socket {
	t.Helper()
	return listenAt(t, "\x00"+name, "@"+name)
}

func listenAt(t testing.TB, addr, env string) *Socket {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &Socket{Path: env, msgs: make(chan string, 1000)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(s.msgs)
				return
			}
			s.msgs <- string(buf[:n])
		}
	}()
	return s
}

// Next returns the next message, or fails t after within.
func (s *Socket) Next(t testing.TB, within time.Duration) string {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-time.After(within):
		t.Fatalf("no sd_notify message within %v", within)
		return ""
	}
}

// WaitFor reads messages until one contains want, or fails t after
// within.
func (s *Socket) WaitFor(t testing.TB, want string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-s.msgs:
			if strings.Contains(m, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no sd_notify %q within %v", want, within)
		}
	}
}

// Drain discards messages for d and returns how many arrived.
func (s *Socket) Drain(d time.Duration) int {
	n := 0
	deadline := time.After(d)
	for {
		select {
		case <-s.msgs:
			n++
		case <-deadline:
			return n
		}
	}
}

// Count counts the messages equal to msg arriving during d.
func (s *Socket) Count(msg string, d time.Duration) int {
	n := 0
	deadline := time.After(d)
	for {
		select {
		case m := <-s.msgs:
			if m == msg {
				n++
			}
		case <-deadline:
			return n
		}
	}
}
