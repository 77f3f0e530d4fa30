package notify

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestWebhookTLSPolicy: the dispatcher's own HTTP client applies the TLS
// policy (tlspolicy.Client): a webhook server that offers only ECDHE with
// CBC is refused at cipher negotiation, where Go's default client would
// get as far as checking the server's certificate.
func TestWebhookTLSPolicy(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}
	srv.StartTLS()
	defer srv.Close()

	d := &Dispatcher{}
	d.init()
	err := d.post(context.Background(), srv.URL, http.Header{}, []byte("{}"))
	if err == nil || !strings.Contains(err.Error(), "handshake failure") {
		t.Fatalf("posting to a CBC-only server: got %v, want a handshake failure", err)
	}
	_, control := http.Post(srv.URL, "application/json", strings.NewReader("{}"))
	if control == nil || strings.Contains(control.Error(), "handshake failure") {
		t.Fatalf("control: Go's default client should negotiate CBC and then fail on the certificate, got %v", control)
	}
}
