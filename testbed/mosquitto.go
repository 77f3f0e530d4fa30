package testbed

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/outpost-pki/outpost/internal/testpki"
)

// Mosquitto is a mosquitto MQTT broker (MQTT 3.1.1 and 5) on loopback,
// optionally behind TLS with certificates from a throwaway test CA.
type Mosquitto struct {
	opts MosquittoOptions
	dir  string
	port int
	bin  string
	proc *process

	certFile, keyFile string // server certificate chain and key, with TLS

	// CA issued the broker's server certificate and, with
	// RequireClientCert, verifies client certificates. Nil without TLS.
	CA *testpki.CA
}

// MosquittoOptions tunes StartMosquitto. The zero value is a plain-TCP
// broker that accepts anonymous clients.
type MosquittoOptions struct {
	// TLS serves MQTT over TLS (TLS 1.2 minimum) with a server certificate
	// for 127.0.0.1 and localhost.
	TLS bool
	// RequireClientCert (with TLS) requires a client certificate issued by
	// CA; the certificate's common name becomes the MQTT username.
	RequireClientCert bool
	// Config holds extra mosquitto.conf lines appended to the listener.
	Config string
	// ExtraClientCAs (PEM) are trusted for client certificates besides CA
	// (for instance the control plane's DMS manager CA).
	ExtraClientCAs []byte
	// Persistent keeps sessions and queued QoS 1 messages on disk across
	// Restart.
	Persistent bool
	// LogFile receives the broker's log (appended to across Restart).
	// Default: mosquitto.log in the broker's directory, removed by Close.
	LogFile string
}

// NewMosquitto starts a broker for t and stops it when t ends.
func NewMosquitto(t testing.TB, opts MosquittoOptions) *Mosquitto {
	t.Helper()
	m, err := StartMosquitto(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting mosquitto: %v", err)
	}
	register(t, "mosquitto", m)
	return m
}

// StartMosquitto writes a configuration and starts the broker.
func StartMosquitto(ctx context.Context, opts MosquittoOptions) (*Mosquitto, error) {
	if opts.RequireClientCert && !opts.TLS {
		return nil, errors.New("mosquitto: RequireClientCert needs TLS")
	}
	bin, err := lookBinary("mosquitto", "OUTPOST_MOSQUITTO", "mosquitto", "/usr/sbin/mosquitto")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "outpost-mosquitto-")
	if err != nil {
		return nil, fmt.Errorf("mosquitto: creating directory: %w", err)
	}
	m := &Mosquitto{opts: opts, dir: dir, bin: bin}
	if opts.TLS {
		if err := m.writeTLSFiles(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		err = m.start(ctx)
		if err == nil {
			return m, nil
		}
		if !errors.Is(err, errPortTaken) || attempt == 4 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

func (m *Mosquitto) writeTLSFiles() error {
	// The broker checks certificates against the real time, so this PKI
	// runs on the wall clock rather than testpki's fixed one.
	pki := testpki.New(testpki.WithClock(time.Now))
	m.CA = pki.Root("Outpost Test Broker CA")
	leaf := m.CA.Leaf("127.0.0.1",
		testpki.DNSNames("localhost"),
		testpki.IPAddresses(net.IPv4(127, 0, 0, 1)),
		testpki.ExtKeyUsage(x509.ExtKeyUsageServerAuth))
	var err error
	if m.certFile, m.keyFile, err = leaf.WriteFiles(m.dir); err != nil {
		return fmt.Errorf("mosquitto: writing server certificate: %w", err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "ca.pem"), append(m.CA.CertPEM(), m.opts.ExtraClientCAs...), 0o644); err != nil {
		return fmt.Errorf("mosquitto: writing CA: %w", err)
	}
	return nil
}

func (m *Mosquitto) config() string {
	var b strings.Builder
	if os.Geteuid() == 0 {
		// Run as root, mosquitto switches to the `mosquitto` user unless
		// told to stay; the files in m.dir belong to root.
		b.WriteString("user root\n")
	} else if u, err := user.Current(); err == nil {
		fmt.Fprintf(&b, "user %s\n", u.Username)
	}
	if m.opts.Persistent {
		fmt.Fprintf(&b, "persistence true\npersistence_location %s/\nautosave_interval 1\n", m.dir)
	} else {
		b.WriteString("persistence false\n")
	}
	b.WriteString("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nconnection_messages true\n")
	fmt.Fprintf(&b, "listener %d 127.0.0.1\n", m.port)
	if m.opts.TLS {
		fmt.Fprintf(&b, "cafile %s\ncertfile %s\nkeyfile %s\ntls_version tlsv1.2\n",
			filepath.Join(m.dir, "ca.pem"), m.certFile, m.keyFile)
		if m.opts.RequireClientCert {
			b.WriteString("require_certificate true\nuse_identity_as_username true\n")
		} else {
			b.WriteString("allow_anonymous true\n")
		}
	} else {
		b.WriteString("allow_anonymous true\n")
	}
	if m.opts.Config != "" {
		b.WriteString(m.opts.Config)
		b.WriteString("\n")
	}
	return b.String()
}

func (m *Mosquitto) start(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	m.port = port
	conf := filepath.Join(m.dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(m.config()), 0o600); err != nil {
		return fmt.Errorf("mosquitto: writing config: %w", err)
	}
	proc, err := startTCPService(procSpec{
		name:    "mosquitto",
		argv:    []string{m.bin, "-c", conf},
		dir:     m.dir,
		logPath: m.logFile(),
	}, m.Addr())
	if err != nil {
		return err
	}
	m.proc = proc
	return nil
}

// Restart stops the broker and starts it again on the same port (with
// Persistent, sessions and queued messages survive).
func (m *Mosquitto) Restart(ctx context.Context) error {
	if err := m.proc.stop(syscall.SIGTERM, 10*time.Second); err != nil {
		return err
	}
	conf := filepath.Join(m.dir, "mosquitto.conf")
	proc, err := startTCPService(procSpec{
		name:    "mosquitto",
		argv:    []string{m.bin, "-c", conf},
		dir:     m.dir,
		logPath: m.logFile(),
	}, m.Addr())
	if err != nil {
		return err
	}
	m.proc = proc
	return nil
}

// Addr returns the broker's host:port.
func (m *Mosquitto) Addr() string { return fmt.Sprintf("127.0.0.1:%d", m.port) }

// URL returns the broker URL: mqtt://127.0.0.1:port or mqtts://... with TLS.
func (m *Mosquitto) URL() string {
	if m.opts.TLS {
		return "mqtts://" + m.Addr()
	}
	return "mqtt://" + m.Addr()
}

// ClientTLS returns a TLS configuration for a client of this broker: it
// trusts CA and, when clientCN is not empty, presents a client certificate
// with that common name issued by CA. It fails without TLS.
func (m *Mosquitto) ClientTLS(clientCN string) (*tls.Config, error) {
	if m.CA == nil {
		return nil, errors.New("mosquitto: broker runs without TLS")
	}
	cfg := &tls.Config{RootCAs: m.CA.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if clientCN != "" {
		leaf := m.CA.Leaf(clientCN, testpki.ExtKeyUsage(x509.ExtKeyUsageClientAuth))
		cfg.Certificates = []tls.Certificate{leaf.TLSCertificate()}
	}
	return cfg, nil
}

// Dial opens a connection to the broker (TLS when the broker uses it, with
// the client certificate for clientCN if not empty), ready to hand to a
// paho client. The connection is wrapped so that paho serialises whole
// packets: it writes from several goroutines, and a packet written in
// pieces can interleave with another one (the broker then reports a
// malformed packet; seen with TLS).
func (m *Mosquitto) Dial(ctx context.Context, clientCN string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if !m.opts.TLS {
		conn, err := d.DialContext(ctx, "tcp", m.Addr())
		if err != nil {
			return nil, err
		}
		return packets.NewThreadSafeConn(conn), nil
	}
	cfg, err := m.ClientTLS(clientCN)
	if err != nil {
		return nil, err
	}
	td := &tls.Dialer{NetDialer: d, Config: cfg}
	conn, err := td.DialContext(ctx, "tcp", m.Addr())
	if err != nil {
		return nil, err
	}
	return packets.NewThreadSafeConn(conn), nil
}

// Close stops the broker and removes its directory.
func (m *Mosquitto) Close() error {
	return shutdown(m.proc, syscall.SIGTERM, 10*time.Second, m.dir)
}

func (m *Mosquitto) logs() []string { return []string{m.logFile()} }

func (m *Mosquitto) logFile() string {
	if m.opts.LogFile != "" {
		return m.opts.LogFile
	}
	return filepath.Join(m.dir, "mosquitto.log")
}
