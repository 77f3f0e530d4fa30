package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// process is one external program started by a helper. It runs in its own
// process group, and carries a marker in its environment that every
// descendant inherits, so that stop can find and take down everything it
// spawned, even helpers that left the group (Chromium's crash handler
// starts its own session). Its output goes to a log file in the helper's
// directory so a failing test can show it.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	pgid    int
	marker  string // "OUTPOST_TESTBED_PROC=<unique id>" in the environment
	done    chan struct{}
	waitErr error
}

// procSpec describes how to start a process.
type procSpec struct {
	name    string   // short name used in errors, e.g. "postgres"
	argv    []string // program and arguments
	env     []string // extra environment, appended to os.Environ()
	dir     string   // working directory
	logPath string   // file receiving stdout and stderr
	cred    *syscall.Credential
}

// becomeSubreaper makes this process the reaper of orphans it started
// indirectly: when a service's leader exits before its helpers (Chromium
// does), the helpers are re-parented to us instead of to PID 1, which in
// some sandboxes never reaps them; stop then reaps them itself.
var becomeSubreaper = sync.OnceFunc(func() {
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
})

// procSeq numbers the processes of this test binary for their markers.
var procSeq atomic.Int64

func startProcess(spec procSpec) (*process, error) {
	becomeSubreaper()
	logFile, err := os.OpenFile(spec.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: opening log: %w", spec.name, err)
	}
	defer logFile.Close()

	marker := fmt.Sprintf("OUTPOST_TESTBED_PROC=%d-%d-%s", os.Getpid(), procSeq.Add(1), spec.name)
	cmd := exec.Command(spec.argv[0], spec.argv[1:]...)
	cmd.Dir = spec.dir
	cmd.Env = append(append(os.Environ(), spec.env...), marker)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the test binary dies without running its cleanups, the
		// service dies with it instead of outliving the run.
		Pdeathsig:  syscall.SIGKILL,
		Credential: spec.cred,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: starting %s: %w", spec.name, spec.argv[0], err)
	}
	p := &process{
		name:    spec.name,
		cmd:     cmd,
		logPath: spec.logPath,
		pgid:    cmd.Process.Pid,
		marker:  marker,
		done:    make(chan struct{}),
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes an early exit, with the end of the log.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited early (%v); log %s ends with:\n%s", p.name, p.waitErr, p.logPath, p.logTail(40))
}

// logTail returns at most n last lines of the process log.
func (p *process) logTail(n int) string {
	return tailFile(p.logPath, n)
}

// stop sends sig to the process group, waits up to grace for the leader
// and every descendant to go away, then kills what is left. It returns
// only when no live process of the service remains, after reaping the
// zombies it can.
func (p *process) stop(sig syscall.Signal, grace time.Duration) error {
	_ = syscall.Kill(-p.pgid, sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
		<-p.done
	}
	// The leader is gone; descendants may linger (Chromium helpers,
	// Postgres backends finishing a query).
	deadline := time.Now().Add(grace)
	killed := false
	for {
		live, zombies := p.members()
		reap(zombies)
		if len(live) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if killed {
				return fmt.Errorf("%s: processes %v survived SIGKILL", p.name, live)
			}
			_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
			for _, pid := range live {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			killed = true
			deadline = time.Now().Add(5 * time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive lists the live processes of the service.
func (p *process) alive() []int {
	live, _ := p.members()
	return live
}

type procEntry struct{ pid, ppid int }

// members reads /proc and returns the live processes of the service (in
// its process group or carrying its marker) and its zombies.
func (p *process) members() (live []int, zombies []procEntry) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, nil
	}
	marker := []byte(p.marker)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Format: pid (comm) state ppid pgrp ...; comm may hold spaces
		// and parentheses, so split after the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		pgrp, _ := strconv.Atoi(fields[2])
		state := fields[0]
		if state == "Z" || state == "X" {
			// A zombie's environment is gone; only its group tells.
			if pgrp == p.pgid || ppid == os.Getpid() && pid != p.pgid {
				zombies = append(zombies, procEntry{pid: pid, ppid: ppid})
			}
			continue
		}
		if pgrp == p.pgid {
			live = append(live, pid)
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && hasEnvEntry(env, marker) {
			live = append(live, pid)
		}
	}
	return live, zombies
}

// hasEnvEntry reports whether the NUL-separated environment block env
// holds the entry want.
func hasEnvEntry(env, want []byte) bool {
	for _, kv := range bytes.Split(env, []byte{0}) {
		if bytes.Equal(kv, want) {
			return true
		}
	}
	return false
}

// reap collects the exit status of zombies that are our children (orphans
// re-parented to us as subreaper). It waits for those pids only, so it
// never steals the status of an exec.Cmd, whose leader is not among them
// once its Wait returned.
func reap(zombies []procEntry) {
	me := os.Getpid()
	for _, z := range zombies {
		if z.ppid == me {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(z.pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// tailFile returns at most n last lines of a file, or a note if it cannot
// be read.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort asks the kernel for a free TCP port on the loopback interface.
// Another process can take it before the caller binds it; helpers retry
// their start when the service reports the port as taken.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitTCP waits until addr accepts connections, p exits, or the timeout
// passes.
func waitTCP(p *process, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.exited() {
			return p.exitError()
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not accept connections on %s within %v; log ends with:\n%s", p.name, addr, timeout, p.logTail(40))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// startTCPService starts spec and waits until addr accepts connections.
// It returns errPortTaken when the service died because the port was
// taken (the caller retries with another port).
func startTCPService(spec procSpec, addr string) (*process, error) {
	proc, err := startProcess(spec)
	if err != nil {
		return nil, err
	}
	if err := waitTCP(proc, addr, 20*time.Second); err != nil {
		if proc.exited() && strings.Contains(proc.logTail(10), "Address already in use") {
			return nil, errPortTaken
		}
		_ = proc.stop(syscall.SIGTERM, 5*time.Second)
		return nil, err
	}
	return proc, nil
}

// shutdown stops proc, if it was started, with sig (then SIGKILL after
// grace) and removes the service directory dir.
func shutdown(proc *process, sig syscall.Signal, grace time.Duration, dir string) error {
	var err error
	if proc != nil {
		err = proc.stop(sig, grace)
	}
	if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// errPortTaken marks a start that failed because another process took the
// port between freePort and the service binding it.
var errPortTaken = errors.New("port taken")

// lookBinary finds a program: first the environment variable envVar (if
// set), then the candidates in order (absolute paths or names on PATH).
// The error tells the reader how to install what is missing.
func lookBinary(what, envVar string, candidates ...string) (string, error) {
	if v := os.Getenv(envVar); v != "" {
		if _, err := os.Stat(v); err != nil {
			return "", fmt.Errorf("%s: %s=%s: %w", what, envVar, v, err)
		}
		return v, nil
	}
	for _, c := range candidates {
		if filepath.IsAbs(c) {
			if _, err := os.Stat(c); err == nil {
				return c, nil
			}
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (looked at $%s, %s): run `make deps` to install it", what, envVar, strings.Join(candidates, ", "))
}
