package system

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Proc is a long-running child of the testbed (the control plane, the
// agent) that scenarios can kill and start again with the same
// command line. Its output is appended to logs/<name>.log.
type Proc struct {
	Name string
	env  []string
	bin  string
	args []string
	log  string

	cmd  *exec.Cmd
	logf *os.File
	done chan struct{}
}

// Proc is the child started under name, or nil.
func (s *System) Proc(name string) *Proc { return s.procs[name] }

// spawn starts a long-running child in its own process group and
// registers its stop.
func (s *System) spawn(name string, env []string, bin string, args ...string) error {
	p := &Proc{Name: name, env: env, bin: bin, args: args, log: s.Path("logs/" + name + ".log")}
	if err := p.Start(); err != nil {
		return err
	}
	s.procs[name] = p
	s.defer_(func() { _ = p.Stop(20 * time.Second) })
	return nil
}

// Running says whether the process is alive.
func (p *Proc) Running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Start starts the process (again).
func (p *Proc) Start() error {
	if p.Running() {
		return fmt.Errorf("%s is already running", p.Name)
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "---- testbed: starting %s at %s\n", p.Name, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	p.cmd, p.logf, p.done = cmd, logf, make(chan struct{})
	done := p.done
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	return nil
}

// Kill sends SIGKILL to the process group (a power cut for the process:
// no shutdown code runs) and waits for it to be gone.
func (p *Proc) Kill() error {
	if !p.Running() {
		return errors.New(p.Name + " is not running")
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return nil
}

// Stop sends SIGTERM to the process group and waits up to grace, then
// SIGKILL. Stopping a stopped process does nothing.
func (p *Proc) Stop(grace time.Duration) error {
	if !p.Running() {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", p.Name, grace)
	}
}
