// Package est implements the server side of the Enrollment over Secure
// Transport wire format (RFC 7030, with the clarifications of RFC 8951):
// request paths, request bodies, and the certs-only, csrattrs, serverkeygen
// and error answers. It knows nothing about who may enroll or how
// certificates are issued; the agent's EST server
// (agent/internal/estserver) puts those together on top of it.
//
// # Layout
//
// path.go, csrattrs.go and base64.go are the protocol core and do not
// import net/http; request.go and response.go adapt them to net/http.
// The client lives in the estclient subpackage.
//
// # Interoperability
//
// Independent clients (globalsign/est, Cisco libest, curl with openssl)
// differ in what they send, so [ReadCSR] is tolerant where tolerance is
// harmless: a missing Content-Type, Content-Type parameters, chunked
// bodies, no Content-Transfer-Encoding header, base64 with CRLF, LF or no
// line breaks (and missing padding), a PEM-armoured CSR, or raw DER. It is
// strict about sizes, which are capped before any decoding.
//
// The writers always set Content-Length, answer errors with a short
// text/plain body and challenge with "WWW-Authenticate: Basic" on 401, as
// libest sends no credentials until challenged.
package est
