// Package system starts the whole Outpost system on one machine from the
// built binaries: a throwaway PostgreSQL, the control plane with its
// embedded MQTT broker and its CA keys in SoftHSM2, and one agent whose
// identity and edge CA keys are in swtpm, serving EST. With
// Options.ExternalBroker and Replicas, mosquitto replaces the embedded
// broker and several control plane replicas share the database and the
// SoftHSM2 token. `make demo`, testbed/up and the scenario tests under
// testbed/scenarios use it.
package system

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/internal/est/estclient"
	"github.com/outpost-pki/outpost/testbed"
)

// Options says where the system lives and what it starts.
type Options struct {
	// Dir is the working directory (state, logs, outpost.env); it is
	// emptied first. Bin holds the built outpost binaries.
	Dir, Bin string
	// Secrets is how many unused one-time enrollment secrets to leave in
	// est-secrets.txt (OUTPOST_EST_SECRETS_FILE). Default 200.
	Secrets int
	// Control, when set, serves the testbed's control endpoint on
	// loopback (OUTPOST_TESTBED_CONTROL_URL: POST /uplink/cut and
	// /uplink/restore), for tools such as testbed/loadgen.
	Control bool
	// Quiet drops the progress lines (tests log them instead through
	// Logf).
	Logf func(format string, args ...any)
	// ExternalBroker starts mosquitto (TLS, client certificates, the ACL
	// of docs/SYNC.md, persistent sessions) instead of the control
	// plane's embedded broker: every replica's sync consumer joins its
	// shared subscription, and the agent's uplink proxy leads there.
	ExternalBroker bool
	// Replicas is how many control plane replicas to run (default 1).
	// They share the database and the SoftHSM2 token, each with its own
	// API port and sync client id; more than one needs ExternalBroker.
	// Replica 1 starts (and bootstraps) alone, the others once it is
	// healthy.
	Replicas int
	// AgentSyncBatch is the agent's sync.batch_size (records per up
	// message); 0 keeps the agent's default (200).
	AgentSyncBatch int
}

// System is everything Start started; Stop stops it in reverse order.
type System struct {
	o     Options
	stops []func()
	procs map[string]*Proc

	// API is the control plane's base URL (http://127.0.0.1:port), Token
	// its admin API token, DSN the registry's database URL.
	API, Token, DSN string
	// APIs are the base URLs of every replica (APIs[0] == API); their
	// processes are "controlplane-1".."controlplane-N" with
	// ExternalBroker, else "controlplane". Proc("controlplane") is
	// replica 1 either way.
	APIs []string
	// Mosquitto is the external broker (nil without ExternalBroker).
	Mosquitto *testbed.Mosquitto
	// DMSID is the gateway's DMS; ESTURL the agent's
	// https://host:port/.well-known/est base; ESTCA verifies its server
	// certificate.
	DMSID, ESTURL string
	ESTCA         *x509.CertPool
	// AgentAdmin is the agent's admin address (host:port, /status),
	// AgentConfig its config file.
	AgentAdmin, AgentConfig string
	// Uplink is the TCP proxy between the agent and the broker.
	Uplink   *Uplink
	Postgres *testbed.Postgres
	// ControlURL is the control endpoint when Options.Control is set.
	ControlURL string
}

func (s *System) defer_(f func()) { s.stops = append(s.stops, f) }

// Stop stops every process Start started and removes nothing from Dir
// (logs stay for a look).
func (s *System) Stop() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	s.stops = nil
}

func (s *System) step(format string, args ...any) {
	if s.o.Logf != nil {
		s.o.Logf(format, args...)
		return
	}
	fmt.Printf("==> "+format+"\n", args...)
}

// Path is name inside the working directory.
func (s *System) Path(name string) string { return filepath.Join(s.o.Dir, name) }

// Start brings the system up: PostgreSQL, SoftHSM2, swtpm, the control
// plane, a devices CA, a bootstrap CA and a DMS in local mode, and the
// agent with its EST server; then writes outpost.env. On error it stops
// what it started.
func Start(ctx context.Context, o Options) (*System, error) {
	if o.Secrets <= 0 {
		o.Secrets = 200
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Replicas > 1 && !o.ExternalBroker {
		return nil, errors.New("system: more than one control plane replica needs ExternalBroker (each embedded broker would be a broker of its own)")
	}
	s := &System{o: o, procs: map[string]*Proc{}}
	if err := s.start(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *System) start(ctx context.Context) error {
	for _, b := range []string{"outpost-controlplane", "outpost-agent", "outpostctl"} {
		if _, err := os.Stat(filepath.Join(s.o.Bin, b)); err != nil {
			return fmt.Errorf("%s not built in %s: run `make build` first", b, s.o.Bin)
		}
	}
	if err := os.RemoveAll(s.o.Dir); err != nil {
		return err
	}
	if err := os.MkdirAll(s.Path("logs"), 0o755); err != nil {
		return err
	}

	s.step("starting PostgreSQL")
	pg, err := testbed.StartPostgres(ctx, testbed.PostgresOptions{})
	if err != nil {
		return err
	}
	s.Postgres = pg
	s.defer_(func() { _ = pg.Close() })
	if s.DSN, err = pg.CreateDatabase(ctx); err != nil {
		return err
	}
	s.step("creating the SoftHSM2 token for the CA keys")
	hsm, err := testbed.StartSoftHSM(ctx, "outpost-cas")
	if err != nil {
		return err
	}
	s.defer_(func() { _ = hsm.Close() })
	s.step("starting swtpm for the agent's keys")
	tpm, err := testbed.StartSwtpm(ctx)
	if err != nil {
		return err
	}
	s.defer_(func() { _ = tpm.Close() })

	s.Token = "opk_demo_" + randomHex(16)
	if err := os.WriteFile(s.Path("admin-token"), []byte(s.Token+"\n"), 0o600); err != nil {
		return err
	}
	env := append(hsm.Env(), "OUTPOST_DEMO_PKCS11_PIN="+hsm.PIN)
	brokerAddr, err := s.startControlPlane(ctx, hsm, env)
	if err != nil {
		return err
	}

	s.step("creating a devices CA, a bootstrap (manufacturer) CA and the DMS")
	var cas struct {
		Items []struct {
			ID      string `json:"id"`
			Role    string `json:"role"`
			CertPEM string `json:"certificate_pem"`
		} `json:"items"`
	}
	if err := s.Call("GET", "/api/v1/cas", nil, &cas); err != nil {
		return err
	}
	var rootID string
	var trust []byte
	for _, c := range cas.Items {
		switch c.Role {
		case "bootstrap_root":
			rootID = c.ID
			trust = append(trust, c.CertPEM...)
		case "dms_manager":
			trust = append(trust, c.CertPEM...)
		}
	}
	if len(trust) == 0 || rootID == "" {
		return errors.New("the control plane lists no root or DMS manager CA")
	}
	if err := os.WriteFile(s.Path("est-ca.pem"), trust, 0o644); err != nil {
		return err
	}
	s.ESTCA = x509.NewCertPool()
	s.ESTCA.AppendCertsFromPEM(trust)
	var devCA struct{ ID string }
	if err := s.Call("POST", "/api/v1/cas", map[string]any{"name": "factory-devices", "parent_id": rootID, "common_name": "Outpost Demo Devices CA", "max_path_len": 1}, &devCA); err != nil {
		return err
	}
	bootPEM, err := s.bootstrapPKI()
	if err != nil {
		return err
	}
	var dms struct {
		DMS            struct{ ID string } `json:"dms"`
		BootstrapToken string              `json:"bootstrap_token"`
	}
	policy := map[string]any{"mode": "local", "device_auth": "client_cert_or_secret", "profile": "device", "reenroll_window_days": 365,
		"local_quota": 100000, "bootstrap_ca_pems": []string{string(bootPEM)}, "edge_name_constraints": []string{"local", "factory.example"}}
	if err := s.Call("POST", "/api/v1/dmss", map[string]any{"name": "gateway-line-1", "policy": policy, "authorized_cas": []string{devCA.ID}}, &dms); err != nil {
		return err
	}
	s.DMSID = dms.DMS.ID
	syncExtra := ""
	if s.o.ExternalBroker {
		if brokerAddr, err = s.startExternalBroker(ctx, trust, hsm, env); err != nil {
			return err
		}
		syncExtra = fmt.Sprintf("  broker_ca_file: %s\n", s.Path("broker-ca.pem"))
	}
	if s.o.AgentSyncBatch > 0 {
		syncExtra += fmt.Sprintf("  batch_size: %d\n", s.o.AgentSyncBatch)
	}

	estPort, err := freePort()
	if err != nil {
		return err
	}
	adminPort, err := freePort()
	if err != nil {
		return err
	}
	if s.Uplink, err = NewUplink(brokerAddr); err != nil {
		return err
	}
	s.defer_(s.Uplink.Cut)
	s.AgentAdmin = fmt.Sprintf("127.0.0.1:%d", adminPort)
	s.ESTURL = fmt.Sprintf("https://127.0.0.1:%d/.well-known/est", estPort)
	s.AgentConfig = s.Path("agent.yaml")
	agentConfig := fmt.Sprintf(`version: 1
data_dir: %s
control_plane_url: %s
keystore:
  backend: tpm
  tpm:
    swtpm_addr: %s
sync:
  broker_url: mqtts://%s
%s  heartbeat: 2s
est:
  listen: 127.0.0.1:%d
  hostnames: [127.0.0.1, localhost]
  retry_after: 5s
  rate_per_address: 0
admin_addr: %s
log_level: info
`, s.Path("agent"), s.API, tpm.Addr(), s.Uplink.Addr(), syncExtra, estPort, s.AgentAdmin)
	if err := os.WriteFile(s.AgentConfig, []byte(agentConfig), 0o600); err != nil {
		return err
	}
	s.step("bootstrapping the agent (identity key generated in swtpm)")
	agentBin := filepath.Join(s.o.Bin, "outpost-agent")
	if out, err := exec.CommandContext(ctx, agentBin, "bootstrap", "--config", s.AgentConfig, "--token", dms.BootstrapToken).CombinedOutput(); err != nil {
		return fmt.Errorf("outpost-agent bootstrap: %v\n%s", err, out)
	}
	s.step("starting the agent (EST on %s)", s.ESTURL)
	if err := s.spawn("agent", nil, agentBin, "run", "--config", s.AgentConfig); err != nil {
		return err
	}
	if err := s.WaitAgent(ctx, 90*time.Second, func(st AgentStatus) bool { return st.ESTAddr != "" && !st.EdgeCANotAfter.IsZero() }); err != nil {
		return fmt.Errorf("the agent did not get its EST certificate and edge CA (see %s): %w", s.Path("logs/agent.log"), err)
	}
	if out, err := exec.CommandContext(ctx, agentBin, "secrets", "--config", s.AgentConfig, "--count", fmt.Sprint(s.o.Secrets), "--prefix", "device-", "--out", s.Path("est-secrets.txt")).CombinedOutput(); err != nil {
		return fmt.Errorf("minting enrollment secrets: %v\n%s", err, out)
	}
	if s.o.Control {
		if err := s.serveControl(); err != nil {
			return err
		}
	}
	return s.writeEnv()
}

// bootstrapPKI makes a manufacturer CA and one device certificate from it
// (OUTPOST_BOOTSTRAP_CERT/KEY) and returns the CA's PEM.
func (s *System) bootstrapPKI() ([]byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Demo Manufacturer CA", Organization: []string{"Demo Devices Inc."}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	devKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	devTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bootstrap-device-1"}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	devDER, err := x509.CreateCertificate(rand.Reader, devTmpl, ca, devKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	k8, err := x509.MarshalPKCS8PrivateKey(devKey)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for name, data := range map[string][]byte{
		"bootstrap-ca.pem":     caPEM,
		"bootstrap-device.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: devDER}),
		"bootstrap-device.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k8}),
	} {
		if err := os.WriteFile(s.Path(name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}

// writeEnv writes outpost.env in shell syntax.
func (s *System) writeEnv() error {
	vars := map[string]string{
		"OUTPOST_API_URL":          s.API,
		"OUTPOST_ADMIN_TOKEN":      s.Token,
		"OUTPOST_UI_URL":           s.API + "/ui",
		"OUTPOST_EST_URL":          s.ESTURL,
		"OUTPOST_EST_CA":           s.Path("est-ca.pem"),
		"OUTPOST_EST_SECRETS_FILE": s.Path("est-secrets.txt"),
		"OUTPOST_BOOTSTRAP_CERT":   s.Path("bootstrap-device.pem"),
		"OUTPOST_BOOTSTRAP_KEY":    s.Path("bootstrap-device.key"),
		"OUTPOST_OCSP_URL":         s.API + "/ocsp",
		"OUTPOST_DMS_ID":           s.DMSID,
		"OUTPOST_BIN":              s.o.Bin,
		"OUTPOST_DATABASE_URL":     s.DSN,
		"OUTPOST_AGENT_CONFIG":     s.AgentConfig,
		"OUTPOST_AGENT_ADMIN_URL":  "http://" + s.AgentAdmin,
	}
	if s.ControlURL != "" {
		vars["OUTPOST_TESTBED_CONTROL_URL"] = s.ControlURL
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Outpost testbed: source this file (. testbed/run/outpost.env). Written by outpost-testbed.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s='%s'\n", k, strings.ReplaceAll(vars[k], "'", `'\''`))
	}
	// Written last and atomically: its presence means "up".
	tmp := s.Path("outpost.env.tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.Path("outpost.env"))
}

// Call calls the control plane's API with the admin token and decodes
// the JSON answer into out (when not nil); a status >= 300 is an error.
func (s *System) Call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.API+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func waitHTTP(ctx context.Context, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v", url, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// AgentStatus is what the agent's admin /status says.
type AgentStatus struct {
	Online         bool      `json:"online"`
	ESTAddr        string    `json:"est_addr"`
	EdgeCANotAfter time.Time `json:"edge_ca_not_after"`
	QueueDepth     int       `json:"queue_depth"`
	// Disabled: the agent learned that the control plane disabled its
	// DMS (the broker answered Banned); it refuses enrollments.
	Disabled bool `json:"disabled"`
}

// WaitAgent polls the agent's /status until cond holds.
func (s *System) WaitAgent(ctx context.Context, within time.Duration, cond func(AgentStatus) bool) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get("http://" + s.AgentAdmin + "/status")
		if err == nil {
			var st AgentStatus
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil && cond(st) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// MintSecrets mints n one-time enrollment secrets on the gateway
// (outpost-agent secrets) for devices named prefix + number.
func (s *System) MintSecrets(ctx context.Context, n int, prefix string) ([]Cred, error) {
	out, err := exec.CommandContext(ctx, filepath.Join(s.o.Bin, "outpost-agent"), "secrets", "--config", s.AgentConfig, "--count", fmt.Sprint(n), "--prefix", prefix).Output()
	if err != nil {
		return nil, fmt.Errorf("minting %d enrollment secrets: %w", n, err)
	}
	var creds []Cred
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if u, p, ok := strings.Cut(line, ":"); ok {
			creds = append(creds, Cred{Device: u, Secret: p})
		}
	}
	if len(creds) != n {
		return nil, fmt.Errorf("outpost-agent secrets printed %d credentials, want %d", len(creds), n)
	}
	return creds, nil
}

// Cred is a device name and its one-time enrollment secret.
type Cred struct{ Device, Secret string }

// FactoryLine enrolls n devices over EST with one-time secrets: a first
// part online, a share offline of them with the uplink cut (the agent's
// edge CA signs offline), the rest after the link is back; then it waits
// until the registry holds every certificate.
func (s *System) FactoryLine(ctx context.Context, n int, offlineShare float64) error {
	creds, err := s.MintSecrets(ctx, n, "line1-")
	if err != nil {
		return err
	}
	offline := int(float64(n) * offlineShare)
	first := (n - offline) / 2
	batches := []struct {
		what string
		from int
		to   int
		cut  bool
	}{{"online", 0, first, false}, {"with the uplink cut", first, first + offline, true}, {"after the uplink is back", first + offline, n, false}}
	for _, b := range batches {
		if b.to <= b.from {
			continue
		}
		if b.cut {
			s.step("cutting the gateway's uplink (the control plane stays up)")
			s.Uplink.Cut()
			if err := s.WaitAgent(ctx, 60*time.Second, func(st AgentStatus) bool { return !st.Online }); err != nil {
				return fmt.Errorf("the agent did not notice the cut uplink: %w", err)
			}
		}
		s.step("factory line: enrolling %d devices %s", b.to-b.from, b.what)
		if _, err := s.Enroll(ctx, creds[b.from:b.to]); err != nil {
			return err
		}
		if b.cut {
			var queued AgentStatus
			_ = s.WaitAgent(ctx, time.Second, func(st AgentStatus) bool { queued = st; return true })
			s.step("restoring the uplink (%d records waiting on the gateway)", queued.QueueDepth)
			if err := s.Uplink.Restore(); err != nil {
				return err
			}
		}
	}
	s.step("waiting for the registry to hold all %d certificates", n)
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var got int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM certificates c JOIN cas ON cas.id = c.issuer_id WHERE cas.dms_id = $1`, s.DMSID).Scan(&got); err != nil {
			return err
		}
		if got >= n {
			s.step("registry: %d certificates from the gateway's edge CA", got)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the registry holds %d of %d certificates after 3 minutes (see %s)", got, n, s.Path("logs/agent.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Enroll enrolls each device with its secret over EST from 8 workers
// (keep-alive connections), printing progress; it returns how many were
// enrolled and the first error.
func (s *System) Enroll(ctx context.Context, creds []Cred) (int, error) {
	jobs := make(chan Cred)
	var done atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &estclient.Client{BaseURL: s.ESTURL, HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ESTCA, MinVersion: tls.VersionTLS12}}}}
			for cr := range jobs {
				key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				var csr []byte
				if err == nil {
					csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cr.Device}}, key)
				}
				if err == nil {
					c.Username, c.Password = cr.Device, cr.Secret
					_, err = c.SimpleEnroll(ctx, csr)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("device %s: %w", cr.Device, err)
					}
					mu.Unlock()
					continue
				}
				if d := done.Add(1); d%50 == 0 {
					s.step("    %d enrolled", d)
				}
			}
		}()
	}
	for _, cr := range creds {
		select {
		case jobs <- cr:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	s.step("    %d of %d enrolled", done.Load(), len(creds))
	return int(done.Load()), firstErr
}

// Banner prints what to open and how to enroll a device by hand.
func (s *System) Banner() {
	fmt.Printf(`
Outpost is running. Everything below is also in %s (source it).

  Dashboard      %s/ui            (log in with the admin token)
  Admin token    %s
  API            %s/api/v1         (Authorization: Bearer <token>)
  EST            %s
  EST server CA  %s
  OCSP           %s/ocsp
  DMS id         %s
  Logs           %s

Enroll a device by hand with curl and openssl (one-time secret from %s):

  . %s
  IFS=: read -r DEV SECRET < "$OUTPOST_EST_SECRETS_FILE"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout dev.key -subj "/CN=$DEV" -outform DER | openssl base64 > dev.csr
  curl --cacert "$OUTPOST_EST_CA" -u "$DEV:$SECRET" -H 'Content-Type: application/pkcs10' --data-binary @dev.csr \
       "$OUTPOST_EST_URL/simpleenroll" | openssl base64 -d | openssl pkcs7 -inform DER -print_certs

(each secret works once: use the next line for the next device). Ctrl-C stops everything.
`, s.Path("outpost.env"), s.API, s.Token, s.API, s.ESTURL, s.Path("est-ca.pem"), s.API, s.DMSID, s.Path("logs"),
		s.Path("est-secrets.txt"), s.Path("outpost.env"))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.TrimRight(base64.RawURLEncoding.EncodeToString(b), "=")
}

// cpConfig is replica i's configuration: API on apiPort, CA keys in the
// shared SoftHSM2 token, and syncYAML as its sync section.
func (s *System) cpConfig(apiPort int, hsm *testbed.SoftHSM, logLevel, syncYAML string) string {
	return fmt.Sprintf(`version: 1
listen: 127.0.0.1:%d
public_url: %s
database:
  url: %q
keystore:
  backend: pkcs11
  pkcs11:
    module: %s
    token_label: %s
    pin:
      env: OUTPOST_DEMO_PKCS11_PIN
admin_token:
  file: %s
bootstrap:
  organization: Outpost Demo
sync:
%slog_level: %s
`, apiPort, fmt.Sprintf("http://127.0.0.1:%d", apiPort), s.DSN, hsm.Module, hsm.Label, s.Path("admin-token"), syncYAML, logLevel)
}

// startControlPlane starts the first (or only) control plane and waits
// until it is healthy. With the embedded broker it returns the broker's
// address. With ExternalBroker, replica 1 first runs with the sync link
// off: it bootstraps the CAs whose certificates mosquitto must trust
// before any replica can connect there (startExternalBroker restarts
// it).
func (s *System) startControlPlane(ctx context.Context, hsm *testbed.SoftHSM, env []string) (brokerAddr string, err error) {
	for i := 0; i < s.o.Replicas; i++ {
		port, err := freePort()
		if err != nil {
			return "", err
		}
		s.APIs = append(s.APIs, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	s.API = s.APIs[0]
	bin := filepath.Join(s.o.Bin, "outpost-controlplane")
	if !s.o.ExternalBroker {
		brokerPort, err := freePort()
		if err != nil {
			return "", err
		}
		brokerAddr = fmt.Sprintf("127.0.0.1:%d", brokerPort)
		cfg := s.cpConfig(apiPortOf(s.API), hsm, "info", fmt.Sprintf("  broker:\n    listen: %s\n    data_dir: %s\n", brokerAddr, s.Path("broker")))
		if err := os.WriteFile(s.Path("controlplane.yaml"), []byte(cfg), 0o600); err != nil {
			return "", err
		}
		s.step("starting the control plane (API, dashboard, OCSP/CRL, embedded MQTT broker) on %s", s.API)
		if err := s.spawn("controlplane", env, bin, "serve", "--config", s.Path("controlplane.yaml")); err != nil {
			return "", err
		}
		return brokerAddr, s.waitReplica(ctx, "controlplane", s.API)
	}
	cfg := s.cpConfig(apiPortOf(s.API), hsm, "debug", "  broker:\n    enabled: false\n")
	if err := os.WriteFile(s.Path("controlplane-1.yaml"), []byte(cfg), 0o600); err != nil {
		return "", err
	}
	s.step("starting control plane replica 1 on %s (bootstrap; the sync link waits for mosquitto)", s.API)
	if err := s.spawn("controlplane-1", env, bin, "serve", "--config", s.Path("controlplane-1.yaml")); err != nil {
		return "", err
	}
	s.procs["controlplane"] = s.procs["controlplane-1"]
	return "", s.waitReplica(ctx, "controlplane-1", s.API)
}

// startExternalBroker starts mosquitto trusting trust (the DMS manager
// CA and the root above it) for client certificates, with the ACL of
// docs/SYNC.md; restarts replica 1 with its sync link pointing there and
// starts the other replicas one after the other, each once the one
// before is healthy. It returns mosquitto's address and writes its CA to
// broker-ca.pem.
func (s *System) startExternalBroker(ctx context.Context, trust []byte, hsm *testbed.SoftHSM, env []string) (string, error) {
	acl := s.Path("mosquitto.acl")
	if err := os.WriteFile(acl, []byte("user outpost-controlplane\ntopic readwrite outpost/v1/dms/#\ntopic read $share/outpost-controlplane/outpost/v1/dms/+/up\n\n"+
		"pattern write outpost/v1/dms/%u/up\npattern read outpost/v1/dms/%u/down\n"), 0o644); err != nil {
		return "", err
	}
	s.step("starting mosquitto (TLS with client certificates, ACL, persistent sessions)")
	m, err := testbed.StartMosquitto(ctx, testbed.MosquittoOptions{TLS: true, RequireClientCert: true, Persistent: true,
		ExtraClientCAs: trust, LogFile: s.Path("logs/mosquitto.log"),
		Config: "acl_file " + acl + "\nmax_packet_size 1052672\n"})
	if err != nil {
		return "", err
	}
	s.Mosquitto = m
	s.defer_(func() { _ = m.Close() })
	if err := os.WriteFile(s.Path("broker-ca.pem"), m.CA.CertPEM(), 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(s.o.Bin, "outpost-controlplane")
	for i, api := range s.APIs {
		name := fmt.Sprintf("controlplane-%d", i+1)
		syncYAML := fmt.Sprintf("  external_broker_url: %s\n  external_broker_ca_file: %s\n  client_id: cp-%d\n", m.URL(), s.Path("broker-ca.pem"), i+1)
		if err := os.WriteFile(s.Path(name+".yaml"), []byte(s.cpConfig(apiPortOf(api), hsm, "debug", syncYAML)), 0o600); err != nil {
			return "", err
		}
		if i == 0 {
			s.step("restarting replica 1 with its sync link on mosquitto")
			p := s.procs[name]
			if err := p.Stop(20 * time.Second); err != nil {
				return "", err
			}
			if err := p.Start(); err != nil {
				return "", err
			}
		} else {
			s.step("starting control plane replica %d on %s", i+1, api)
			if err := s.spawn(name, env, bin, "serve", "--config", s.Path(name+".yaml")); err != nil {
				return "", err
			}
		}
		if err := s.waitReplica(ctx, name, api); err != nil {
			return "", err
		}
	}
	return m.Addr(), nil
}

// waitReplica waits until the replica answers /healthz.
func (s *System) waitReplica(ctx context.Context, name, api string) error {
	if err := waitHTTP(ctx, api+"/healthz", 90*time.Second); err != nil {
		return fmt.Errorf("%s did not come up (see %s): %w", name, s.Path("logs/"+name+".log"), err)
	}
	return nil
}

func apiPortOf(api string) int {
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(api, "http://"))
	n, _ := strconv.Atoi(port)
	return n
}
