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

	"github.com/outpost-pki/outpost/testbed/system"
)

func main() {
	var o system.Options
	var devices int
	var offline float64
	flag.StringVar(&o.Dir, "dir", "testbed/run", "working `directory` (state, logs, outpost.env); emptied first")
	flag.StringVar(&o.Bin, "bin", "bin", "`directory` of the built outpost binaries")
	flag.IntVar(&devices, "devices", 300, "devices the simulated factory line enrolls (0: none)")
	flag.Float64Var(&offline, "offline", 0.3, "share of the devices that enroll while the uplink is cut")
	flag.IntVar(&o.Secrets, "secrets", 200, "unused one-time enrollment secrets to leave in the secrets file")
	flag.BoolVar(&o.Control, "control", true, "serve the control endpoint (OUTPOST_TESTBED_CONTROL_URL: POST /uplink/cut, /uplink/restore)")
	flag.Parse()
	if devices < 0 || offline < 0 || offline > 1 || o.Secrets < 1 {
		fmt.Fprintln(os.Stderr, "outpost-testbed: --devices >= 0, --offline in [0,1], --secrets >= 1")
		os.Exit(2)
	}
	var err error
	if o.Dir, err = filepath.Abs(o.Dir); err == nil {
		o.Bin, err = filepath.Abs(o.Bin)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "outpost-testbed:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, devices, offline); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "outpost-testbed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o system.Options, devices int, offline float64) error {
	s, err := system.Start(ctx, o)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("==> stopping everything")
		s.Stop()
		fmt.Println("==> stopped")
	}()
	if devices > 0 {
		if err := s.FactoryLine(ctx, devices, offline); err != nil {
			return err
		}
	}
	s.Banner()
	<-ctx.Done()
	return nil
}
