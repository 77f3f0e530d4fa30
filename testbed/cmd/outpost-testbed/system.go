package main

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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/internal/est/estclient"
	"github.com/outpost-pki/outpost/testbed"
)

type options struct {
	dir, bin string
	devices  int
	offline  float64
	secrets  int
}

// system is everything the testbed started, stopped in reverse order.
type system struct {
	o       options
	stops   []func()
	api     string // http://127.0.0.1:port
	token   string
	dsn     string
	dmsID   string
	estURL  string
	estCA   *x509.CertPool
	agentAd string // agent admin address
	agentCf string
	uplink  *uplink
}

func (s *system) defer_(f func()) { s.stops = append(s.stops, f) }

func (s *system) stop() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func run(ctx context.Context, o options) error {
	s := &system{o: o}
	defer func() {
		step("stopping everything")
		s.stop()
		step("stopped")
	}()
	if err := s.start(ctx); err != nil {
		return err
	}
	if o.devices > 0 {
		if err := s.factoryLine(ctx); err != nil {
			return err
		}
	}
	s.banner()
	<-ctx.Done()
	return nil
}

func (s *system) path(name string) string { return filepath.Join(s.o.dir, name) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *system) start(ctx context.Context) error {
	for _, b := range []string{"outpost-controlplane", "outpost-agent", "outpostctl"} {
		if _, err := os.Stat(filepath.Join(s.o.bin, b)); err != nil {
			return fmt.Errorf("%s not built in %s: run `make build` first", b, s.o.bin)
		}
	}
	if err := os.RemoveAll(s.o.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(s.path("logs"), 0o755); err != nil {
		return err
	}

	step("starting PostgreSQL")
	pg, err := testbed.StartPostgres(ctx, testbed.PostgresOptions{})
	if err != nil {
		return err
	}
	s.defer_(func() { _ = pg.Close() })
	if s.dsn, err = pg.CreateDatabase(ctx); err != nil {
		return err
	}
	step("creating the SoftHSM2 token for the CA keys")
	hsm, err := testbed.StartSoftHSM(ctx, "outpost-cas")
	if err != nil {
		return err
	}
	s.defer_(func() { _ = hsm.Close() })
	step("starting swtpm for the agent's keys")
	tpm, err := testbed.StartSwtpm(ctx)
	if err != nil {
		return err
	}
	s.defer_(func() { _ = tpm.Close() })

	apiPort, err := freePort()
	if err != nil {
		return err
	}
	brokerPort, err := freePort()
	if err != nil {
		return err
	}
	s.api = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	s.token = "opk_demo_" + randomHex(16)
	if err := os.WriteFile(s.path("admin-token"), []byte(s.token+"\n"), 0o600); err != nil {
		return err
	}
	cpConfig := fmt.Sprintf(`version: 1
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
  broker:
    listen: 127.0.0.1:%d
    data_dir: %s
log_level: info
`, apiPort, s.api, s.dsn, hsm.Module, hsm.Label, s.path("admin-token"), brokerPort, s.path("broker"))
	if err := os.WriteFile(s.path("controlplane.yaml"), []byte(cpConfig), 0o600); err != nil {
		return err
	}
	step("starting the control plane (API, dashboard, OCSP/CRL, embedded MQTT broker) on %s", s.api)
	env := append(hsm.Env(), "OUTPOST_DEMO_PKCS11_PIN="+hsm.PIN)
	if err := s.spawn("controlplane", env, filepath.Join(s.o.bin, "outpost-controlplane"), "serve", "--config", s.path("controlplane.yaml")); err != nil {
		return err
	}
	if err := waitHTTP(ctx, s.api+"/healthz", 90*time.Second); err != nil {
		return fmt.Errorf("the control plane did not come up (see %s): %w", s.path("logs/controlplane.log"), err)
	}

	step("creating a devices CA, a bootstrap (manufacturer) CA and the DMS")
	var cas struct {
		Items []struct {
			ID      string `json:"id"`
			Role    string `json:"role"`
			CertPEM string `json:"certificate_pem"`
		} `json:"items"`
	}
	if err := s.call("GET", "/api/v1/cas", nil, &cas); err != nil {
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
	if err := os.WriteFile(s.path("est-ca.pem"), trust, 0o644); err != nil {
		return err
	}
	s.estCA = x509.NewCertPool()
	s.estCA.AppendCertsFromPEM(trust)
	var devCA struct{ ID string }
	if err := s.call("POST", "/api/v1/cas", map[string]any{"name": "factory-devices", "parent_id": rootID, "common_name": "Outpost Demo Devices CA", "max_path_len": 1}, &devCA); err != nil {
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
	if err := s.call("POST", "/api/v1/dmss", map[string]any{"name": "gateway-line-1", "policy": policy, "authorized_cas": []string{devCA.ID}}, &dms); err != nil {
		return err
	}
	s.dmsID = dms.DMS.ID

	estPort, err := freePort()
	if err != nil {
		return err
	}
	adminPort, err := freePort()
	if err != nil {
		return err
	}
	if s.uplink, err = newUplink(fmt.Sprintf("127.0.0.1:%d", brokerPort)); err != nil {
		return err
	}
	s.defer_(s.uplink.cut)
	s.agentAd = fmt.Sprintf("127.0.0.1:%d", adminPort)
	s.estURL = fmt.Sprintf("https://127.0.0.1:%d/.well-known/est", estPort)
	s.agentCf = s.path("agent.yaml")
	agentConfig := fmt.Sprintf(`version: 1
data_dir: %s
control_plane_url: %s
keystore:
  backend: tpm
  tpm:
    swtpm_addr: %s
sync:
  broker_url: mqtts://%s
  heartbeat: 2s
est:
  listen: 127.0.0.1:%d
  hostnames: [127.0.0.1, localhost]
  retry_after: 5s
  rate_per_address: 0
admin_addr: %s
log_level: info
`, s.path("agent"), s.api, tpm.Addr(), s.uplink.addr, estPort, s.agentAd)
	if err := os.WriteFile(s.agentCf, []byte(agentConfig), 0o600); err != nil {
		return err
	}
	step("bootstrapping the agent (identity key generated in swtpm)")
	agentBin := filepath.Join(s.o.bin, "outpost-agent")
	if out, err := exec.CommandContext(ctx, agentBin, "bootstrap", "--config", s.agentCf, "--token", dms.BootstrapToken).CombinedOutput(); err != nil {
		return fmt.Errorf("outpost-agent bootstrap: %v\n%s", err, out)
	}
	step("starting the agent (EST on %s)", s.estURL)
	if err := s.spawn("agent", nil, agentBin, "run", "--config", s.agentCf); err != nil {
		return err
	}
	if err := s.waitAgent(ctx, 90*time.Second, func(st agentStatus) bool { return st.ESTAddr != "" && !st.EdgeCANotAfter.IsZero() }); err != nil {
		return fmt.Errorf("the agent did not get its EST certificate and edge CA (see %s): %w", s.path("logs/agent.log"), err)
	}
	if out, err := exec.CommandContext(ctx, agentBin, "secrets", "--config", s.agentCf, "--count", fmt.Sprint(s.o.secrets), "--prefix", "device-", "--out", s.path("est-secrets.txt")).CombinedOutput(); err != nil {
		return fmt.Errorf("minting enrollment secrets: %v\n%s", err, out)
	}
	return s.writeEnv()
}

// spawn starts a long-running child in its own process group, logging to
// logs/<name>.log, and registers its stop.
func (s *system) spawn(name string, env []string, bin string, args ...string) error {
	logf, err := os.Create(s.path("logs/" + name + ".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.defer_(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
	})
	return nil
}

// bootstrapPKI makes a manufacturer CA and one device certificate from it
// (OUTPOST_BOOTSTRAP_CERT/KEY) and returns the CA's PEM.
func (s *system) bootstrapPKI() ([]byte, error) {
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
		if err := os.WriteFile(s.path(name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}

// writeEnv writes outpost.env in shell syntax.
func (s *system) writeEnv() error {
	vars := map[string]string{
		"OUTPOST_API_URL":          s.api,
		"OUTPOST_ADMIN_TOKEN":      s.token,
		"OUTPOST_UI_URL":           s.api + "/ui",
		"OUTPOST_EST_URL":          s.estURL,
		"OUTPOST_EST_CA":           s.path("est-ca.pem"),
		"OUTPOST_EST_SECRETS_FILE": s.path("est-secrets.txt"),
		"OUTPOST_BOOTSTRAP_CERT":   s.path("bootstrap-device.pem"),
		"OUTPOST_BOOTSTRAP_KEY":    s.path("bootstrap-device.key"),
		"OUTPOST_OCSP_URL":         s.api + "/ocsp",
		"OUTPOST_DMS_ID":           s.dmsID,
		"OUTPOST_BIN":              s.o.bin,
		"OUTPOST_DATABASE_URL":     s.dsn,
		"OUTPOST_AGENT_CONFIG":     s.agentCf,
		"OUTPOST_AGENT_ADMIN_URL":  "http://" + s.agentAd,
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
	tmp := s.path("outpost.env.tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path("outpost.env"))
}

func (s *system) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.api+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
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

type agentStatus struct {
	Online         bool      `json:"online"`
	ESTAddr        string    `json:"est_addr"`
	EdgeCANotAfter time.Time `json:"edge_ca_not_after"`
	QueueDepth     int       `json:"queue_depth"`
}

func (s *system) waitAgent(ctx context.Context, within time.Duration, cond func(agentStatus) bool) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get("http://" + s.agentAd + "/status")
		if err == nil {
			var st agentStatus
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

// factoryLine enrolls o.devices devices over EST with one-time secrets:
// a first part online, a middle part with the uplink cut (the agent's
// edge CA signs offline), the rest after the link is back; then it waits
// until the registry holds every certificate.
func (s *system) factoryLine(ctx context.Context) error {
	n := s.o.devices
	out, err := exec.CommandContext(ctx, filepath.Join(s.o.bin, "outpost-agent"), "secrets", "--config", s.agentCf, "--count", fmt.Sprint(n), "--prefix", "line1-").Output()
	if err != nil {
		return fmt.Errorf("minting the line's secrets: %w", err)
	}
	var creds [][2]string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if u, p, ok := strings.Cut(line, ":"); ok {
			creds = append(creds, [2]string{u, p})
		}
	}
	offline := int(float64(n) * s.o.offline)
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
			step("cutting the gateway's uplink (the control plane stays up)")
			s.uplink.cut()
			if err := s.waitAgent(ctx, 60*time.Second, func(st agentStatus) bool { return !st.Online }); err != nil {
				return fmt.Errorf("the agent did not notice the cut uplink: %w", err)
			}
		}
		step("factory line: enrolling %d devices %s", b.to-b.from, b.what)
		if err := s.enroll(ctx, creds[b.from:b.to]); err != nil {
			return err
		}
		if b.cut {
			var queued agentStatus
			_ = s.waitAgent(ctx, time.Second, func(st agentStatus) bool { queued = st; return true })
			step("restoring the uplink (%d records waiting on the gateway)", queued.QueueDepth)
			if err := s.uplink.restore(); err != nil {
				return err
			}
		}
	}
	step("waiting for the registry to hold all %d certificates", n)
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var got int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM certificates c JOIN cas ON cas.id = c.issuer_id WHERE cas.dms_id = $1`, s.dmsID).Scan(&got); err != nil {
			return err
		}
		if got >= n {
			step("registry: %d certificates from the gateway's edge CA", got)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the registry holds %d of %d certificates after 3 minutes (see %s)", got, n, s.path("logs/agent.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (s *system) enroll(ctx context.Context, creds [][2]string) error {
	jobs := make(chan [2]string)
	var done atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &estclient.Client{BaseURL: s.estURL, HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.estCA, MinVersion: tls.VersionTLS12}}}}
			for cr := range jobs {
				key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				var csr []byte
				if err == nil {
					csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cr[0]}}, key)
				}
				if err == nil {
					c.Username, c.Password = cr[0], cr[1]
					_, err = c.SimpleEnroll(ctx, csr)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("device %s: %w", cr[0], err)
					}
					mu.Unlock()
					continue
				}
				if d := done.Add(1); d%50 == 0 {
					fmt.Printf("    %d enrolled\n", d)
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
	fmt.Printf("    %d of %d enrolled\n", done.Load(), len(creds))
	return firstErr
}

func (s *system) banner() {
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
`, s.path("outpost.env"), s.api, s.token, s.api, s.estURL, s.path("est-ca.pem"), s.api, s.dmsID, s.path("logs"),
		s.path("est-secrets.txt"), s.path("outpost.env"))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.TrimRight(base64.RawURLEncoding.EncodeToString(b), "=")
}
