package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readEnv parses outpost.env (KEY='value' lines).
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[k] = strings.ReplaceAll(strings.Trim(v, "'"), `'\''`, "'")
		}
	}
	return env
}

// TestUpDown runs testbed/up, uses the system only through what
// outpost.env says (the way scripts and other tools do: curl and
// openssl), then testbed/down, and checks nothing it started is left.
func TestUpDown(t *testing.T) {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := func(name string) string {
		cmd := exec.Command(filepath.Join(root, "testbed", name))
		cmd.Env = append(os.Environ(), "OUTPOST_TESTBED_DIR="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("testbed/%s: %v\n%s", name, err, out)
		}
		return string(out)
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			script("down")
		}
	})
	t.Log(script("up"))
	env := readEnv(t, filepath.Join(dir, "outpost.env"))
	for _, k := range []string{"OUTPOST_API_URL", "OUTPOST_ADMIN_TOKEN", "OUTPOST_UI_URL", "OUTPOST_EST_URL", "OUTPOST_EST_CA", "OUTPOST_EST_SECRETS_FILE",
		"OUTPOST_BOOTSTRAP_CERT", "OUTPOST_BOOTSTRAP_KEY", "OUTPOST_OCSP_URL", "OUTPOST_DMS_ID", "OUTPOST_BIN"} {
		if env[k] == "" {
			t.Errorf("outpost.env has no %s", k)
		}
	}
	req, _ := http.NewRequest("GET", env["OUTPOST_API_URL"]+"/api/v1/dmss/"+env["OUTPOST_DMS_ID"], nil)
	req.Header.Set("Authorization", "Bearer "+env["OUTPOST_ADMIN_TOKEN"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET the DMS with the admin token: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, err := os.Stat(filepath.Join(env["OUTPOST_BIN"], "outpostctl")); err != nil {
		t.Errorf("OUTPOST_BIN: %v", err)
	}

	// Enroll with a one-time secret, and with the bootstrap certificate,
	// using curl and openssl only.
	work := t.TempDir()
	sh := func(script string) string {
		cmd := exec.Command("sh", "-ec", script)
		cmd.Dir = work
		cmd.Env = os.Environ()
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		return string(out)
	}
	out := sh(`IFS=: read -r DEV SECRET < "$OUTPOST_EST_SECRETS_FILE"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout dev.key -subj "/CN=$DEV" -outform DER 2>/dev/null | openssl base64 > dev.csr
curl -sS --fail --cacert "$OUTPOST_EST_CA" -u "$DEV:$SECRET" -H 'Content-Type: application/pkcs10' --data-binary @dev.csr "$OUTPOST_EST_URL/simpleenroll" | openssl base64 -d | openssl pkcs7 -inform DER -print_certs > dev.pem
cat dev.pem
echo "device $DEV"`)
	if !strings.Contains(out, "subject=CN = device-") {
		t.Errorf("enrollment with a one-time secret:\n%s", out)
	}
	// The device's certificate checked with openssl ocsp against
	// OUTPOST_OCSP_URL: the control plane answers for the gateway's edge
	// CA through the responder the gateway certified over sync, once the
	// certificate reached the registry (both within a few heartbeats).
	out = sh(`curl -sS --fail --cacert "$OUTPOST_EST_CA" "$OUTPOST_EST_URL/cacerts" | openssl base64 -d | openssl pkcs7 -inform DER -print_certs > chain.pem
openssl x509 -in chain.pem -out edge.pem
i=0
while :; do
	if openssl ocsp -issuer edge.pem -cert dev.pem -url "$OUTPOST_OCSP_URL" -CAfile chain.pem > ocsp.txt 2>&1 && grep -q 'dev.pem: good' ocsp.txt; then break; fi
	i=$((i + 1))
	if [ "$i" -ge 120 ]; then echo "no good OCSP answer after 60 s:"; cat ocsp.txt; exit 1; fi
	sleep 0.5
done
cat ocsp.txt`)
	if !strings.Contains(out, "Response verify OK") || !strings.Contains(out, "dev.pem: good") {
		t.Errorf("openssl ocsp against OUTPOST_OCSP_URL:\n%s", out)
	}
	out = sh(`openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout b.key -subj "/CN=bootstrap-device-1" -outform DER 2>/dev/null | openssl base64 > b.csr
curl -sS --fail --cacert "$OUTPOST_EST_CA" --cert "$OUTPOST_BOOTSTRAP_CERT" --key "$OUTPOST_BOOTSTRAP_KEY" -H 'Content-Type: application/pkcs10' --data-binary @b.csr "$OUTPOST_EST_URL/simpleenroll" | openssl base64 -d | openssl pkcs7 -inform DER -print_certs`)
	if !strings.Contains(out, "subject=CN = bootstrap-device-1") {
		t.Errorf("enrollment with the bootstrap certificate:\n%s", out)
	}
	// The dashboard loads (its login page, for a browser without a
	// session).
	if resp, err := http.Get(env["OUTPOST_UI_URL"]); err != nil || resp.StatusCode != 200 {
		t.Errorf("dashboard at %s: %v %v", env["OUTPOST_UI_URL"], resp, err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), `data-test="login-form"`) {
			t.Errorf("dashboard at %s did not show the login page", env["OUTPOST_UI_URL"])
		}
	}
	// The OCSP responder answers (a request without body is refused
	// cleanly, not with a server error).
	if resp, err := http.Post(env["OUTPOST_OCSP_URL"], "application/ocsp-request", strings.NewReader("")); err != nil || resp.StatusCode >= 500 {
		t.Errorf("OCSP at %s: %v %v", env["OUTPOST_OCSP_URL"], resp, err)
	} else {
		resp.Body.Close()
	}

	t.Log(script("down"))
	downed = true
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("pgrep", "-f", dir).Output()
		if strings.TrimSpace(string(out)) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left after testbed/down: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if resp, err := http.Get(env["OUTPOST_API_URL"] + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("the control plane still answers after testbed/down")
	}
	if _, err := os.Stat(filepath.Join(dir, "outpost.env")); !os.IsNotExist(err) {
		t.Errorf("outpost.env still there after testbed/down: %v", err)
	}
}
