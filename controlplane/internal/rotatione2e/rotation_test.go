package rotatione2e

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
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/internal/est/estclient"
)

// agentBin is outpost-agent, built once for the package.
var agentBin string

func TestMain(m *testing.M) { cptest.Main(m, map[string]*string{cptest.AgentPkg: &agentBin}) }

// device is a local HTTPS server acting as an agentless device: it serves
// whatever key and certificate chain its directory's server.pem holds,
// read again at every handshake (what the hooks replace).
type device struct {
	id, dir, addr string
}

func startDevice(t *testing.T, id string) *device {
	t.Helper()
	d := &device{id: id, dir: t.TempDir()}
	// A self-signed certificate to begin with, as a device out of the box.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: id},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour), DNSNames: []string{id}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	k8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k8}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	if err := os.WriteFile(filepath.Join(d.dir, "server.pem"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.addr = ln.Addr().String()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "device "+id+"\n") }),
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			b, err := os.ReadFile(filepath.Join(d.dir, "server.pem"))
			if err != nil {
				return nil, err
			}
			c, err := tls.X509KeyPair(b, b) // key and chain in one file
			return &c, err
		}},
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return d
}

// presented is the leaf certificate the device presents now.
func (d *device) presented(t *testing.T) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", d.addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reading the certificate only
	if err != nil {
		t.Fatalf("connecting to device %s: %v", d.id, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// The hooks, POSIX sh, as an operator would write them for a device that
// is reached over its management interface (here: the device's
// directory). $1 is the device's directory.
const (
	// goodHook makes the device generate a key and CSR, and installs the
	// key with the chain it gets, atomically.
	goodHook = `#!/bin/sh
set -eu
dir=$1
case "$OUTPOST_PHASE" in
csr)
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/key.new" -subj "/CN=$OUTPOST_DEVICE_ID" -sha256 2>"$dir/openssl.err"
	;;
install)
	{ cat "$dir/key.new"; cat; } >"$dir/server.pem.tmp"
	mv "$dir/server.pem.tmp" "$dir/server.pem"
	rm -f "$dir/key.new"
	;;
*)
	echo "unknown phase $OUTPOST_PHASE" >&2
	exit 64
	;;
esac
`
	// brokenHook fails as a device would that refuses to make a key.
	brokenHook = `#!/bin/sh
echo "device $OUTPOST_DEVICE_ID: keygen refused, flash is read-only" >&2
exit 1
`
	// lazyHook makes a CSR but installs nothing.
	lazyHook = `#!/bin/sh
set -eu
dir=$1
case "$OUTPOST_PHASE" in
csr)
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/key.new" -subj "/CN=$OUTPOST_DEVICE_ID" -sha256 2>/dev/null
	;;
install)
	cat >/dev/null
	;;
esac
`
)

func writeHook(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// result is one line of `outpost-agent rotate --json`.
type result struct {
	DeviceID  string `json:"device_id"`
	Route     string `json:"route"`
	Outcome   string `json:"outcome"`
	Due       bool   `json:"due"`
	Reason    string `json:"reason"`
	OldSerial string `json:"old_serial"`
	Serial    string `json:"serial"`
	Phase     string `json:"phase"`
	Error     string `json:"error"`
	Stderr    string `json:"stderr"`
}

// rotate runs `outpost-agent rotate` with args and returns its JSON
// results and exit error.
func rotate(t *testing.T, a *cptest.Agent, args ...string) (map[string]result, error) {
	t.Helper()
	cmd := exec.Command(agentBin, append(append([]string{"rotate", "--json"}, args...), "--config", a.Config)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var res []result
	if stdout.Len() == 0 && err != nil {
		return nil, err
	}
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil {
		t.Fatalf("outpost-agent rotate %v: %v (stdout %q, stderr %q)\n%s", args, jerr, stdout.String(), stderr.String(), a.Tail())
	}
	m := map[string]result{}
	for _, r := range res {
		m[r.DeviceID] = r
	}
	return m, err
}

// TestAgentlessRotation: a local-mode agent rotates a device that
// presents a self-signed certificate; the device then presents a
// certificate from the gateway's edge CA for its id, and the control plane
// has the rotation.succeeded event in the device's timeline. A hook that
// fails, a hook that installs nothing and a device without a route give
// rotation.failed (with the hook's stderr), rotation.failed (verify) and
// rotation.no_route.
func TestAgentlessRotation(t *testing.T) {
	start := time.Now()
	e := cptest.Start(t, nil)
	e.StartSync()
	rootID, trustPEM := e.DMSTrust()
	one := 1
	var devCA apitypes.CA
	e.MustDo("POST", "/api/v1/cas", e.AdminToken, apitypes.CreateCARequest{Name: "devices", ParentID: rootID, CommonName: "Outpost Test Devices CA", MaxPathLen: &one}, &devCA, 201)

	good, broken, lazy, orphan := startDevice(t, "cam-good"), startDevice(t, "cam-broken"), startDevice(t, "cam-lazy"), startDevice(t, "ups-orphan")
	initial := good.presented(t)
	if !bytes.Equal(initial.RawIssuer, initial.RawSubject) || initial.CheckSignature(initial.SignatureAlgorithm, initial.RawTBSCertificate, initial.Signature) != nil {
		t.Fatalf("the device should start with a self-signed certificate, got one from %s", initial.Issuer)
	}

	hooks := t.TempDir()
	inventory := filepath.Join(t.TempDir(), "devices.yaml")
	estPort := cptest.FreePort(t)
	extra := fmt.Sprintf(`est:
  listen: 127.0.0.1:%d
  hostnames: [127.0.0.1, localhost]
rotation:
  inventory_file: %s
  interval: 1h
  verify_timeout: 2s
  routes:
    - name: acme-cameras
      match: {platform: "acme-*", os_version: ">=2.1,<3", model: "X1*"}
      hook: %s
      args: [%s]
      timeout: 30s
    - name: broken-firmware
      match: {platform: acme-cam, os_version: "1.*"}
      hook: %s
      timeout: 30s
    - name: lazy
      match: {platform: lazy}
      hook: %s
      args: [%s]
      timeout: 30s
`, estPort, inventory, writeHook(t, hooks, "good.sh", goodHook), good.dir, writeHook(t, hooks, "broken.sh", brokenHook),
		writeHook(t, hooks, "lazy.sh", lazyHook), lazy.dir)
	policy := apitypes.DMSPolicy{Mode: "local", DeviceAuth: "basic_secret", Profile: "device", LocalQuota: 100, ReenrollWindowDays: 14}
	agent := cptest.NewAgentFor(t, agentBin, e, cptest.Broker{URL: e.BrokerURL},
		apitypes.CreateDMSRequest{Name: "gw-rotation", Policy: &policy, AuthorizedCAs: []string{devCA.ID}},
		"keystore:\n  backend: file\n  file:\n    passphrase:\n      value: rotation-e2e", extra, nil)
	adminURL := "http://" + configValue(t, agent.Config, "admin_addr")
	agent.Start()
	cptest.Eventually(t, time.Minute, "the agent holds its edge CA", func() bool {
		var s struct {
			Mode           string    `json:"mode"`
			EdgeCANotAfter time.Time `json:"edge_ca_not_after"`
		}
		resp, err := http.Get(adminURL + "/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&s) == nil && s.Mode == "local" && !s.EdgeCANotAfter.IsZero()
	}, agent.Tail)
	t.Logf("control plane, broker and agent ready in %v", time.Since(start).Round(100*time.Millisecond))

	// The agent's first scan (at start, of an inventory that does not
	// exist yet) is done when /metrics shows it; the next is an hour
	// away, so what follows runs only when the test asks.
	metrics := func() []byte {
		resp, err := http.Get(adminURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	cptest.Eventually(t, 30*time.Second, "the agent's first rotation scan", func() bool {
		return bytes.Contains(metrics(), []byte("outpost_agent_rotation_last_scan_seconds"))
	}, agent.Tail)

	// The inventory appears while the agent runs (it reads it again when
	// it changes).
	inv := fmt.Sprintf(`devices:
  - {id: cam-good, address: "%s", platform: acme-cam, os_version: 2.4.1, model: X100}
  - {id: cam-broken, address: "%s", platform: acme-cam, os_version: 1.9, model: X100}
  - {id: cam-lazy, address: "%s", platform: lazy, os_version: "1", model: L}
  - {id: ups-orphan, address: "%s", platform: apc, os_version: "7.0", model: smart-ups}
`, good.addr, broken.addr, lazy.addr, orphan.addr)
	if err := os.WriteFile(inventory, []byte(inv), 0o600); err != nil {
		t.Fatal(err)
	}

	// Dry run: routes and what is due; nothing changes.
	plan, err := rotate(t, agent, "--dry-run")
	if err != nil {
		t.Fatalf("rotate --dry-run: %v", err)
	}
	for id, route := range map[string]string{"cam-good": "acme-cameras", "cam-broken": "broken-firmware", "cam-lazy": "lazy", "ups-orphan": ""} {
		if r := plan[id]; r.Route != route || (route != "" && (!r.Due || !strings.Contains(r.Reason, "not issued by this gateway's CAs"))) {
			t.Errorf("dry run %s: got %+v, want route %q, due", id, r, route)
		}
	}
	if got := good.presented(t); !bytes.Equal(got.Raw, initial.Raw) {
		t.Fatal("the dry run changed the device's certificate")
	}

	rotStart := time.Now()
	res, err := rotate(t, agent)
	if err == nil || !strings.Contains(err.Error(), "2 of 4 rotations did not complete") {
		t.Errorf("rotate: got %v, want it to report the two failures", err)
	}
	t.Logf("rotate ran in %v", time.Since(rotStart).Round(10*time.Millisecond))

	// The good device presents a certificate of the gateway's edge CA,
	// for its id, with the new serial.
	r := res["cam-good"]
	if r.Outcome != "succeeded" || r.Serial == "" || r.OldSerial != serialHex(initial) {
		t.Fatalf("cam-good: got %+v, want succeeded\n%s", r, agent.Tail())
	}
	now := good.presented(t)
	if serialHex(now) != r.Serial || serialHex(now) == serialHex(initial) || now.Subject.CommonName != "cam-good" {
		t.Errorf("cam-good presents %s serial %s, want CN cam-good serial %s", now.Subject, serialHex(now), r.Serial)
	}
	trust := x509.NewCertPool()
	trust.AppendCertsFromPEM(trustPEM)
	estc := &estclient.Client{BaseURL: fmt.Sprintf("https://127.0.0.1:%d/.well-known/est", estPort),
		HTTPClient: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: trust, MinVersion: tls.VersionTLS12}}}}
	var cacerts []*x509.Certificate
	cptest.Eventually(t, 30*time.Second, "the agent serves EST cacerts", func() bool {
		cacerts, err = estc.CACerts(context.Background())
		return err == nil
	}, agent.Tail)
	edge := cacerts[0]
	if err := now.CheckSignatureFrom(edge); err != nil || !edge.IsCA {
		t.Errorf("cam-good's new certificate is not from the edge CA %s: %v", edge.Subject, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cacerts[len(cacerts)-1])
	inter := x509.NewCertPool()
	for _, c := range cacerts[:len(cacerts)-1] {
		inter.AddCert(c)
	}
	if _, err := now.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("cam-good's new certificate does not verify to the root: %v", err)
	}

	if r := res["cam-broken"]; r.Outcome != "failed" || r.Phase != "csr" || !strings.Contains(r.Stderr, "keygen refused, flash is read-only") {
		t.Errorf("cam-broken: got %+v, want failed in csr with the hook's stderr", r)
	}
	if r := res["cam-lazy"]; r.Outcome != "failed" || r.Phase != "verify" || !strings.Contains(r.Error, "not the new certificate") {
		t.Errorf("cam-lazy: got %+v, want failed in verify", r)
	}
	if r := res["ups-orphan"]; r.Outcome != "no_route" {
		t.Errorf("ups-orphan: got %+v, want no_route", r)
	}

	// The events reach the control plane.
	type ev struct {
		kind   string
		detail map[string]any
	}
	events := func(device string) []ev {
		rows, err := e.DB().Query(context.Background(), `SELECT kind, detail FROM sync_events WHERE dms_id = $1 AND device_id = $2 AND kind LIKE 'rotation.%' ORDER BY at`, uuid.MustParse(agent.DMSID), device)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []ev
		for rows.Next() {
			var k, d string
			if err := rows.Scan(&k, &d); err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			_ = json.Unmarshal([]byte(d), &m)
			out = append(out, ev{k, m})
		}
		return out
	}
	want := map[string]string{"cam-good": "rotation.succeeded", "cam-broken": "rotation.failed", "cam-lazy": "rotation.failed", "ups-orphan": "rotation.no_route"}
	cptest.Eventually(t, 30*time.Second, "the rotation events reach the control plane", func() bool {
		for dev := range want {
			if len(events(dev)) == 0 {
				return false
			}
		}
		return true
	}, agent.Tail)
	for dev, kind := range want {
		evs := events(dev)
		if len(evs) != 1 || evs[0].kind != kind {
			t.Errorf("%s: events %v, want one %s", dev, evs, kind)
		}
	}
	if d := events("cam-broken")[0].detail; !strings.Contains(fmt.Sprint(d["stderr"]), "keygen refused") || d["phase"] != "csr" || d["route"] != "broken-firmware" || d["exit_code"] != float64(1) {
		t.Errorf("cam-broken event detail: %v", d)
	}
	if d := events("cam-good")[0].detail; d["serial"] != r.Serial || d["old_serial"] != serialHex(initial) || d["route"] != "acme-cameras" {
		t.Errorf("cam-good event detail: %v, want serial %s", d, r.Serial)
	}

	// In the devices' history through the API (devices the registry
	// knows: those the edge CA issued a certificate for).
	for dev, kind := range map[string]string{"cam-good": "rotation.succeeded", "cam-lazy": "rotation.failed"} {
		var d apitypes.Device
		cptest.Eventually(t, 30*time.Second, dev+"'s timeline has "+kind, func() bool {
			if st, _ := e.Do("GET", "/api/v1/devices/"+dev, e.AdminToken, nil, &d); st != 200 {
				return false
			}
			for _, ev := range d.Timeline {
				if ev.Kind == kind {
					return true
				}
			}
			return false
		}, func() string { return fmt.Sprintf("timeline: %+v", d.Timeline) })
	}
	var d apitypes.Device
	e.MustDo("GET", "/api/v1/devices/cam-good", e.AdminToken, nil, &d, 200)
	if len(d.Slots) != 1 || d.Slots[0].ActiveSerial != r.Serial {
		t.Errorf("cam-good's slots: %+v, want active serial %s", d.Slots, r.Serial)
	}

	// Counters on /metrics.
	m := metrics()
	for _, want := range []string{`outpost_agent_rotations_total{outcome="succeeded"} 1`, `outpost_agent_rotations_total{outcome="failed"} 2`,
		`outpost_agent_rotations_total{outcome="no_route"} 1`, "outpost_agent_rotation_devices 4", "outpost_agent_rotation_backoff_devices 2", "outpost_agent_online 1"} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("/metrics lacks %q:\n%s", want, m)
		}
	}

	// Once rotated, the device is not due; one device at a time.
	res, err = rotate(t, agent, "--device", "cam-good")
	if err != nil || len(res) != 1 || res["cam-good"].Outcome != "not_due" {
		t.Errorf("second rotate of cam-good: %+v, %v", res, err)
	}
	if _, err := rotate(t, agent, "--device", "nope"); err == nil || !strings.Contains(err.Error(), "no such device") {
		t.Errorf("unknown device: got %v", err)
	}

	// Queued mode: the control plane signs over the sync link while the
	// rotation waits (within the route's timeout); the device then
	// presents a certificate of the DMS's authorized CA.
	queued := policy
	queued.Mode = "queued"
	e.MustDo("PATCH", "/api/v1/dmss/"+agent.DMSID, e.AdminToken, apitypes.UpdateDMSRequest{Policy: &queued}, nil, 200)
	cptest.Eventually(t, 30*time.Second, "the agent applies the queued policy", func() bool {
		var s struct {
			Mode string `json:"mode"`
		}
		resp, err := http.Get(adminURL + "/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&s) == nil && s.Mode == "queued"
	}, agent.Tail)
	before := good.presented(t)
	res, err = rotate(t, agent, "--device", "cam-good", "--force")
	if r := res["cam-good"]; err != nil || r.Outcome != "succeeded" || r.OldSerial != serialHex(before) {
		t.Fatalf("queued rotation: %+v, %v\n%s", res, err, agent.Tail())
	}
	after := good.presented(t)
	devCert := mustParsePEM(t, []byte(devCA.CertPEM))
	if serialHex(after) != res["cam-good"].Serial || after.CheckSignatureFrom(devCert) != nil || after.Subject.CommonName != "cam-good" {
		t.Errorf("after the queued rotation cam-good presents %s from %s, want a certificate of %s", after.Subject, after.Issuer, devCert.Subject)
	}
	res, err = rotate(t, agent, "--dry-run", "--device", "cam-good")
	if r := res["cam-good"]; err != nil || r.Due {
		t.Errorf("a certificate of the authorized CA is this gateway's: %+v, %v", r, err)
	}
	t.Logf("whole test in %v", time.Since(start).Round(100*time.Millisecond))
}

func mustParsePEM(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM block in %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func serialHex(c *x509.Certificate) string { return strings.ToLower(c.SerialNumber.Text(16)) }

// configValue reads a top-level "key: value" line of an agent config.
func configValue(t *testing.T, file, key string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s: no %s", file, key)
	return ""
}
