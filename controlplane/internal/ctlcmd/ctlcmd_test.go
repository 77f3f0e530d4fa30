package ctlcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/cli"
	"github.com/outpost-pki/outpost/internal/testpki"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// runCtl runs outpostctl through Run with env and returns its exit code
// and output.
func runCtl(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), args, env, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// apiEnv points outpostctl at srv with the fake's token and a config path
// that does not exist.
func apiEnv(t *testing.T, srvURL string) map[string]string {
	return map[string]string{
		EnvAPIURL: srvURL,
		EnvToken:  fakeToken,
		EnvConfig: filepath.Join(t.TempDir(), "none.json"),
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s:\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestLogin(t *testing.T) {
	_, srv := newFakeAPI(t)
	cfgPath := filepath.Join(t.TempDir(), "nested", "outpostctl.json")
	env := map[string]string{EnvConfig: cfgPath}

	code, stdout, stderr := runCtl(t, env, "login", "--url", srv.URL, "--token", fakeToken)
	if code != cli.ExitOK {
		t.Fatalf("login: exit %d, stderr %q", code, stderr)
	}
	if strings.Contains(stdout+stderr, fakeToken) || strings.Contains(stdout+stderr, "SECRET") {
		t.Errorf("login echoed the token:\n%s%s", stdout, stderr)
	}
	if !strings.Contains(stdout, "alice") || !strings.Contains(stdout, cfgPath) {
		t.Errorf("login output %q: want the principal and the config path", stdout)
	}
	st, err := os.Stat(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config mode: got %04o, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(cfgPath)
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	if want := (Config{Version: ConfigVersion, URL: srv.URL, Token: fakeToken}); cfg != want {
		t.Errorf("config: got %+v, want %+v", cfg, want)
	}

	// The saved config is enough for the next command.
	code, stdout, stderr = runCtl(t, env, "whoami")
	if code != cli.ExitOK || !strings.Contains(stdout, "alice") || strings.Contains(stdout, fakeToken) {
		t.Errorf("whoami from config: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	// A rejected token is neither saved nor printed.
	other := filepath.Join(t.TempDir(), "other.json")
	code, stdout, stderr = runCtl(t, map[string]string{EnvConfig: other}, "login", "--url", srv.URL, "--token", "wrong-SECRET-2")
	if code != cli.ExitError {
		t.Errorf("login with a bad token: exit %d, want %d", code, cli.ExitError)
	}
	if want := "outpostctl login: Unauthorized: missing or unknown API token\n"; stderr != want {
		t.Errorf("got stderr %q, want %q", stderr, want)
	}
	if strings.Contains(stdout+stderr, "wrong-SECRET-2") {
		t.Error("failed login echoed the token")
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Errorf("failed login wrote the config: %v", err)
	}
}

// TestAppEnvironment runs App().Main, which reads the process
// environment, and checks the precedence flag > environment > file.
func TestAppEnvironment(t *testing.T) {
	_, srv := newFakeAPI(t)
	cfgPath := filepath.Join(t.TempDir(), "outpostctl.json")
	if err := saveConfig(cfgPath, Config{URL: "http://127.0.0.1:1", Token: "stale"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvConfig, cfgPath)
	t.Setenv(EnvAPIURL, srv.URL) // overrides the file's URL
	t.Setenv(EnvToken, "")
	t.Setenv(EnvCAFile, "")

	var stdout, stderr bytes.Buffer
	code := App().Main(context.Background(), []string{"whoami", "--token", fakeToken}, &stdout, &stderr)
	if code != cli.ExitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	// Without --token the file's stale token is used and rejected.
	code = App().Main(context.Background(), []string{"whoami"}, &stdout, &stderr)
	if code != cli.ExitError || !strings.Contains(stderr.String(), "Unauthorized") {
		t.Errorf("stale token: exit %d, stderr %q", code, stderr.String())
	}
}

func TestCertList(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.certs = sampleCerts(3)
	env := apiEnv(t, srv.URL)

	t.Run("table", func(t *testing.T) {
		code, stdout, stderr := runCtl(t, env, "cert", "list", "--status", "active")
		if code != cli.ExitOK {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		if strings.Contains(stdout, "BEGIN CERTIFICATE") {
			t.Error("table shows a PEM")
		}
		golden(t, "cert_list.golden", stdout)
		if want := "more results: rerun with --cursor 2, or with --all\n"; stderr != want {
			t.Errorf("got stderr %q, want %q", stderr, want)
		}
	})
	t.Run("json", func(t *testing.T) {
		code, stdout, stderr := runCtl(t, env, "cert", "list", "-o", "json")
		if code != cli.ExitOK {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		var page apitypes.Page[apitypes.Certificate]
		if err := json.Unmarshal([]byte(stdout), &page); err != nil {
			t.Fatalf("%v in %s", err, stdout)
		}
		if len(page.Items) != 2 || page.NextCursor != "2" || page.Items[0].CertPEM == "" {
			t.Errorf("got %d items, cursor %q, want 2 items with PEMs and cursor 2", len(page.Items), page.NextCursor)
		}
		if !strings.Contains(stdout, "\n  \"items\": [") {
			t.Errorf("JSON is not indented:\n%s", stdout)
		}
	})
}

func TestCertListAll(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.certs = sampleCerts(5)
	env := apiEnv(t, srv.URL)

	code, stdout, stderr := runCtl(t, env, "cert", "list", "--all", "--limit", "2", "--cn", "dev-")
	if code != cli.ExitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "SERIAL") || !strings.HasPrefix(lines[5], "05 ") {
		t.Errorf("got %d lines, want a header and 5 rows:\n%s", len(lines), stdout)
	}
	want := []string{"cn=dev-&limit=2", "cn=dev-&cursor=2&limit=2", "cn=dev-&cursor=4&limit=2"}
	if strings.Join(f.queries, " ") != strings.Join(want, " ") {
		t.Errorf("got queries %v, want %v", f.queries, want)
	}

	code, stdout, stderr = runCtl(t, env, "cert", "list", "--all", "-o", "json")
	if code != cli.ExitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var page apitypes.Page[apitypes.Certificate]
	if err := json.Unmarshal([]byte(stdout), &page); err != nil {
		t.Fatalf("%v in %s", err, stdout)
	}
	if len(page.Items) != 5 || page.NextCursor != "" || page.Items[4].Serial != "05" {
		t.Errorf("got %+v, want all 5 certificates and no cursor", page)
	}
}

func TestCertListExpiresWithin(t *testing.T) {
	f, srv := newFakeAPI(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	app := newApp(environment{
		getenv:     func(k string) string { return apiEnv(t, srv.URL)[k] },
		now:        func() time.Time { return now },
		isTerminal: func(io.Writer) bool { return false },
	})
	var stdout, stderr bytes.Buffer
	if code := app.Main(context.Background(), []string{"cert", "list", "--expires-within", "720h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	q, _ := url.ParseQuery(f.queries[0])
	if q.Get("expires_after") != "2026-03-01T12:00:00Z" || q.Get("expires_before") != "2026-03-31T12:00:00Z" {
		t.Errorf("got %v, want expires_after now and expires_before now+720h", q)
	}
}

func TestAPIError(t *testing.T) {
	_, srv := newFakeAPI(t)
	code, stdout, stderr := runCtl(t, apiEnv(t, srv.URL), "ca", "list")
	if code != cli.ExitError {
		t.Errorf("exit %d, want %d", code, cli.ExitError)
	}
	if want := "outpostctl ca: Forbidden: this route needs the admin role\n"; stderr != want || stdout != "" {
		t.Errorf("got stdout %q stderr %q, want stderr %q", stdout, stderr, want)
	}
}

func TestCertImport(t *testing.T) {
	f, srv := newFakeAPI(t)
	p := testpki.NewT(t)
	ca := p.Root("Import Test Root").Intermediate("Import Test Issuing")
	fresh, dup := ca.Leaf("dev-new"), ca.Leaf("dev-old")
	f.known[dup.Cert.SerialNumber.Text(16)] = true

	dir := t.TempDir()
	write := func(name string, data []byte) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("fresh.pem", append(fresh.CertPEM(), fresh.KeyPEM()...)) // the key is skipped
	write("sub/dup.CRT", dup.CertPEM())
	write("sub/broken.cer", []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"))
	write("notes.txt", []byte("not picked up"))

	code, stdout, stderr := runCtl(t, apiEnv(t, srv.URL), "cert", "import", "--parallel", "2", dir)
	if code != cli.ExitError {
		t.Errorf("exit %d, want %d (one failure)", code, cli.ExitError)
	}
	if want := "imported 1, skipped 1 already present, failed 1\n"; stdout != want {
		t.Errorf("got stdout %q, want %q", stdout, want)
	}
	if !strings.Contains(stderr, "broken.cer: certificate 1:") || strings.Contains(stderr, "notes.txt") {
		t.Errorf("stderr %q: want the broken file named and notes.txt ignored", stderr)
	}
	if strings.Contains(stderr, "\r") {
		t.Errorf("progress bar drawn on a non-terminal: %q", stderr)
	}
	if !f.known[fresh.Cert.SerialNumber.Text(16)] {
		t.Error("the fresh certificate was not imported")
	}

	// Everything present now: a clean re-run skips all and succeeds.
	os.Remove(filepath.Join(dir, "sub", "broken.cer"))
	code, stdout, _ = runCtl(t, apiEnv(t, srv.URL), "cert", "import", dir)
	if want := "imported 0, skipped 2 already present, failed 0\n"; code != cli.ExitOK || stdout != want {
		t.Errorf("re-run: exit %d, stdout %q, want 0 and %q", code, stdout, want)
	}
}

func TestProgressLine(t *testing.T) {
	tests := []struct {
		c    importCounts
		want string
	}{
		{importCounts{files: 4}, "[>         ] 0/4 files  imported 0  skipped 0  failed 0"},
		{importCounts{filesDone: 2, files: 4, imported: 3, skipped: 1}, "[=====>    ] 2/4 files  imported 3  skipped 1  failed 0"},
		{importCounts{filesDone: 4, files: 4, imported: 5, failed: 2}, "[==========] 4/4 files  imported 5  skipped 0  failed 2"},
		{importCounts{}, "[==========] 0/0 files  imported 0  skipped 0  failed 0"},
	}
	for _, tt := range tests {
		if got := progressLine(tt.c, 10); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}

	var buf bytes.Buffer
	now := time.Unix(0, 0)
	p := &progress{w: &buf, enabled: true, now: func() time.Time { return now }}
	p.update(importCounts{files: 3, filesDone: 1}, false)
	p.update(importCounts{files: 3, filesDone: 2}, false) // within the interval: not drawn
	p.finish(importCounts{files: 3, filesDone: 3, imported: 3})
	if got := strings.Count(buf.String(), "\r"); got != 2 || !strings.HasSuffix(buf.String(), "3/3 files  imported 3  skipped 0  failed 0\n") {
		t.Errorf("got %q, want two draws ending with the final state", buf.String())
	}
}

func TestAuditVerify(t *testing.T) {
	f, srv := newFakeAPI(t)
	env := apiEnv(t, srv.URL)

	f.audit = apitypes.AuditVerifyResponse{OK: true, Checked: 10}
	code, stdout, _ := runCtl(t, env, "audit", "verify")
	if code != cli.ExitOK || !strings.Contains(stdout, "OK: 10 entries") {
		t.Errorf("intact chain: exit %d, stdout %q", code, stdout)
	}

	f.audit = apitypes.AuditVerifyResponse{OK: false, Checked: 42, FirstBadSeq: 42, Problem: "hash mismatch"}
	code, stdout, stderr := runCtl(t, env, "audit", "verify")
	if code != cli.ExitError {
		t.Errorf("broken chain: exit %d, want %d", code, cli.ExitError)
	}
	if !strings.Contains(stdout, "BROKEN at entry 42") {
		t.Errorf("stdout %q: want the first bad row", stdout)
	}
	if want := "outpostctl audit: audit chain broken: first bad entry is seq 42: hash mismatch\n"; stderr != want {
		t.Errorf("got stderr %q, want %q", stderr, want)
	}

	code, stdout, _ = runCtl(t, env, "audit", "verify", "-o", "json")
	var v apitypes.AuditVerifyResponse
	if code != cli.ExitError || json.Unmarshal([]byte(stdout), &v) != nil || v.FirstBadSeq != 42 {
		t.Errorf("json: exit %d, stdout %q", code, stdout)
	}
}

func TestDMSUpdateKeepsUnsetFields(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.dms = apitypes.DMS{ID: "d1", Name: "line-3", Status: "active", AuthorizedCAs: []string{"ca1"},
		Policy: apitypes.DMSPolicy{Mode: "online", DeviceAuth: "client_cert", Profile: "device", ReenrollWindowDays: 30, LocalQuota: 5}}

	code, _, stderr := runCtl(t, apiEnv(t, srv.URL), "dms", "update", "d1", "--local-quota", "0", "--mode", "queued")
	if code != cli.ExitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	want := apitypes.DMSPolicy{Mode: "queued", DeviceAuth: "client_cert", Profile: "device", ReenrollWindowDays: 30, LocalQuota: 0}
	if f.patched == nil || f.patched.Policy == nil || !equalPolicy(*f.patched.Policy, want) || f.patched.AuthorizedCAs != nil {
		t.Errorf("got PATCH %+v, want policy %+v and CAs unchanged", f.patched, want)
	}
}

func TestDMSUpdatePolicyV2Flags(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.dms = apitypes.DMS{ID: "d1", Name: "line-3", Status: "active", AuthorizedCAs: []string{"ca1", "ca2"},
		Policy: apitypes.DMSPolicy{Mode: "online", DeviceAuth: "client_cert", Profile: "device", ReenrollWindowDays: 30,
			EdgeCAValidityDays: 30, OnlineWaitMs: new(5000), JITRegistration: new(true)}}

	code, _, stderr := runCtl(t, apiEnv(t, srv.URL), "dms", "update", "d1", "--label", "sensors=ca2:device", "--label", "gw=ca1",
		"--edge-ca-validity-days", "7", "--edge-name-constraint", "line1.example", "--edge-name-constraint", "10.1.0.0/16",
		"--device-auth", "webhook", "--webhook-url", "https://auth.example/", "--online-wait-ms", "0", "--jit-registration=false")
	if code != cli.ExitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	want := apitypes.DMSPolicy{Mode: "online", DeviceAuth: "webhook", Profile: "device", ReenrollWindowDays: 30,
		Labels:             []apitypes.DMSLabel{{Name: "sensors", CAID: "ca2", Profile: "device"}, {Name: "gw", CAID: "ca1"}},
		EdgeCAValidityDays: 7, EdgeNameConstraints: []string{"line1.example", "10.1.0.0/16"}, WebhookURL: "https://auth.example/",
		OnlineWaitMs: new(0), JITRegistration: new(false)}
	if f.patched == nil || f.patched.Policy == nil || !equalPolicy(*f.patched.Policy, want) {
		t.Fatalf("got PATCH %+v, want policy %+v", f.patched, want)
	}
	code, stdout, _ := runCtl(t, apiEnv(t, srv.URL), "dms", "get", "d1")
	for _, line := range []string{"LABELS", "sensors=ca2:device, gw=ca1", "EDGE CA VALIDITY DAYS", "line1.example, 10.1.0.0/16", "https://auth.example/", "ONLINE WAIT MS", "JIT REGISTRATION"} {
		if code != cli.ExitOK || !strings.Contains(stdout, line) {
			t.Errorf("dms get output lacks %q:\n%s", line, stdout)
		}
	}
	if code, _, stderr := runCtl(t, apiEnv(t, srv.URL), "dms", "update", "d1", "--label", "no-ca"); code != cli.ExitUsage || !strings.Contains(stderr, "name=CA-ID") {
		t.Errorf("bad --label: exit %d, stderr %q", code, stderr)
	}
}

func equalPolicy(a, b apitypes.DMSPolicy) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestCompletion(t *testing.T) {
	var words []string
	for _, c := range commands() {
		words = append(words, c.name)
		for _, s := range c.subs {
			words = append(words, s.name)
		}
	}
	for _, shell := range shells {
		t.Run(shell, func(t *testing.T) {
			code, stdout, stderr := runCtl(t, nil, "completion", shell)
			if code != cli.ExitOK {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			for _, w := range append(words, "version", "expires-within", "reason") {
				if !strings.Contains(stdout, w) {
					t.Errorf("%s script does not mention %q", shell, w)
				}
			}
		})
	}
	// Every group's subcommands are offered together, under the group.
	_, bash, _ := runCtl(t, nil, "completion", "bash")
	if !strings.Contains(bash, `words="list get issue revoke export import"`) {
		t.Error("bash script does not list cert's subcommands")
	}
}

func TestUsageErrors(t *testing.T) {
	env := map[string]string{} // nothing configured: usage errors come first
	tests := [][]string{
		{"nosuch"},
		{"cert"},
		{"cert", "nosuch"},
		{"cert", "list", "--bogus"},
		{"cert", "list", "-o", "yaml"},
		{"cert", "list", "--limit", "1000"},
		{"cert", "list", "--status", "sleepy"},
		{"cert", "list", "--expires-within", "soon"},
		{"cert", "list", "--all", "--cursor", "x"},
		{"cert", "get"},
		{"cert", "get", "01", "02"},
		{"cert", "revoke", "01"},
		{"cert", "revoke", "01", "--reason", "bored"},
		{"cert", "export", "01", "--format", "p12"},
		{"cert", "issue", "--ca", "x"},
		{"cert", "import"},
		{"ca", "create", "--name", "x"},
		{"ca", "create", "--name", "x", "--cn", "y", "--key-algorithm", "dsa"},
		{"dms", "update", "d1"},
		{"dms", "create", "--name", "x", "--mode", "carrier-pigeon"},
		{"device", "register", "d1", "--label", "novalue"},
		{"token", "create", "--principal", "ci", "--role", "root"},
		{"login", "--url", "https://cp.example"},
		{"completion", "powershell"},
		{"whoami", "extra"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := runCtl(t, env, args...)
			if code != cli.ExitUsage {
				t.Errorf("got exit %d, want %d (stdout %q, stderr %q)", code, cli.ExitUsage, stdout, stderr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"cert", "list", "-h"}, {"cert", "--help"}, {"login", "-h"}} {
		code, stdout, stderr := runCtl(t, nil, args...)
		if code != cli.ExitOK || !strings.HasPrefix(stdout, "Usage: outpostctl") || stderr != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	_, stdout, _ := runCtl(t, nil, "cert", "list", "-h")
	for _, want := range []string{"--expires-within DURATION", "--all", "Connection flags:", "--url URL"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("cert list -h does not show %q:\n%s", want, stdout)
		}
	}
}

func TestInterspersedFlags(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	o := fs.String("o", "", "")
	all := fs.Bool("all", false, "")
	pos, err := parseInterspersed(fs, []string{"a", "-o", "json", "b", "--all", "--", "-c"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(pos, ",") != "a,b,-c" || *o != "json" || !*all {
		t.Errorf("got %v o=%q all=%v, want [a b -c] json true", pos, *o, *all)
	}
}

func TestNormalizeSerial(t *testing.T) {
	for in, want := range map[string]string{"0A:1B:FF": "0a1bff", "0x0a1b": "0a1b", " ab cd ": "abcd", "01": "01"} {
		if got := normalizeSerial(in); got != want {
			t.Errorf("normalizeSerial(%q): got %q, want %q", in, got, want)
		}
	}
}
