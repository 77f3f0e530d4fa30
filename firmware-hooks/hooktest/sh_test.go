package hooktest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestShEnrollSecret: a device with a one-time secret enrolls under
// busybox sh; a second run finds nothing to do; the secret never shows.
func TestShEnrollSecret(t *testing.T) {
	dir := t.TempDir()
	s := deviceEnv(dir)
	var device, secret string
	s["OUTPOST_SECRET_FILE"], device, secret = secretFile(t, dir)
	s["OUTPOST_CA_CHAIN"] = filepath.Join(dir, "chain.pem")
	out, code := runSh(t, s, hookPath())
	noSecret(t, out, secret)
	if code != 0 {
		t.Fatalf("enroll: exit %d, want 0:\n%s", code, out)
	}
	c := checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
	if fi, err := os.Stat(s["OUTPOST_KEY"]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v, want 0600", fi.Mode(), err)
	}
	if got, want := listDir(t, dir), []string{"chain.pem", "device.key", "device.pem", "secret"}; !slices.Equal(got, want) {
		t.Errorf("files after enrollment: got %v, want %v", got, want)
	}
	if b, _ := os.ReadFile(s["OUTPOST_CA_CHAIN"]); !bytes.Contains(b, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("CA chain file: %q", b)
	}

	out, code = runSh(t, s, hookPath())
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Fatalf("second run: exit %d, want 0 and nothing to do:\n%s", code, out)
	}
	if c2 := readCert(t, s["OUTPOST_CERT"]); c2.SerialNumber.Cmp(c.SerialNumber) != 0 {
		t.Errorf("second run replaced the certificate")
	}
	out, code = runSh(t, s, hookPath(), "status")
	if code != 0 || !strings.Contains(out, "subject: "+device) || !strings.Contains(out, "renewal: due from") {
		t.Errorf("status: exit %d:\n%s", code, out)
	}
}

// TestShEnrollBootstrap: the first enrollment authenticated with the
// bootstrap (manufacturer) certificate; the device id is its CN.
func TestShEnrollBootstrap(t *testing.T) {
	dir := t.TempDir()
	s := deviceEnv(dir)
	s["OUTPOST_BOOTSTRAP_CERT"] = env["OUTPOST_BOOTSTRAP_CERT"]
	s["OUTPOST_BOOTSTRAP_KEY"] = env["OUTPOST_BOOTSTRAP_KEY"]
	s["OUTPOST_KEY_TYPE"] = "ec-p384"
	out, code := runSh(t, s, hookPath())
	if code != 0 {
		t.Fatalf("enroll with the bootstrap certificate: exit %d:\n%s", code, out)
	}
	checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], "bootstrap-device-1")
}

// TestShRenew: with a renewal window wider than the validity the fresh
// certificate is due: re-enrollment gives a new serial for the same key;
// --rekey a new serial for a new key. No temporary file is left.
func TestShRenew(t *testing.T) {
	dir := t.TempDir()
	s := deviceEnv(dir)
	var device string
	s["OUTPOST_SECRET_FILE"], device, _ = secretFile(t, dir)
	if out, code := runSh(t, s, hookPath()); code != 0 {
		t.Fatalf("enroll: exit %d:\n%s", code, out)
	}
	first := checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
	key1, _ := os.ReadFile(s["OUTPOST_KEY"])

	s["OUTPOST_RENEW_PERCENT"] = "100"
	out, code := runSh(t, s, hookPath())
	if code != 0 || !strings.Contains(out, "renewed") {
		t.Fatalf("renew: exit %d, want 0 and renewed:\n%s", code, out)
	}
	second := checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Errorf("renewal kept serial %x", first.SerialNumber)
	}
	if key2, _ := os.ReadFile(s["OUTPOST_KEY"]); !bytes.Equal(key1, key2) {
		t.Errorf("renewal without --rekey changed the key")
	}

	delete(s, "OUTPOST_RENEW_PERCENT")
	s["OUTPOST_RENEW_DAYS"] = "3650"
	out, code = runSh(t, s, hookPath(), "--rekey")
	if code != 0 {
		t.Fatalf("renew --rekey: exit %d:\n%s", code, out)
	}
	third := checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
	if third.SerialNumber.Cmp(second.SerialNumber) == 0 {
		t.Errorf("re-key kept serial %x", second.SerialNumber)
	}
	if samePub(third.PublicKey, second.PublicKey) {
		t.Errorf("--rekey kept the key")
	}
	if got, want := listDir(t, dir), []string{"device.key", "device.pem", "secret"}; !slices.Equal(got, want) {
		t.Errorf("files after renewals: got %v, want %v (no temporary, request or lock file left)", got, want)
	}
}

// TestShExitCodes: a wrong secret is refused (4) with the server's
// message; an unreachable server is temporary (3); bad settings are 2.
func TestShExitCodes(t *testing.T) {
	dir := t.TempDir()
	s := deviceEnv(dir)
	device, _ := cred(t)
	s["OUTPOST_SECRET_FILE"] = filepath.Join(dir, "secret")
	if err := os.WriteFile(s["OUTPOST_SECRET_FILE"], []byte(device+":not-the-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := runSh(t, s, hookPath())
	noSecret(t, out, "not-the-secret")
	if code != 4 || !strings.Contains(out, "refused by the server (401") {
		t.Errorf("wrong secret: exit %d, want 4 with the 401 message:\n%s", code, out)
	}
	if _, err := os.Stat(s["OUTPOST_CERT"]); !os.IsNotExist(err) {
		t.Errorf("a refused enrollment left a certificate: %v", err)
	}

	// The server is verified with OUTPOST_EST_CA only, not the system's
	// public CAs.
	s["OUTPOST_EST_CA"] = "/etc/ssl/certs/ca-certificates.crt"
	if out, code := runSh(t, s, hookPath()); code != 3 || !strings.Contains(out, "could not be verified") {
		t.Errorf("EST server not verified by OUTPOST_EST_CA: exit %d, want 3:\n%s", code, out)
	}
	s["OUTPOST_EST_CA"] = env["OUTPOST_EST_CA"]
	s["OUTPOST_EST_URL"] = closedURL(t)
	if out, code := runSh(t, s, hookPath()); code != 3 || !strings.Contains(out, "no answer") {
		t.Errorf("unreachable server: exit %d, want 3:\n%s", code, out)
	}
	s["OUTPOST_EST_URL"] = "http://127.0.0.1/.well-known/est"
	if out, code := runSh(t, s, hookPath()); code != 2 {
		t.Errorf("http URL: exit %d, want 2:\n%s", code, out)
	}
	if out, code := runSh(t, s, hookPath(), "--bogus"); code != 2 {
		t.Errorf("unknown option: exit %d, want 2:\n%s", code, out)
	}
}

// TestShConfigFile: settings from a config file; the environment wins.
func TestShConfigFile(t *testing.T) {
	dir := t.TempDir()
	sf, device, _ := secretFile(t, dir)
	conf := filepath.Join(dir, "enroll.conf")
	body := "# outpost-enroll settings\nOUTPOST_CONFIG_VERSION=1\n" +
		"OUTPOST_EST_URL=\"" + closedURL(t) + "\"\n" +
		"  OUTPOST_EST_CA = '" + env["OUTPOST_EST_CA"] + "'\n" +
		"OUTPOST_KEY=" + filepath.Join(dir, "k.pem") + "\n" +
		"OUTPOST_CERT=" + filepath.Join(dir, "c.pem") + "\n" +
		"OUTPOST_SECRET_FILE=" + sf + "\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	// The file's URL is closed; the environment's is the agent.
	out, code := runSh(t, map[string]string{"OUTPOST_EST_URL": env["OUTPOST_EST_URL"]}, hookPath(), "--config", conf)
	if code != 0 {
		t.Fatalf("enroll with a config file: exit %d:\n%s", code, out)
	}
	checkPair(t, filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), device)

	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("OUTPOST_EST_URL=https://x\n$(touch /tmp/pwned)=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := runSh(t, nil, hookPath(), "--config", bad); code != 2 || !strings.Contains(out, "unknown setting") {
		t.Errorf("config file with an unknown name: exit %d, want 2:\n%s", code, out)
	}
}

// TestShLock: a lock held by a live process of this boot makes the run
// exit 3; a lock left from another boot (its pid reused since) is taken
// over.
func TestShLock(t *testing.T) {
	dir := t.TempDir()
	s := deviceEnv(dir)
	var device string
	s["OUTPOST_SECRET_FILE"], device, _ = secretFile(t, dir)
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	lockDir := s["OUTPOST_KEY"] + ".lock"
	if err := os.Mkdir(lockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writePid := func(line string) {
		if err := os.WriteFile(filepath.Join(lockDir, "pid"), []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePid(fmt.Sprintf("%d %s", os.Getpid(), strings.TrimSpace(string(boot))))
	if out, code := runSh(t, s, hookPath()); code != 3 || !strings.Contains(out, "is running") {
		t.Errorf("lock held: exit %d, want 3:\n%s", code, out)
	}
	if _, err := os.Stat(lockDir); err != nil {
		t.Errorf("a run that did not hold the lock removed it: %v", err)
	}
	writePid("1 00000000-0000-0000-0000-000000000000")
	if out, code := runSh(t, s, hookPath()); code != 0 {
		t.Fatalf("stale lock from another boot: exit %d, want 0:\n%s", code, out)
	}
	checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
	if _, err := os.Stat(lockDir); !os.IsNotExist(err) {
		t.Errorf("lock left after the run: %v", err)
	}
}

// TestInterruptedInstall: a power cut between the steps of a re-key's
// installation (new certificate in <cert>.new, new key still in
// <key>.next) is finished by the next run, by the sh hook and by the Go
// client alike, so key and certificate end up a pair.
func TestInterruptedInstall(t *testing.T) {
	dir := t.TempDir()
	s := deviceEnv(dir)
	var device string
	s["OUTPOST_SECRET_FILE"], device, _ = secretFile(t, dir)
	if out, code := runSh(t, s, hookPath()); code != 0 {
		t.Fatalf("enroll: exit %d:\n%s", code, out)
	}
	key1, _ := os.ReadFile(s["OUTPOST_KEY"])
	cert1, _ := os.ReadFile(s["OUTPOST_CERT"])
	if out, code := runSh(t, s, hookPath(), "--rekey"); code != 0 {
		t.Fatalf("rekey: exit %d:\n%s", code, out)
	}
	key2, _ := os.ReadFile(s["OUTPOST_KEY"])
	cert2, _ := os.ReadFile(s["OUTPOST_CERT"])
	interrupted := func() {
		t.Helper()
		for path, b := range map[string][]byte{s["OUTPOST_KEY"]: key1, s["OUTPOST_CERT"]: cert1, s["OUTPOST_KEY"] + ".next": key2, s["OUTPOST_CERT"] + ".new": cert2} {
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(who, out string) {
		t.Helper()
		k, _ := os.ReadFile(s["OUTPOST_KEY"])
		c, _ := os.ReadFile(s["OUTPOST_CERT"])
		if !bytes.Equal(k, key2) || !bytes.Equal(c, cert2) {
			t.Errorf("%s did not finish the interrupted installation:\n%s", who, out)
		}
		checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
		if got, want := listDir(t, dir), []string{"device.key", "device.pem", "secret"}; !slices.Equal(got, want) {
			t.Errorf("%s: files %v, want %v", who, got, want)
		}
	}
	interrupted()
	out, code := runSh(t, s, hookPath())
	if code != 0 || !strings.Contains(out, "finished an interrupted installation") {
		t.Errorf("sh hook after the interruption: exit %d:\n%s", code, out)
	}
	check("the sh hook", out)
	interrupted()
	out, code = runDevice(t, s)
	if code != 0 {
		t.Errorf("Go client after the interruption: exit %d:\n%s", code, out)
	}
	check("the Go client", out)
}
