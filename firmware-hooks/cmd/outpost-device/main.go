// Command outpost-device enrolls and renews a device certificate over EST
// with an Outpost agent: the static Go counterpart of the sh hook
// firmware-hooks/sh/outpost-enroll, with an optional TPM-resident key.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/outpost-pki/outpost/firmware-hooks/internal/devicecmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := devicecmd.Main(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
