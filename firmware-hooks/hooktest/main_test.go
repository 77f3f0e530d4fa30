package hooktest

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/firmware-hooks/internal/devicecmd"
)

// env is outpost.env of the testbed every test here shares: one
// testbed/up for the package (TestMain), testbed/down at the end.
var (
	env  map[string]string
	root string // the repository
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	var err error
	if root, err = filepath.Abs("../.."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "outpost-hooktest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	script := func(name string) error {
		cmd := exec.Command(filepath.Join(root, "testbed", name))
		cmd.Env = append(os.Environ(), "OUTPOST_TESTBED_DIR="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("testbed/%s: %v\n%s", name, err, out)
		}
		return nil
	}
	start := time.Now()
	defer func() {
		if err := script("down"); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	if err := script("up"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if env, err = readEnv(filepath.Join(dir, "outpost.env")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("hooktest: testbed up in %v\n", time.Since(start).Round(100*time.Millisecond))
	code := m.Run()
	if bbDir != "" {
		os.RemoveAll(bbDir)
	}
	if code != 0 {
		if b, err := os.ReadFile(filepath.Join(dir, "logs", "agent.log")); err == nil {
			fmt.Fprintf(os.Stderr, "agent log (last 4 KiB):\n%s\n", b[max(0, len(b)-4096):])
		}
	}
	return code
}

// readEnv parses outpost.env (KEY='value' lines).
func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			m[k] = strings.ReplaceAll(strings.Trim(v, "'"), `'\''`, "'")
		}
	}
	return m, sc.Err()
}

var (
	secretsMu   sync.Mutex
	secretsNext int
)

// cred hands out the next unused one-time secret: device id and secret.
func cred(t *testing.T) (device, secret string) {
	t.Helper()
	secretsMu.Lock()
	defer secretsMu.Unlock()
	b, err := os.ReadFile(env["OUTPOST_EST_SECRETS_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if secretsNext >= len(lines) {
		t.Fatalf("out of one-time secrets (%d used)", secretsNext)
	}
	d, s, ok := strings.Cut(lines[secretsNext], ":")
	if !ok {
		t.Fatalf("secrets file line %q", lines[secretsNext])
	}
	secretsNext++
	return d, s
}

// secretFile writes a device:secret line into dir and returns its path.
func secretFile(t *testing.T, dir string) (path, device, secret string) {
	t.Helper()
	device, secret = cred(t)
	path = filepath.Join(dir, "secret")
	if err := os.WriteFile(path, []byte(device+":"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, device, secret
}

var (
	bbOnce sync.Once
	bbDir  string
	bbErr  error
)

// busyboxPath returns a directory holding only busybox applets (as
// symlinks to busybox), openssl and curl: the PATH of a device with
// nothing else, so the hook cannot use a coreutils option busybox lacks.
func busyboxPath(t *testing.T) string {
	t.Helper()
	bbOnce.Do(func() {
		bb, err := exec.LookPath("busybox")
		if err != nil {
			bbErr = fmt.Errorf("busybox is not installed (make deps): %w", err)
			return
		}
		out, err := exec.Command(bb, "--list").Output()
		if err != nil {
			bbErr = fmt.Errorf("busybox --list: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "outpost-busybox-")
		if err != nil {
			bbErr = err
			return
		}
		for _, a := range strings.Fields(string(out)) {
			if err := os.Symlink(bb, filepath.Join(dir, a)); err != nil {
				bbErr = err
				return
			}
		}
		for _, tool := range []string{"openssl", "curl"} {
			p, err := exec.LookPath(tool)
			if err != nil {
				bbErr = fmt.Errorf("%s is not installed (make deps): %w", tool, err)
				return
			}
			if err := os.Symlink(p, filepath.Join(dir, tool)); err != nil {
				bbErr = err
				return
			}
		}
		bbDir = dir
	})
	if bbErr != nil {
		t.Fatal(bbErr)
	}
	return bbDir
}

// hookPath is the sh hook under test.
func hookPath() string { return filepath.Join(root, "firmware-hooks", "sh", "outpost-enroll") }

// deviceEnv is the settings of a device whose files live in dir.
func deviceEnv(dir string) map[string]string {
	return map[string]string{
		"OUTPOST_EST_URL": env["OUTPOST_EST_URL"],
		"OUTPOST_EST_CA":  env["OUTPOST_EST_CA"],
		"OUTPOST_KEY":     filepath.Join(dir, "device.key"),
		"OUTPOST_CERT":    filepath.Join(dir, "device.pem"),
	}
}

// runSh runs `busybox sh script args...` with a busybox-only PATH and
// only the given settings in the environment; it returns the combined
// output and the exit code.
func runSh(t *testing.T, settings map[string]string, script string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("busybox", append([]string{"sh", script}, args...)...)
	cmd.Env = []string{"PATH=" + busyboxPath(t), "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()}
	for k, v := range settings {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s: %v", script, err)
	}
	return string(out), code
}

// runDevice runs outpost-device in process with only the given settings
// as its environment.
func runDevice(t *testing.T, settings map[string]string, args ...string) (string, int) {
	t.Helper()
	lookup := func(k string) (string, bool) { v, ok := settings[k]; return v, ok }
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := devicecmd.Main(ctx, args, lookup, &out, &out)
	return out.String(), code
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readKeyPub(t *testing.T, path string) crypto.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return k.(crypto.Signer).Public()
}

func samePub(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// checkPair checks that cert certifies key and names device.
func checkPair(t *testing.T, certPath, keyPath, device string) *x509.Certificate {
	t.Helper()
	c := readCert(t, certPath)
	if !samePub(c.PublicKey, readKeyPub(t, keyPath)) {
		t.Errorf("%s does not certify %s", certPath, keyPath)
	}
	if c.Subject.CommonName != device {
		t.Errorf("certificate subject CN %q, want %q", c.Subject.CommonName, device)
	}
	return c
}

// listDir returns the names in dir, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// setMode switches the DMS policy's mode through the control plane API
// (PATCH replaces the policy whole, so the other fields are sent back as
// they are) and waits until the agent has the new policy.
func setMode(t *testing.T, mode string) {
	t.Helper()
	setPolicy(t, "mode", mode)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			Mode           string    `json:"mode"`
			EdgeCANotAfter time.Time `json:"edge_ca_not_after"`
		}
		if err := apiCall("GET", env["OUTPOST_AGENT_ADMIN_URL"]+"/status", nil, &st); err == nil && st.Mode == mode && (mode != "local" || !st.EdgeCANotAfter.IsZero()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not switch to %s mode within 60 s (status %+v)", mode, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// setPolicy sets one field of the DMS policy through the control plane
// API; PATCH replaces the policy whole, so the other fields are sent back
// as they are.
func setPolicy(t *testing.T, field string, value any) {
	t.Helper()
	url := env["OUTPOST_API_URL"] + "/api/v1/dmss/" + env["OUTPOST_DMS_ID"]
	var dms struct {
		Policy map[string]any `json:"policy"`
	}
	if err := apiCall("GET", url, nil, &dms); err != nil {
		t.Fatal(err)
	}
	dms.Policy[field] = value
	if err := apiCall("PATCH", url, map[string]any{"policy": dms.Policy}, nil); err != nil {
		t.Fatal(err)
	}
}

func apiCall(method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+env["OUTPOST_ADMIN_TOKEN"])
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// closedURL is an EST URL nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	return "https://127.0.0.1:1/.well-known/est"
}

func noSecret(t *testing.T, out, secret string) {
	t.Helper()
	if secret != "" && strings.Contains(out, secret) {
		t.Errorf("the output shows the one-time secret:\n%s", out)
	}
}
