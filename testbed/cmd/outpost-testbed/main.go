// Command outpost-testbed runs the whole Outpost system on one machine:
// a throwaway PostgreSQL, the control plane with its embedded MQTT broker
// and its CA keys in SoftHSM2, and one agent whose identity and edge CA
// keys are in swtpm, serving EST. It can then play a small factory line:
// devices enrolling over EST, part of them while the gateway's uplink is
// cut (local mode signs offline; the registry catches up once the link is
// back). It writes <dir>/outpost.env (shell syntax) for scripts, prints
// what to open, and runs until interrupted (SIGINT or SIGTERM), then
// stops every process it started.
//
// `make demo` runs it in the foreground; testbed/up and testbed/down run
// it in the background.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	var o options
	flag.StringVar(&o.dir, "dir", "testbed/run", "working `directory` (state, logs, outpost.env); emptied first")
	flag.StringVar(&o.bin, "bin", "bin", "`directory` of the built outpost binaries")
	flag.IntVar(&o.devices, "devices", 300, "devices the simulated factory line enrolls (0: none)")
	flag.Float64Var(&o.offline, "offline", 0.3, "share of the devices that enroll while the uplink is cut")
	flag.IntVar(&o.secrets, "secrets", 200, "unused one-time enrollment secrets to leave in the secrets file")
	flag.Parse()
	if o.devices < 0 || o.offline < 0 || o.offline > 1 || o.secrets < 1 {
		fmt.Fprintln(os.Stderr, "outpost-testbed: --devices >= 0, --offline in [0,1], --secrets >= 1")
		os.Exit(2)
	}
	var err error
	if o.dir, err = filepath.Abs(o.dir); err == nil {
		o.bin, err = filepath.Abs(o.bin)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "outpost-testbed:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "outpost-testbed:", err)
		os.Exit(1)
	}
}
