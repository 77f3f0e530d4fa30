// Command outpostctl is the admin CLI of the Outpost control plane.
package main

import (
	"github.com/outpost-pki/outpost/controlplane/internal/ctlcmd"
	"github.com/outpost-pki/outpost/internal/cli"
)

func main() { cli.Run(ctlcmd.App()) }
