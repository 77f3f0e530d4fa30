package rotation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"time"
)

// The hook contract (docs/ROTATION.md): the hook runs twice per rotation,
// with a clean environment (HookPath and the OUTPOST_* variables below,
// nothing inherited), in its own process group:
//
//   - OUTPOST_PHASE=csr: the hook has the device generate a key and a CSR
//     and prints the CSR on stdout (PEM, or base64 DER), at most
//     MaxHookStdout bytes;
//   - OUTPOST_PHASE=install: stdin holds the certificate chain (PEM, leaf
//     first); the hook installs it on the device.
//
// Exit status 0 is success; ExitTemporary says the device is busy or
// unreachable (retried with backoff, like any failure); ExitUnsupported
// says this hook cannot rotate this device (retried only after the
// longest backoff); anything else is a failure. stderr is kept (the last
// MaxHookStderr bytes) for the failure event. At the route's timeout the
// whole process group is killed; it is also killed after the hook exits,
// so nothing it started outlives it.

// Phases of a rotation, as OUTPOST_PHASE and in events.
const (
	PhaseCSR     = "csr"
	PhaseSign    = "sign"
	PhaseInstall = "install"
	PhaseVerify  = "verify"
)

// Hook exit codes with a meaning of their own (sysexits.h).
const (
	ExitTemporary   = 75 // EX_TEMPFAIL
	ExitUnsupported = 78 // EX_CONFIG
)

// Output caps. A CSR is a few KiB (see csrcheck.MaxPEMSize); the cap stops
// a runaway hook from filling the agent's memory. stderr is for people:
// its last 4 KiB say what went wrong.
const (
	MaxHookStdout = 64 << 10
	MaxHookStderr = 4 << 10
)

// HookPath is the PATH hooks run with.
const HookPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// HookError is a hook run that failed: non-zero exit, killed at its
// timeout, too much output, or not started.
type HookError struct {
	Phase string
	// ExitCode is the exit status (-1 when killed or not started).
	ExitCode int
	TimedOut bool
	// Stderr is the end of what the hook wrote on stderr.
	Stderr string
	Err    error
}

func (e *HookError) Error() string {
	switch {
	case e.TimedOut:
		return fmt.Sprintf("hook phase %s: killed at its timeout", e.Phase)
	case e.ExitCode >= 0:
		return fmt.Sprintf("hook phase %s: exit status %d", e.Phase, e.ExitCode)
	}
	return fmt.Sprintf("hook phase %s: %v", e.Phase, e.Err)
}

func (e *HookError) Unwrap() error { return e.Err }

// Temporary reports whether the hook said the failure is temporary.
func (e *HookError) Temporary() bool { return e.ExitCode == ExitTemporary }

// Unsupported reports whether the hook said it cannot rotate the device.
func (e *HookError) Unsupported() bool { return e.ExitCode == ExitUnsupported }

// HookRunner runs a route's hook for one phase of a device's rotation.
type HookRunner interface {
	// RunHook runs r.Hook for d in phase with stdin, and returns stdout.
	// A failure is a *HookError.
	RunHook(ctx context.Context, r Route, d Device, phase string, stdin []byte) (stdout []byte, stderr string, err error)
}

// ExecRunner runs hooks as processes.
type ExecRunner struct{}

// HookEnv is the environment of a hook run: nothing inherited.
func HookEnv(d Device, phase string) []string {
	return []string{
		"PATH=" + HookPath,
		"LC_ALL=C",
		"OUTPOST_PHASE=" + phase,
		"OUTPOST_DEVICE_ID=" + d.ID,
		"OUTPOST_DEVICE_ADDRESS=" + d.Address,
		"OUTPOST_DEVICE_PLATFORM=" + d.Platform,
		"OUTPOST_DEVICE_OS_VERSION=" + d.OSVersion,
		"OUTPOST_DEVICE_MODEL=" + d.Model,
		"OUTPOST_DEVICE_SERVER_NAME=" + d.ServerName,
	}
}

// RunHook implements HookRunner.
func (ExecRunner) RunHook(ctx context.Context, r Route, d Device, phase string, stdin []byte) ([]byte, string, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.Command(r.Hook, r.Args...)
	cmd.Env = HookEnv(d, phase)
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(stdin)
	setProcessGroup(cmd)
	var killOnce sync.Once
	kill := func() { killOnce.Do(func() { killProcessGroup(cmd) }) }
	stdout := &capWriter{max: MaxHookStdout, onOverflow: kill}
	stderr := &tailWriter{max: MaxHookStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// When the group is killed, Wait still waits for the pipes: a
	// grandchild that escaped the group could hold them; give up on them
	// after a moment.
	cmd.WaitDelay = 2 * time.Second
	herr := &HookError{Phase: phase, ExitCode: -1}
	if err := cmd.Start(); err != nil {
		herr.Err = fmt.Errorf("starting %s: %w", r.Hook, err)
		return nil, "", herr
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			kill()
		case <-done:
		}
	}()
	err := cmd.Wait()
	close(done)
	kill() // whatever the hook left running
	herr.Stderr = stderr.String()
	switch {
	case ctx.Err() != nil:
		herr.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
		herr.Err = ctx.Err()
		return nil, herr.Stderr, herr
	case stdout.overflow:
		herr.Err = fmt.Errorf("more than %d bytes on stdout", MaxHookStdout)
		return nil, herr.Stderr, herr
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			herr.ExitCode = ee.ExitCode()
		}
		herr.Err = err
		return nil, herr.Stderr, herr
	}
	return stdout.buf.Bytes(), herr.Stderr, nil
}

// capWriter keeps up to max bytes; past that it calls onOverflow once and
// discards the rest.
type capWriter struct {
	mu         sync.Mutex
	buf        bytes.Buffer
	max        int
	overflow   bool
	onOverflow func()
}

func (w *capWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.overflow {
		return len(p), nil
	}
	if w.buf.Len()+len(p) > w.max {
		w.overflow = true
		if w.onOverflow != nil {
			go w.onOverflow()
		}
		return len(p), nil
	}
	return w.buf.Write(p)
}

// tailWriter keeps the last max bytes.
type tailWriter struct {
	mu        sync.Mutex
	b         []byte
	max       int
	truncated bool
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if len(w.b) > w.max {
		w.b = append(w.b[:0], w.b[len(w.b)-w.max:]...)
		w.truncated = true
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := string(bytes.ToValidUTF8(w.b, []byte("\uFFFD")))
	if w.truncated {
		s = "[...]" + s
	}
	return s
}
