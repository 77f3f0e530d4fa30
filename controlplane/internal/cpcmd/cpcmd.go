// Package cpcmd holds the subcommands of outpost-controlplane.
package cpcmd

import "github.com/outpost-pki/outpost/internal/cli"

// App returns the outpost-controlplane command line.
func App() cli.App {
	return cli.App{
		Name:    "outpost-controlplane",
		Summary: "Outpost control plane: CAs, registry, OCSP/CRL, sync consumer, dashboard",
	}
}
