// Package agentcmd holds the subcommands of outpost-agent.
package agentcmd

import "github.com/outpost-pki/outpost/internal/cli"

// App returns the outpost-agent command line.
func App() cli.App {
	return cli.App{
		Name:    "outpost-agent",
		Summary: "edge registration authority: EST for local devices, keys in TPM/HSM, offline issuance, MQTT sync",
	}
}
