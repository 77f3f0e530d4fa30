package scenarios

import (
	"testing"
	"time"

	"github.com/outpost-pki/outpost/testbed/system"
)

// TestGatewayPowerLossMidBatch cuts the gateway's power while devices
// enroll: the agent's process group gets SIGKILL (Proc.Kill: no shutdown
// code runs, what bbolt had not committed is lost) after 100 and again
// after 250 of 400 devices got their certificate, and is started again
// with the same command line. Devices keep retrying with the same CSR and
// secret through the outage; every one ends with a certificate, and the
// registry holds each exactly once (assertExactlyOnce says which extra
// certificates a lost answer may leave).
func TestGatewayPowerLossMidBatch(t *testing.T) {
	const devices = 400
	s := system.StartT(t, system.Options{})
	creds, err := s.MintSecrets(t.Context(), devices, "power-")
	if err != nil {
		t.Fatal(err)
	}
	agent := s.Proc("agent")
	f := enrollFleet(t, s, creds, fleetOptions{})
	for _, at := range []int{100, 250} {
		f.waitAccepted(t, at, 2*time.Minute)
		if err := agent.Kill(); err != nil {
			t.Fatal(err)
		}
		t.Logf("agent killed with %d devices enrolled", f.Accepted())
		if err := agent.Start(); err != nil {
			t.Fatal(err)
		}
		waitAgentUp(t, s, time.Minute)
		t.Logf("agent serving again with %d devices enrolled", f.Accepted())
	}
	accepted := f.wait(t)
	if len(accepted) != devices {
		t.Fatalf("%d of %d devices enrolled", len(accepted), devices)
	}
	assertExactlyOnce(t, s, accepted)
	waitQueueEmpty(t, s)
}
