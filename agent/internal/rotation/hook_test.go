package rotation

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeHook writes a POSIX sh hook and returns its path.
func writeHook(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hook.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

var hookDevice = Device{ID: "cam-1", Address: "127.0.0.1:9", Platform: "axis", OSVersion: "10.1", Model: "P14"}

func TestHookEnvironmentAndStdin(t *testing.T) {
	t.Setenv("OUTPOST_SECRET_LEAK", "must-not-pass")
	hook := writeHook(t, `env | sort; echo "args: $*"; echo "stdin: $(cat)"`)
	out, _, err := ExecRunner{}.RunHook(context.Background(), Route{Hook: hook, Args: []string{"a", "b c"}, Timeout: 10 * time.Second}, hookDevice, PhaseInstall, []byte("CHAIN"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"OUTPOST_PHASE=install\n", "OUTPOST_DEVICE_ID=cam-1\n", "OUTPOST_DEVICE_ADDRESS=127.0.0.1:9\n", "OUTPOST_DEVICE_PLATFORM=axis\n",
		"OUTPOST_DEVICE_OS_VERSION=10.1\n", "OUTPOST_DEVICE_MODEL=P14\n", "PATH=" + HookPath + "\n", "args: a b c\n", "stdin: CHAIN\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "must-not-pass") || strings.Contains(s, "HOME=") {
		t.Errorf("the hook inherited the agent's environment:\n%s", s)
	}
}

func TestHookExitCodes(t *testing.T) {
	for _, tt := range []struct {
		code                   int
		temporary, unsupported bool
	}{{1, false, false}, {ExitTemporary, true, false}, {ExitUnsupported, false, true}, {2, false, false}} {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			hook := writeHook(t, "echo 'device said no' >&2\nexit "+strconv.Itoa(tt.code))
			_, stderr, err := ExecRunner{}.RunHook(context.Background(), Route{Hook: hook, Timeout: 10 * time.Second}, hookDevice, PhaseCSR, nil)
			var he *HookError
			if !errors.As(err, &he) {
				t.Fatalf("got %v, want a *HookError", err)
			}
			if he.ExitCode != tt.code || he.Temporary() != tt.temporary || he.Unsupported() != tt.unsupported || he.Phase != PhaseCSR {
				t.Errorf("got %+v, want exit %d", he, tt.code)
			}
			if stderr != "device said no\n" || he.Stderr != stderr {
				t.Errorf("stderr: got %q", stderr)
			}
		})
	}
	_, _, err := ExecRunner{}.RunHook(context.Background(), Route{Hook: "/nonexistent/hook", Timeout: time.Second}, hookDevice, PhaseCSR, nil)
	var he *HookError
	if !errors.As(err, &he) || he.ExitCode != -1 || !strings.Contains(err.Error(), "starting") {
		t.Errorf("missing hook: got %v", err)
	}
}

// TestHookTimeoutKillsGroup: at the timeout the hook and what it started
// (here a background sleep that would keep running) are killed.
func TestHookTimeoutKillsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	hook := writeHook(t, "sleep 60 &\necho $! > "+pidFile+"\necho started >&2\nwait\n")
	start := time.Now()
	_, stderr, err := ExecRunner{}.RunHook(context.Background(), Route{Hook: hook, Timeout: time.Second}, hookDevice, PhaseCSR, nil)
	var he *HookError
	if !errors.As(err, &he) || !he.TimedOut || !strings.Contains(err.Error(), "killed at its timeout") {
		t.Fatalf("got %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the hook ran %v past a 1s timeout", d)
	}
	if stderr != "started\n" {
		t.Errorf("stderr: got %q", stderr)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		// A zombie until init reaps it counts as gone: check its state.
		if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hook's child %d survived the timeout", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHookOutputCaps(t *testing.T) {
	// stdout over the cap fails (and stops the hook).
	hook := writeHook(t, "head -c 200000 /dev/zero; sleep 30")
	start := time.Now()
	_, _, err := ExecRunner{}.RunHook(context.Background(), Route{Hook: hook, Timeout: 20 * time.Second}, hookDevice, PhaseCSR, nil)
	var he *HookError
	if !errors.As(err, &he) || !strings.Contains(he.Err.Error(), "more than 65536 bytes on stdout") {
		t.Errorf("got %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a hook over the stdout cap ran on for %v", d)
	}
	// stderr keeps its last MaxHookStderr bytes.
	hook = writeHook(t, "i=0; while [ $i -lt 2000 ]; do echo \"line $i\" >&2; i=$((i+1)); done; echo LAST >&2; exit 3")
	_, stderr, err := ExecRunner{}.RunHook(context.Background(), Route{Hook: hook, Timeout: 20 * time.Second}, hookDevice, PhaseCSR, nil)
	if err == nil || !strings.HasPrefix(stderr, "[...]") || !strings.HasSuffix(stderr, "LAST\n") || len(stderr) > MaxHookStderr+5 {
		t.Errorf("stderr tail: %d bytes, %q...%q, err %v", len(stderr), stderr[:min(20, len(stderr))], stderr[max(0, len(stderr)-20):], err)
	}
}
