// Command outpost-agent is the Outpost edge agent: a local EST
// registration authority for the devices around a gateway.
package main

import (
	"github.com/outpost-pki/outpost/agent/internal/agentcmd"
	"github.com/outpost-pki/outpost/internal/cli"
)

func main() { cli.Run(agentcmd.App()) }
