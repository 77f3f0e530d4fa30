package este2e

import "os/exec"

func execGo(args ...string) ([]byte, error) { return exec.Command("go", args...).CombinedOutput() }
