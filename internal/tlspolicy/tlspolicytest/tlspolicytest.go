// Package tlspolicytest holds what the listeners' limits tests share: the
// clients a listener following tlspolicy must refuse or serve, and a
// slowloris client.
package tlspolicytest

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// Client is a TLS client configuration and the version a listener
// following tlspolicy must settle on with it (0: refused).
type Client struct {
	Name string
	Cfg  *tls.Config
	Want uint16
}

// Clients are the legacy clients to refuse (TLS 1.1, TLS 1.2 offering only
// CBC or only RSA key exchange suites) and the modern ones to serve.
func Clients() []Client {
	return []Client{
		{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, 0},
		{"TLS 1.2 CBC only", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}}, 0},
		{"TLS 1.2 RSA key exchange", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_128_CBC_SHA}}, 0},
		{"TLS 1.2 ECDHE AEAD", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, tls.VersionTLS12},
		{"default client", &tls.Config{}, tls.VersionTLS13},
	}
}

// Check runs each client through handshake as a subtest of t: refused
// when Want is 0, else served with version Want.
func Check(t *testing.T, clients []Client, handshake func(*tls.Config) (tls.ConnectionState, error)) {
	t.Helper()
	for _, c := range clients {
		t.Run(c.Name, func(t *testing.T) {
			st, err := handshake(c.Cfg)
			switch {
			case c.Want == 0 && err == nil:
				t.Errorf("handshake succeeded (version %x, %s), want it refused", st.Version, tls.CipherSuiteName(st.CipherSuite))
			case c.Want != 0 && (err != nil || st.Version != c.Want):
				t.Errorf("got %v (version %x), want version %x", err, st.Version, c.Want)
			}
		})
	}
}

// Slowloris writes b to conn one byte every interval from another
// goroutine, reads until the peer closes, and returns how long after
// start that was (limit when it did not close by then).
func Slowloris(conn net.Conn, b []byte, interval, limit time.Duration, start time.Time) time.Duration {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for _, c := range b {
			if _, err := conn.Write([]byte{c}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	_ = conn.SetReadDeadline(start.Add(limit))
	_, _ = io.Copy(io.Discard, conn)
	return time.Since(start)
}
