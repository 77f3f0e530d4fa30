// Command loadgen generates load against an Outpost system started by
// testbed/up, reading its coordinates from outpost.env:
//
//	loadgen est -n N [-c C] [--reuse=true|false] [--auth secret|cert]
//	loadgen sync-backlog -n N [-c C]
//	loadgen ocsp -n N [-c C] [--duration D] [--certs K]
//
// est is an EST enrollment storm; sync-backlog cuts the gateway's uplink,
// enrolls offline and times the registry catching up; ocsp queries the
// control plane's OCSP responder. Progress goes to stderr every second, a
// summary to stdout at the end (--json for JSON). Ctrl-C stops the run
// and prints a partial summary. It exits 0 when the run met its bar, 1
// when not (failed enrollments, a registry that did not catch up, OCSP
// transport errors or HTTP 5xx), 2 on a bad command line and 130 when
// interrupted. docs/LOADGEN.md has the details.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once
	}()
	_, err := runCommand(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "loadgen: interrupted")
		os.Exit(130)
	default:
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
