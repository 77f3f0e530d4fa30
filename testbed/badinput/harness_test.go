package badinput

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/internal/est/estclient"
	"github.com/outpost-pki/outpost/testbed/system"
)

// bed is the running system and what the suite learned about it.
type bed struct {
	s   *system.System
	dir string
	db  *pgx.Conn

	// secrets are strings no log may contain, by what they are.
	mu      sync.Mutex
	secrets map[string]string

	// counts is the number of distinct malformed inputs per surface.
	counts map[string]int
}

// secret remembers v (a token, PIN, one-time secret...) as something no
// log may contain.
func (b *bed) secret(what, v string) {
	if v == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.secrets[what] = v
}

// count records that a case of surface ran.
func (b *bed) count(surface string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.counts[surface]++
}

// startBed starts the system in a directory of t.TempDir(), switches the
// control plane and the agent to debug logging (a restart of each: the
// suite then checks the most talkative logs for secrets), and stops
// everything when t ends, first putting the log tails in the test log if
// t failed.
func startBed(t *testing.T) *bed {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "system")
	s := system.StartT(t, system.Options{Dir: dir, Secrets: 1})
	b := &bed{s: s, dir: dir, secrets: map[string]string{}, counts: map[string]int{}}
	t.Cleanup(func() { // runs before StartT's cleanup stops the system
		if b.db != nil {
			_ = b.db.Close(context.Background())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b.debugLogging(t)
	var err error
	if b.db, err = pgx.Connect(ctx, s.DSN); err != nil {
		t.Fatalf("connecting to the registry: %v", err)
	}
	b.learnSecrets(t)
	return b
}

// debugLogging sets log_level: debug in the control plane's and the
// agent's configuration files and restarts both. testbed/system writes
// info; its configuration files are ours to edit once it started.
func (b *bed) debugLogging(t *testing.T) {
	t.Helper()
	start := time.Now()
	for _, f := range []string{"controlplane.yaml", "agent.yaml"} {
		p := b.s.Path(f)
		cfg, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out := regexp.MustCompile(`(?m)^log_level: \w+$`).ReplaceAll(cfg, []byte("log_level: debug"))
		if bytes.Equal(out, cfg) {
			t.Fatalf("%s has no log_level line to change", f)
		}
		if err := os.WriteFile(p, out, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	agent, cp := b.s.Proc("agent"), b.s.Proc("controlplane")
	if err := agent.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := cp.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	system.WaitHTTPStatus(t, b.s.API+"/healthz", 200, 60*time.Second)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	b.waitAgentOnline(t, 60*time.Second)
	t.Logf("control plane and agent restarted with log_level debug in %v", time.Since(start).Round(time.Millisecond))
}

func (b *bed) waitAgentOnline(t *testing.T, within time.Duration) {
	t.Helper()
	if err := b.s.WaitAgent(context.Background(), within, func(st system.AgentStatus) bool { return st.Online && st.ESTAddr != "" && !st.Disabled }); err != nil {
		t.Fatalf("the agent is not online with its EST server within %v: %v", within, err)
	}
}

// learnSecrets collects the secrets the testbed handed to the processes:
// the admin token, and every variable of the control plane's and the
// agent's environment whose name says PIN, PASSPHRASE, TOKEN, SECRET or
// PASSWORD (the SoftHSM2 PIN travels as OUTPOST_DEMO_PKCS11_PIN), and
// the bootstrap device's private key.
func (b *bed) learnSecrets(t *testing.T) {
	t.Helper()
	b.secret("admin token", b.s.Token)
	for _, name := range []string{"controlplane", "agent"} {
		pid := b.s.Proc(name).PID()
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatalf("reading the environment of %s: %v", name, err)
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || !strings.HasPrefix(k, "OUTPOST_") && !strings.HasPrefix(k, "SOFTHSM") {
				continue
			}
			for _, w := range []string{"PIN", "PASSPHRASE", "TOKEN", "SECRET", "PASSWORD"} {
				if strings.Contains(k, w) && len(v) >= 8 {
					b.secret(name+" env "+k, v)
				}
			}
		}
	}
	if b.secrets["controlplane env OUTPOST_DEMO_PKCS11_PIN"] == "" {
		t.Fatalf("the control plane's environment has no OUTPOST_DEMO_PKCS11_PIN: the secrets check would miss the SoftHSM2 PIN")
	}
	key, err := os.ReadFile(b.s.Path("bootstrap-device.key"))
	if err != nil {
		t.Fatal(err)
	}
	// The base64 body of the PEM, line by line: any line of it in a log
	// is a leak.
	for i, line := range strings.Split(string(key), "\n") {
		if len(line) >= 40 && !strings.HasPrefix(line, "-----") {
			b.secret(fmt.Sprintf("bootstrap device key line %d", i), line)
		}
	}
}

// estTLS is a TLS client configuration that trusts the EST server.
func (b *bed) estTLS() *tls.Config {
	return &tls.Config{RootCAs: b.s.ESTCA, MinVersion: tls.VersionTLS12}
}

// enrolledDevice is a device the suite enrolled normally.
type enrolledDevice struct {
	ID   string
	Key  *ecdsa.PrivateKey
	Cert *x509.Certificate
}

// enroll enrolls one device with its one-time secret, as a device would.
func (b *bed) enroll(ctx context.Context, cred system.Cred) (*enrolledDevice, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cred.Device}}, key)
	if err != nil {
		return nil, err
	}
	c := &estclient.Client{BaseURL: b.s.ESTURL, Username: cred.Device, Password: cred.Secret,
		HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: b.estTLS()}}}
	cert, err := c.SimpleEnroll(ctx, csr)
	if err != nil {
		return nil, fmt.Errorf("enrolling %s: %w", cred.Device, err)
	}
	return &enrolledDevice{ID: cred.Device, Key: key, Cert: cert}, nil
}

// registryCount is how many certificates the registry holds for serial.
func (b *bed) registryCount(t *testing.T, serial string) int {
	t.Helper()
	var n int
	if err := b.db.QueryRow(context.Background(), `SELECT count(*) FROM certificates WHERE serial = $1`, serial).Scan(&n); err != nil {
		t.Fatalf("counting certificates: %v", err)
	}
	return n
}

// waitInRegistry waits until the registry holds the certificate.
func (b *bed) waitInRegistry(t *testing.T, c *x509.Certificate, within time.Duration) {
	t.Helper()
	serial := strings.ToLower(c.SerialNumber.Text(16))
	deadline := time.Now().Add(within)
	for b.registryCount(t, serial) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("certificate %s (%s) is not in the registry after %v", serial, c.Subject.CommonName, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// api calls the control plane's API with the admin token and decodes a
// JSON answer; it fails t on a status other than want.
func (b *bed) api(t *testing.T, method, path string, body any, want int, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, b.s.API+path, rd)
	req.Header.Set("Authorization", "Bearer "+b.s.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: got %d %s, want %d", method, path, resp.StatusCode, raw, want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, path, raw, err)
		}
	}
}
