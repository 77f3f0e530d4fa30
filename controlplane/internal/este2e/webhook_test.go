package este2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/est/estclient"
)

// TestWebhookDecides: with device_auth "webhook" the agent asks an
// external HTTPS service per enrollment, sending the device id, the CSR
// and the Basic password; the service's refusal and its reason reach the
// device as 403.
func TestWebhookDecides(t *testing.T) {
	var mu sync.Mutex
	var asked []map[string]string
	hook := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, "bad body", 400)
			return
		}
		mu.Lock()
		asked = append(asked, body)
		mu.Unlock()
		ok := strings.HasPrefix(body["device_id"], "allowed-") && body["password"] == "factory-pass"
		_ = json.NewEncoder(w).Encode(map[string]any{"allow": ok, "reason": "not on the line's list"})
	}))
	defer hook.Close()
	caFile := filepath.Join(t.TempDir(), "hook-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hook.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	v := newEnvWith(t, apitypes.DMSPolicy{Mode: "local", DeviceAuth: "webhook", WebhookURL: hook.URL + "/decide", Profile: "device", LocalQuota: 100, ReenrollWindowDays: 14},
		"  webhook_ca_file: "+caFile+"\n")
	ctx := context.Background()

	c := v.client("", nil)
	c.Username, c.Password = "allowed-7", "factory-pass"
	_, csr := newCSR(t, "allowed-7")
	cert, err := c.SimpleEnroll(ctx, csr)
	if err != nil {
		t.Fatalf("enrollment the webhook allows: %v", err)
	}
	if cert.Subject.CommonName != "allowed-7" {
		t.Errorf("certificate names %q", cert.Subject.CommonName)
	}
	c.Username, c.Password = "stranger-1", "factory-pass"
	_, csr = newCSR(t, "stranger-1")
	_, err = c.SimpleEnroll(ctx, csr)
	var he *estclient.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusForbidden || !strings.Contains(he.Message, "not on the line's list") {
		t.Fatalf("enrollment the webhook refuses: %v, want 403 with its reason", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 || asked[0]["device_id"] != "allowed-7" || asked[0]["password"] != "factory-pass" {
		t.Fatalf("webhook saw %v", asked)
	}
	if der, err := base64.StdEncoding.DecodeString(asked[1]["csr"]); err != nil || len(der) == 0 {
		t.Errorf("webhook got no CSR: %v", err)
	}
}
