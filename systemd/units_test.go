// Package systemd holds the unit files of the agent and the control
// plane; its tests check them with systemd-analyze.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var units = map[string]string{
	"outpost-agent.service":        "/usr/bin/outpost-agent",
	"outpost-controlplane.service": "/usr/bin/outpost-controlplane",
}

// staged copies the units into a temporary directory with ExecStart
// pointing at an executable that exists (systemd-analyze checks it; the
// binaries are installed by the packages, not on a build machine).
func staged(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not found: `make deps` installs the systemd package")
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "bin", "service")
	if err := os.MkdirAll(filepath.Dir(exe), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, bin := range units {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "ExecStart="+bin+" ") {
			t.Fatalf("%s: ExecStart does not run %s", name, bin)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.ReplaceAll(string(b), "ExecStart="+bin, "ExecStart="+exe)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestVerify: systemd-analyze verify accepts both units without a single
// warning (it exits 0 on unknown keys and bad values, so its output must
// be empty too).
func TestVerify(t *testing.T) {
	dir := staged(t)
	for name := range units {
		out, err := exec.Command("systemd-analyze", "verify", filepath.Join(dir, name)).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
	}
}

// TestSecurityExposure: the sandboxing holds systemd's exposure score at
// "OK" or better (below 3.0 of 10; an unsandboxed service scores 9.6).
func TestSecurityExposure(t *testing.T) {
	dir := staged(t)
	re := regexp.MustCompile(`Overall exposure level for [^:]+: ([0-9.]+)`)
	for name := range units {
		out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", filepath.Join(dir, name)).CombinedOutput()
		m := re.FindSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security %s: %v\n%s", name, err, out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: exposure %.1f", name, score)
		if score >= 3.0 {
			t.Errorf("%s: exposure %.1f, want below 3.0\n%s", name, score, out)
		}
	}
}

// TestUnitContract: what the issue and the packages rely on.
func TestUnitContract(t *testing.T) {
	for name := range units {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=on-failure", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
			"NoNewPrivileges=yes", "CapabilityBoundingSet=", "SystemCallFilter=@system-service", "StateDirectory=", "ConfigurationDirectory=", "User="} {
			if !strings.Contains(string(b), "\n"+want) {
				t.Errorf("%s: no %q line", name, want)
			}
		}
	}
	b, _ := os.ReadFile("outpost-agent.service")
	for _, want := range []string{"DeviceAllow=/dev/tpmrm0 rw", "SupplementaryGroups=tss"} {
		if !strings.Contains(string(b), "\n"+want) {
			t.Errorf("outpost-agent.service: no %q line", want)
		}
	}
}
