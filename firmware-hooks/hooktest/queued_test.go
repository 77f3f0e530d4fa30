package hooktest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestQueued switches the DMS to queued mode: the agent answers 202 with
// Retry-After and the control plane signs over sync. The sh hook waits,
// sends the same request again and installs the certificate; with no
// wait allowed it exits 5 keeping the request, and the next run finishes
// it; renewal goes through 202 too; the Go client does the same. The DMS
// goes back to local mode at the end.
func TestQueued(t *testing.T) {
	setMode(t, "queued")
	t.Cleanup(func() { setMode(t, "local") })

	var wg sync.WaitGroup
	run := func(name string, f func(t *testing.T)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name, f)
		}()
	}
	// The subtests wait on the agent, not on each other: run them at once.
	run("sh-enroll-and-renew", func(t *testing.T) {
		dir := t.TempDir()
		s := deviceEnv(dir)
		var device string
		s["OUTPOST_SECRET_FILE"], device, _ = secretFile(t, dir)
		s["OUTPOST_MAX_WAIT"] = "120"
		out, code := runSh(t, s, hookPath())
		if code != 0 {
			t.Fatalf("enroll in queued mode: exit %d:\n%s", code, out)
		}
		if !strings.Contains(out, "request pending") || !strings.Contains(out, "retrying in 5s") {
			t.Errorf("the hook did not wait on a 202 with Retry-After 5:\n%s", out)
		}
		first := checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
		// Queued: signed by the control plane with the devices CA.
		if first.Issuer.CommonName != "Outpost Demo Devices CA" {
			t.Errorf("queued certificate issuer %q, want the devices CA", first.Issuer.CommonName)
		}
		// A queued gateway keys requests by public key: renewals there
		// make a new key (OUTPOST_REKEY=1).
		s["OUTPOST_RENEW_PERCENT"] = "100"
		s["OUTPOST_REKEY"] = "1"
		out, code = runSh(t, s, hookPath())
		if code != 0 || !strings.Contains(out, "simplereenroll: request pending") {
			t.Fatalf("renew in queued mode: exit %d (want 0 after a 202):\n%s", code, out)
		}
		second := checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
		if second.SerialNumber.Cmp(first.SerialNumber) == 0 || samePub(second.PublicKey, first.PublicKey) {
			t.Errorf("queued renewal with OUTPOST_REKEY=1: want a new serial for a new key")
		}
		if got, want := listDir(t, dir), []string{"device.key", "device.pem", "secret"}; !slices.Equal(got, want) {
			t.Errorf("files: got %v, want %v", got, want)
		}
	})
	run("sh-pending-then-next-run", func(t *testing.T) {
		dir := t.TempDir()
		s := deviceEnv(dir)
		var device string
		s["OUTPOST_SECRET_FILE"], device, _ = secretFile(t, dir)
		out, code := runSh(t, s, hookPath(), "--max-wait", "0")
		if code != 5 {
			t.Fatalf("no wait allowed: exit %d, want 5:\n%s", code, out)
		}
		csr, err := os.ReadFile(s["OUTPOST_KEY"] + ".csr")
		if err != nil {
			t.Fatalf("the pending request was not kept: %v", err)
		}
		if _, err := os.Stat(s["OUTPOST_CERT"]); !os.IsNotExist(err) {
			t.Fatalf("a pending request installed a certificate: %v", err)
		}
		// The next run (cron, the timer) sends the same request again.
		s["OUTPOST_MAX_WAIT"] = "120"
		out, code = runSh(t, s, hookPath())
		if code != 0 || !strings.Contains(out, "sending again the request kept in") {
			t.Fatalf("next run: exit %d, want 0 sending the kept request again:\n%s", code, out)
		}
		checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
		if _, err := os.Stat(s["OUTPOST_KEY"] + ".csr"); !os.IsNotExist(err) || len(csr) == 0 {
			t.Errorf("the request file is still there after the certificate came: %v", err)
		}
	})
	run("go-client", func(t *testing.T) {
		dir := t.TempDir()
		s := deviceEnv(dir)
		var device string
		s["OUTPOST_SECRET_FILE"], device, _ = secretFile(t, dir)
		out, code := runDevice(t, s, "--max-wait", "120")
		if code != 0 || !strings.Contains(out, "request pending") {
			t.Fatalf("Go client in queued mode: exit %d (want 0 after a 202):\n%s", code, out)
		}
		checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
		if _, err := os.Stat(filepath.Join(dir, "device.key.csr")); !os.IsNotExist(err) {
			t.Errorf("request file left: %v", err)
		}
	})
	run("go-client-pending-then-next-run", func(t *testing.T) {
		dir := t.TempDir()
		s := deviceEnv(dir)
		var device string
		s["OUTPOST_SECRET_FILE"], device, _ = secretFile(t, dir)
		if out, code := runDevice(t, s, "--max-wait", "0"); code != 5 {
			t.Fatalf("Go client, no wait allowed: exit %d, want 5:\n%s", code, out)
		}
		out, code := runDevice(t, s, "--max-wait", "120")
		if code != 0 || !strings.Contains(out, "sending again the request pending since an earlier run") {
			t.Fatalf("Go client, next run: exit %d, want 0 sending the kept request again:\n%s", code, out)
		}
		checkPair(t, s["OUTPOST_CERT"], s["OUTPOST_KEY"], device)
	})
	wg.Wait()
}
