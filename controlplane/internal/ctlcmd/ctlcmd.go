// Package ctlcmd holds the subcommands of outpostctl.
package ctlcmd

import "github.com/outpost-pki/outpost/internal/cli"

// App returns the outpostctl command line.
func App() cli.App {
	return cli.App{
		Name:    "outpostctl",
		Summary: "admin CLI for the Outpost control plane",
	}
}
