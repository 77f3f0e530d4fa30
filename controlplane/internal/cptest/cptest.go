// Package cptest starts a real control plane for tests: a throwaway
// PostgreSQL database, an encrypted-file key store, the CA service with
// its bootstrap, and the API on an httptest server.
package cptest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cpconfig"
	"github.com/outpost-pki/outpost/controlplane/internal/cpserver"
	"github.com/outpost-pki/outpost/internal/secret"
	"github.com/outpost-pki/outpost/testbed"
)

// Env is a running control plane.
type Env struct {
	t          testing.TB
	URL        string
	AdminToken string
	DSN        string
	KeyDir     string
	App        *cpserver.App
	srv        *httptest.Server
	Logs       *bytes.Buffer
	pool       *pgxpool.Pool // Remote only
	// BrokerURL is the embedded broker's mqtts:// URL once StartSync ran.
	BrokerURL  string
	brokerPort int
	brokerDir  string
	sync       *cpserver.Sync
}

// StartSync starts the embedded MQTT broker and the sync consumer of this
// control plane (on the same port and data directory every time, so that
// agents reconnect and sessions survive a StopSync/StartSync).
func (e *Env) StartSync() {
	e.t.Helper()
	if e.sync != nil {
		return
	}
	if e.brokerPort == 0 {
		e.brokerPort = FreePort(e.t)
		e.brokerDir = filepath.Join(e.t.TempDir(), "broker")
	}
	c := e.App.Config
	c.Sync.Broker.Listen = fmt.Sprintf("127.0.0.1:%d", e.brokerPort)
	c.Sync.Broker.DataDir = e.brokerDir
	c.Sync.Broker.MaxSessionExpiry = cpconfig.Duration(24 * time.Hour)
	c.Sync.ClientID = "cptest"
	s, err := e.App.StartSync(context.Background())
	if err != nil {
		e.t.Fatalf("starting the sync link: %v", err)
	}
	e.sync = s
	e.BrokerURL = fmt.Sprintf("mqtts://127.0.0.1:%d", e.brokerPort)
}

// StopSync stops the broker and the consumer (an uplink outage as agents
// see it).
func (e *Env) StopSync() {
	if e.sync != nil {
		e.sync.Stop()
		e.sync = nil
	}
}

// Config returns a configuration for a database and key directory.
func Config(dsn, keyDir, adminToken string) *cpconfig.Config {
	c := &cpconfig.Config{Version: 1, Listen: "127.0.0.1:0", Database: cpconfig.Database{URL: dsn}, LogLevel: "debug"}
	c.Keystore.Backend = "file"
	c.Keystore.File.Dir = keyDir
	c.Keystore.File.Passphrase = secret.Source{Value: "cptest passphrase"}
	c.Keystore.KeyAlgorithm = "ecdsa-p256"
	c.Bootstrap = cpconfig.Bootstrap{Organization: "Outpost Test", RootCommonName: "Test Root CA", IssuingCommonName: "Test Issuing CA", DMSManagerCommonName: "Test DMS Manager CA"}
	c.AdminToken = secret.Source{Value: secret.Secret(adminToken)}
	return c
}

// RandomToken returns a fresh admin token.
func RandomToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "opk_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// Start runs a control plane on a new database of pg (a new cluster when
// pg is nil).
func Start(t testing.TB, pg *testbed.Postgres) *Env {
	t.Helper()
	if pg == nil {
		pg = testbed.NewPostgres(t)
	}
	e := &Env{t: t, DSN: pg.NewDatabase(t), KeyDir: filepath.Join(t.TempDir(), "keys"), AdminToken: RandomToken(), Logs: &bytes.Buffer{}}
	e.start()
	t.Cleanup(e.Stop)
	return e
}

func (e *Env) start() {
	e.t.Helper()
	log := slog.New(slog.NewTextHandler(e.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	app, err := cpserver.Build(context.Background(), Config(e.DSN, e.KeyDir, e.AdminToken), log)
	if err != nil {
		e.t.Fatalf("starting the control plane: %v", err)
	}
	e.App = app
	e.srv = httptest.NewServer(app.Handler())
	e.URL = e.srv.URL
	// Certificates carry this server's OCSP and CRL URLs.
	app.SetPublicURL(e.URL)
}

// Stop stops the server and closes the app.
func (e *Env) Stop() {
	e.StopSync()
	if e.srv != nil {
		e.srv.Close()
		e.srv = nil
		e.App.Close()
	}
}

// Restart stops and starts again on the same database and keys.
func (e *Env) Restart() {
	e.t.Helper()
	e.Stop()
	e.start()
}

// Do sends a JSON request with token (none if empty) and decodes a JSON
// response into out (if not nil). It returns the status and raw body.
func (e *Env) Do(method, path, token string, body, out any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, raw
}

// MustDo is Do that fails the test unless the status is want.
func (e *Env) MustDo(method, path, token string, body, out any, want int) []byte {
	e.t.Helper()
	status, raw := e.Do(method, path, token, body, out)
	if status != want {
		e.t.Fatalf("%s %s: got %d, want %d: %s", method, path, status, want, raw)
	}
	return raw
}

// DMSTrust returns the id of the bootstrap root CA and the PEM of the DMS
// manager CA followed by that root: what verifies a DMS's certificates
// (an agent's EST server certificate, its broker client certificate).
// OpenSSL (mosquitto, openssl s_client) needs the chain up to the
// self-signed root, hence both.
func (e *Env) DMSTrust() (rootID string, trustPEM []byte) {
	e.t.Helper()
	var cas apitypes.Page[apitypes.CA]
	e.MustDo("GET", "/api/v1/cas", e.AdminToken, nil, &cas, 200)
	var manager []byte
	for _, ca := range cas.Items {
		switch ca.Role {
		case "bootstrap_root":
			rootID = ca.ID
			trustPEM = append(trustPEM, ca.CertPEM...)
		case "dms_manager":
			manager = append(manager, ca.CertPEM...)
		}
	}
	if rootID == "" || manager == nil {
		e.t.Fatal("the control plane lists no bootstrap root or no DMS manager CA")
	}
	return rootID, append(manager, trustPEM...)
}
