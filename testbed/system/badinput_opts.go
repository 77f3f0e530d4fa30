package system

// PID is the process id of the running process, 0 when it is not
// running. testbed/badinput compares it before and after its bad inputs
// to show that nothing restarted, and reads the process's environment
// (/proc/<pid>/environ) to learn the secrets it was given.
func (p *Proc) PID() int {
	if !p.Running() {
		return 0
	}
	return p.cmd.Process.Pid
}
