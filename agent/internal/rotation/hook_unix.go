//go:build unix

package rotation

import (
	"os/exec"
	"syscall"
)

// setProcessGroup starts the hook in a process group of its own, so that
// a timeout kills what it started too.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

func killProcessGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
