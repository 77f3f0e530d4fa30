package rotation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// Prober reads the certificate chain a device presents (leaf first).
type Prober interface {
	Probe(ctx context.Context, d Device) ([]*x509.Certificate, error)
}

// TLSProber connects to the device's address with TLS and returns the
// chain it presents. It does not verify anything while connecting
// (InsecureSkipVerify): it only reads the certificate, which [CheckDue]
// then verifies against the gateway's CAs. Nothing is sent over the
// connection; it is closed after the handshake.
type TLSProber struct {
	// Timeout bounds the connection and handshake. Default 10s.
	Timeout time.Duration
}

// Probe implements Prober.
func (p TLSProber) Probe(ctx context.Context, d Device) ([]*x509.Certificate, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dialer := &tls.Dialer{Config: &tls.Config{
		// Only to read the presented certificate: CheckDue verifies it.
		InsecureSkipVerify: true, //nolint:gosec // verified by CheckDue, nothing is sent
		ServerName:         serverName(d),
		MinVersion:         tls.VersionTLS12,
	}}
	conn, err := dialer.DialContext(ctx, "tcp", d.Address)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("the device presented no certificate")
	}
	return certs, nil
}

// serverName is the SNI for d: server_name, else the address's host when
// it is a name (not an IP address).
func serverName(d Device) string {
	if d.ServerName != "" {
		return d.ServerName
	}
	host, _, err := net.SplitHostPort(d.Address)
	if err != nil || net.ParseIP(host) != nil {
		return ""
	}
	return host
}

// Verdict is whether a device needs a rotation, and why.
type Verdict struct {
	Due    bool
	Reason string
	// Serial is the presented certificate's serial (lowercase hex), ""
	// when none was read.
	Serial   string
	NotAfter time.Time
}

// CheckDue decides whether a device presenting chain (leaf first; nil
// when none could be read, probeErr says why) must be rotated at now: when
// it presents no certificate, one that does not chain to roots (the
// gateway's CAs) with the rest of the chain as intermediates, one that
// does not name deviceID (common name or subjectAltName), or one with
// less than renewBefore left (0: a third of its lifetime). A pure
// function of its arguments.
func CheckDue(now time.Time, deviceID string, chain []*x509.Certificate, probeErr error, roots *x509.CertPool, renewBefore time.Duration) Verdict {
	if len(chain) == 0 {
		why := "no certificate presented"
		if probeErr != nil {
			why += ": " + probeErr.Error()
		}
		return Verdict{Due: true, Reason: why}
	}
	leaf := chain[0]
	v := Verdict{Serial: serialHex(leaf), NotAfter: leaf.NotAfter}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if roots == nil {
		roots = x509.NewCertPool()
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		v.Due, v.Reason = true, "not issued by this gateway's CAs (or expired): "+err.Error()
		return v
	}
	if !NamesDevice(leaf.Subject.CommonName, leaf.DNSNames, uriStrings(leaf), deviceID) {
		v.Due, v.Reason = true, fmt.Sprintf("the certificate is for %q, not for device %q", leaf.Subject.CommonName, deviceID)
		return v
	}
	if renewBefore <= 0 {
		renewBefore = leaf.NotAfter.Sub(leaf.NotBefore) / 3
	}
	from := leaf.NotAfter.Add(-renewBefore)
	if now.Before(from) {
		v.Reason = fmt.Sprintf("valid until %s; rotation from %s", leaf.NotAfter.UTC().Format(time.RFC3339), from.UTC().Format(time.RFC3339))
		return v
	}
	v.Due, v.Reason = true, fmt.Sprintf("expires at %s (rotation due since %s)", leaf.NotAfter.UTC().Format(time.RFC3339), from.UTC().Format(time.RFC3339))
	return v
}

// NamesDevice reports whether a certificate or CSR with common name cn,
// DNS names dns and URIs uris is for device id: the common name or one of
// the DNS or URI subjectAltNames is the id.
func NamesDevice(cn string, dns, uris []string, id string) bool {
	return cn == id || slices.Contains(dns, id) || slices.Contains(uris, id)
}

func uriStrings(c *x509.Certificate) []string {
	out := make([]string, 0, len(c.URIs))
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}

func serialHex(c *x509.Certificate) string { return strings.ToLower(c.SerialNumber.Text(16)) }
