// Command outpost-controlplane is the Outpost control plane: root CAs,
// device registry, OCSP and CRLs, and the admin dashboard.
package main

import (
	"github.com/outpost-pki/outpost/controlplane/internal/cpcmd"
	"github.com/outpost-pki/outpost/internal/cli"
)

func main() { cli.Run(cpcmd.App()) }
