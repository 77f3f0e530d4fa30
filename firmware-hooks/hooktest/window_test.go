package hooktest

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

// TestReenrollWindow: when the device's renewal window opens before the
// gateway's re-enrollment window (DMS policy reenroll_window_days), the
// gateway answers 403; the sh hook and the Go client treat that as
// "not yet" (exit 0, a warning, the certificate unchanged) rather than
// as a refusal, and renew once the gateway allows it.
func TestReenrollWindow(t *testing.T) {
	shDir, goDir := t.TempDir(), t.TempDir()
	sh, gc := deviceEnv(shDir), deviceEnv(goDir)
	sh["OUTPOST_SECRET_FILE"], _, _ = secretFile(t, shDir)
	gc["OUTPOST_SECRET_FILE"], _, _ = secretFile(t, goDir)
	if out, code := runSh(t, sh, hookPath()); code != 0 {
		t.Fatalf("sh enroll: exit %d:\n%s", code, out)
	}
	if out, code := runDevice(t, gc); code != 0 {
		t.Fatalf("Go enroll: exit %d:\n%s", code, out)
	}
	goCert, _ := os.ReadFile(gc["OUTPOST_CERT"])

	// The certificates are valid for about 30 days (the edge CA's
	// lifetime); a one-day window is not open yet.
	setPolicy(t, "reenroll_window_days", 1)
	t.Cleanup(func() { setPolicy(t, "reenroll_window_days", 365) })
	deadline := time.Now().Add(60 * time.Second)
	var out string
	var code int
	var before []byte
	for {
		// The agent gets the policy over sync within a heartbeat or two;
		// until then --force renews.
		before, _ = os.ReadFile(sh["OUTPOST_CERT"])
		out, code = runSh(t, sh, hookPath(), "--force")
		if strings.Contains(out, "does not renew yet") || time.Now().After(deadline) {
			break
		}
		if code != 0 {
			t.Fatalf("sh --force while the policy changes: exit %d:\n%s", code, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if code != 0 || !strings.Contains(out, "does not renew yet") || !strings.Contains(out, "re-enrollment window") {
		t.Fatalf("sh hook outside the gateway's window: exit %d, want 0 with a warning:\n%s", code, out)
	}
	if b, _ := os.ReadFile(sh["OUTPOST_CERT"]); !bytes.Equal(b, before) {
		t.Errorf("the sh hook changed its certificate outside the window")
	}
	shCert := before
	out, code = runDevice(t, gc, "--force")
	if code != 0 || !strings.Contains(out, "does not renew yet") {
		t.Errorf("Go client outside the gateway's window: exit %d, want 0 with a warning:\n%s", code, out)
	}
	if b, _ := os.ReadFile(gc["OUTPOST_CERT"]); !bytes.Equal(b, goCert) {
		t.Errorf("the Go client changed its certificate outside the window")
	}
	if got := listDir(t, shDir); strings.Join(got, " ") != "device.key device.pem secret" {
		t.Errorf("sh files after the refusal: %v (no request kept)", got)
	}

	// Back to a wide window: the next run renews.
	setPolicy(t, "reenroll_window_days", 365)
	deadline = time.Now().Add(60 * time.Second)
	for {
		out, code = runSh(t, sh, hookPath(), "--force")
		if code != 0 || strings.Contains(out, "renewed") || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if code != 0 || !strings.Contains(out, "renewed") {
		t.Fatalf("sh hook once the window is open: exit %d:\n%s", code, out)
	}
	if b, _ := os.ReadFile(sh["OUTPOST_CERT"]); bytes.Equal(b, shCert) {
		t.Errorf("the certificate was not replaced once the window opened")
	}
}
