// Package tlspolicy is the TLS policy of every Outpost listener (the
// control plane's API, dashboard, OCSP and CRL server, the embedded MQTT
// broker and the agent's EST server) and of the connections Outpost makes
// to its own services and to webhooks (Client). TLS 1.2 is the minimum; with TLS
// 1.2 only ECDHE key exchange (forward secrecy) with AEAD ciphers is
// offered: no RSA key exchange, no CBC (Lucky13-style padding oracles),
// no 3DES or RC4. TLS 1.3 is preferred: crypto/tls negotiates it
// whenever the peer offers it, and its suites (all AEAD) are not
// configurable.
package tlspolicy

import (
	"crypto/tls"
	"net/http"
	"slices"
)

// MinVersion is the lowest TLS version a listener accepts.
const MinVersion = tls.VersionTLS12

// cipherSuites are the TLS 1.2 suites, in crypto/tls's preference order
// (AES-GCM first where the CPU has AES instructions, ChaCha20-Poly1305
// otherwise: crypto/tls reorders them by hardware support).
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// CipherSuites returns the TLS 1.2 cipher suites a listener offers (a
// new slice each time).
func CipherSuites() []uint16 { return slices.Clone(cipherSuites) }

// Server sets the policy on a server configuration and returns it:
// MinVersion (raised to TLS 1.2, never lowered) and CipherSuites.
// Configurations returned by a GetConfigForClient callback replace the
// outer one for that handshake, so they need Server too.
func Server(c *tls.Config) *tls.Config {
	if c.MinVersion < MinVersion {
		c.MinVersion = MinVersion
	}
	c.CipherSuites = CipherSuites()
	return c
}

// Client sets the same policy on a client configuration and returns it:
// for connections to Outpost's own services (the agent to the broker and
// the control plane, the control plane to an external broker, outpostctl,
// the device client) and to enrollment and notification webhooks. Go's
// default TLS 1.2 client suites still include ECDHE with CBC; with Client
// a server offering nothing better is refused. Left out on purpose: SMTP
// relays (mail would stop at an old relay; TLS 1.2 minimum only) and the
// agentless-rotation probe, which must read the certificate of whatever
// old device it rotates.
func Client(c *tls.Config) *tls.Config { return Server(c) }

// HTTPTransport is http.DefaultTransport (proxy from the environment,
// timeouts, HTTP/2) with c under the Client policy: for the HTTPS clients
// Outpost builds itself (enrollment and notification webhooks).
func HTTPTransport(c *tls.Config) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = Client(c)
	return tr
}
