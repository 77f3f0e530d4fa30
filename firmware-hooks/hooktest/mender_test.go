package hooktest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// menderDevice is a fake device root: the hook in usr/bin, its settings
// in etc/outpost/enroll.conf, the key and certificate on the data
// partition (data/outpost, which survives an A/B update), and the state
// scripts where the Mender client keeps an artifact's scripts.
type menderDevice struct {
	root, data, conf, hook, scripts string
	device                          string
}

func newMenderDevice(t *testing.T) *menderDevice {
	t.Helper()
	root := t.TempDir()
	d := &menderDevice{
		root:    root,
		data:    filepath.Join(root, "data", "outpost"),
		conf:    filepath.Join(root, "etc", "outpost", "enroll.conf"),
		hook:    filepath.Join(root, "usr", "bin", "outpost-enroll"),
		scripts: filepath.Join(root, "var", "lib", "mender", "scripts"),
	}
	for _, dir := range []string{d.data, filepath.Dir(d.conf), filepath.Dir(d.hook), d.scripts} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, hookPath(), d.hook, 0o755)
	ms, err := filepath.Glob(filepath.Join(rootDir(), "firmware-hooks", "mender", "Artifact*"))
	if err != nil || len(ms) < 4 {
		t.Fatalf("mender scripts: %v %v", ms, err)
	}
	for _, m := range ms {
		copyFile(t, m, filepath.Join(d.scripts, filepath.Base(m)), 0o755)
	}
	sf, device, _ := secretFile(t, filepath.Join(root, "etc", "outpost"))
	d.device = device
	conf := "OUTPOST_EST_URL=" + env["OUTPOST_EST_URL"] + "\n" +
		"OUTPOST_EST_CA=" + env["OUTPOST_EST_CA"] + "\n" +
		"OUTPOST_SECRET_FILE=" + sf + "\n" +
		"OUTPOST_KEY=" + filepath.Join(d.data, "device.key") + "\n" +
		"OUTPOST_CERT=" + filepath.Join(d.data, "device.pem") + "\n" +
		"OUTPOST_CA_CHAIN=" + filepath.Join(d.data, "ca.pem") + "\n"
	if err := os.WriteFile(d.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

func rootDir() string { return root }

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// state runs one state script the way the Mender client would, under
// busybox sh, with extra environment.
func (d *menderDevice) state(t *testing.T, name string, extra map[string]string) (string, int) {
	t.Helper()
	s := map[string]string{"OUTPOST_ENROLL": d.hook, "OUTPOST_CONFIG": d.conf}
	for k, v := range extra {
		s[k] = v
	}
	return runSh(t, s, filepath.Join(d.scripts, name+"_50_outpost-enroll"))
}

func (d *menderDevice) files(t *testing.T) (key, cert []byte) {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(d.data, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = os.ReadFile(filepath.Join(d.data, "device.pem")); err != nil {
		t.Fatal(err)
	}
	return key, cert
}

func (d *menderDevice) enroll(t *testing.T) {
	t.Helper()
	if out, code := runSh(t, map[string]string{"OUTPOST_CONFIG": d.conf}, d.hook); code != 0 {
		t.Fatalf("first enrollment: exit %d:\n%s", code, out)
	}
}

func (d *menderDevice) snapshot() string { return filepath.Join(d.data, ".outpost-rollback") }

// TestMenderCommit: ArtifactInstall_Leave snapshots the pair and
// re-enrolls; ArtifactCommit_Leave keeps the new pair and drops the
// snapshot.
func TestMenderCommit(t *testing.T) {
	d := newMenderDevice(t)
	d.enroll(t)
	oldKey, oldCert := d.files(t)
	old := readCert(t, filepath.Join(d.data, "device.pem"))

	out, code := d.state(t, "ArtifactInstall_Leave", nil)
	if code != 0 {
		t.Fatalf("ArtifactInstall_Leave: exit %d:\n%s", code, out)
	}
	newKey, newCert := d.files(t)
	if bytes.Equal(newCert, oldCert) {
		t.Fatalf("ArtifactInstall_Leave did not re-enroll:\n%s", out)
	}
	if !bytes.Equal(newKey, oldKey) {
		t.Errorf("ArtifactInstall_Leave changed the key without OUTPOST_MENDER_REKEY")
	}
	renewed := checkPair(t, filepath.Join(d.data, "device.pem"), filepath.Join(d.data, "device.key"), d.device)
	if renewed.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Errorf("the re-enrolled certificate kept serial %x", old.SerialNumber)
	}
	if b, err := os.ReadFile(filepath.Join(d.snapshot(), "cert.pem")); err != nil || !bytes.Equal(b, oldCert) {
		t.Errorf("snapshot of the old certificate: %v", err)
	}

	if out, code := d.state(t, "ArtifactCommit_Leave", nil); code != 0 {
		t.Fatalf("ArtifactCommit_Leave: exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(d.snapshot()); !os.IsNotExist(err) {
		t.Errorf("the snapshot is still there after the commit: %v", err)
	}
	if k, c := d.files(t); !bytes.Equal(k, newKey) || !bytes.Equal(c, newCert) {
		t.Errorf("the commit changed the new key or certificate")
	}
}

// TestMenderRollback: with OUTPOST_MENDER_REKEY=1 the update gets a new
// key and certificate; ArtifactRollback_Enter puts the old pair back
// byte for byte; ArtifactFailure_Enter after it finds nothing to do.
func TestMenderRollback(t *testing.T) {
	d := newMenderDevice(t)
	d.enroll(t)
	oldKey, oldCert := d.files(t)

	out, code := d.state(t, "ArtifactInstall_Leave", map[string]string{"OUTPOST_MENDER_REKEY": "1"})
	if code != 0 {
		t.Fatalf("ArtifactInstall_Leave: exit %d:\n%s", code, out)
	}
	newKey, newCert := d.files(t)
	if bytes.Equal(newKey, oldKey) || bytes.Equal(newCert, oldCert) {
		t.Fatalf("ArtifactInstall_Leave with OUTPOST_MENDER_REKEY=1 did not re-key:\n%s", out)
	}
	checkPair(t, filepath.Join(d.data, "device.pem"), filepath.Join(d.data, "device.key"), d.device)

	if out, code := d.state(t, "ArtifactRollback_Enter", nil); code != 0 {
		t.Fatalf("ArtifactRollback_Enter: exit %d:\n%s", code, out)
	}
	if k, c := d.files(t); !bytes.Equal(k, oldKey) || !bytes.Equal(c, oldCert) {
		t.Errorf("the rollback did not restore the old key and certificate")
	}
	if _, err := os.Stat(d.snapshot()); !os.IsNotExist(err) {
		t.Errorf("the snapshot is still there after the rollback: %v", err)
	}
	if out, code := d.state(t, "ArtifactFailure_Enter", nil); code != 0 || !strings.Contains(out, "nothing to restore") {
		t.Errorf("ArtifactFailure_Enter after the rollback: exit %d:\n%s", code, out)
	}
	if k, c := d.files(t); !bytes.Equal(k, oldKey) || !bytes.Equal(c, oldCert) {
		t.Errorf("ArtifactFailure_Enter changed the restored pair")
	}
	// The hook still works with the restored pair.
	if out, code := runSh(t, map[string]string{"OUTPOST_CONFIG": d.conf}, d.hook, "--force"); code != 0 {
		t.Errorf("renewing the restored pair: exit %d:\n%s", code, out)
	}
}

// TestMenderStrict: a re-enrollment that fails (the gateway unreachable)
// lets the update go on by default, and aborts it with
// OUTPOST_MENDER_STRICT=1; either way the pair is unchanged.
func TestMenderStrict(t *testing.T) {
	d := newMenderDevice(t)
	d.enroll(t)
	oldKey, oldCert := d.files(t)
	unreachable := map[string]string{"OUTPOST_EST_URL": closedURL(t)}

	out, code := d.state(t, "ArtifactInstall_Leave", unreachable)
	if code != 0 || !strings.Contains(out, "going on with the current certificate") {
		t.Errorf("ArtifactInstall_Leave, gateway unreachable: exit %d, want 0:\n%s", code, out)
	}
	if out, code := d.state(t, "ArtifactCommit_Leave", nil); code != 0 {
		t.Errorf("ArtifactCommit_Leave: exit %d:\n%s", code, out)
	}

	unreachable["OUTPOST_MENDER_STRICT"] = "1"
	unreachable["OUTPOST_MENDER_REKEY"] = "1"
	out, code = d.state(t, "ArtifactInstall_Leave", unreachable)
	if code != 1 {
		t.Errorf("ArtifactInstall_Leave strict, gateway unreachable: exit %d, want 1:\n%s", code, out)
	}
	if k, c := d.files(t); !bytes.Equal(k, oldKey) || !bytes.Equal(c, oldCert) {
		t.Errorf("a failed update changed the key or certificate")
	}
	if got := listDir(t, d.data); strings.Join(got, " ") != "ca.pem device.key device.pem" {
		t.Errorf("files after the aborted update: %v", got)
	}
}
