package scenarios

import (
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/testbed/system"
)

// TestBrokerRestart restarts the control plane process, and with it its
// embedded MQTT broker, while devices enroll: stopped with SIGTERM
// (Proc.Stop: a clean shutdown) in one variant, with SIGKILL of its
// process group (Proc.Kill: nothing flushed, the broker's session store
// as the last commit left it) in the other, then started again with the
// same command line. The first batch of devices is enrolling when the
// control plane goes; a second batch enrolls entirely while it is down
// (the agent signs locally and queues). The registry ends with every
// certificate exactly once.
func TestBrokerRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(*system.Proc) error
	}{
		{"sigterm", func(p *system.Proc) error { return p.Stop(20 * time.Second) }},
		{"sigkill", func(p *system.Proc) error { return p.Kill() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := system.StartT(t, system.Options{})
			creds, err := s.MintSecrets(t.Context(), 250, "broker-"+tc.name+"-")
			if err != nil {
				t.Fatal(err)
			}
			first, second := creds[:150], creds[150:]
			f := enrollFleet(t, s, first, fleetOptions{})
			f.waitAccepted(t, 50, 2*time.Minute)
			cp := s.Proc("controlplane")
			if err := tc.stop(cp); err != nil {
				t.Fatalf("stopping the control plane: %v", err)
			}
			t.Logf("control plane stopped (%s) with %d devices enrolled", tc.name, f.Accepted())
			accepted := f.wait(t)
			if err := s.WaitAgent(t.Context(), time.Minute, func(st system.AgentStatus) bool { return !st.Online }); err != nil {
				t.Errorf("the agent still says it is online a minute after the broker went: %v", err)
			}
			g := enrollFleet(t, s, second, fleetOptions{})
			maps.Copy(accepted, g.wait(t))
			if len(accepted) != len(creds) {
				t.Fatalf("%d of %d devices enrolled", len(accepted), len(creds))
			}
			if st, _ := agentStatus(s); st.QueueDepth < len(second) {
				t.Errorf("queue depth with the broker down is %d, want at least the %d certificates issued meanwhile", st.QueueDepth, len(second))
			}
			if err := cp.Start(); err != nil {
				t.Fatal(err)
			}
			system.WaitHTTPStatus(t, s.API+"/readyz", http.StatusOK, time.Minute)
			if err := s.WaitAgent(t.Context(), time.Minute, func(st system.AgentStatus) bool { return st.Online }); err != nil {
				t.Errorf("the agent is not online a minute after the control plane came back: %v", err)
			}
			assertExactlyOnce(t, s, accepted)
			waitQueueEmpty(t, s)
		})
	}
}

// TestPostgresRestart stops the registry's PostgreSQL (fast shutdown:
// every session aborted, testbed.Postgres.Stop) while the control plane
// drains a gateway's backlog, enrolls more devices while it is down (their
// records reach the control plane, which cannot write them), and starts
// it again on the same port and data directory. The control plane is not
// restarted: it must find its database again by itself (/readyz), and
// the registry ends with every certificate exactly once.
func TestPostgresRestart(t *testing.T) {
	s := system.StartT(t, system.Options{})
	ctx := t.Context()
	creds, err := s.MintSecrets(ctx, 400, "pgrestart-")
	if err != nil {
		t.Fatal(err)
	}
	backlog, during := creds[:300], creds[300:]

	s.Uplink.Cut()
	if err := s.WaitAgent(ctx, time.Minute, func(st system.AgentStatus) bool { return !st.Online }); err != nil {
		t.Fatalf("the agent still says it is online a minute after the uplink was cut: %v", err)
	}
	accepted := enrollFleet(t, s, backlog, fleetOptions{}).wait(t)
	if len(accepted) != len(backlog) {
		t.Fatalf("%d of %d devices enrolled offline", len(accepted), len(backlog))
	}
	if err := s.Uplink.Restore(); err != nil {
		t.Fatal(err)
	}
	// Stop PostgreSQL as soon as the drain has begun.
	var recorded int
	deadline := time.Now().Add(time.Minute)
	for recorded == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no certificate of the backlog reached the registry within a minute of the uplink's restore")
		}
		recorded, _ = countRecorded(ctx, s.DSN, serials(accepted), bySerial(accepted))
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Postgres.Stop(); err != nil {
		t.Fatal(err)
	}
	st, _ := agentStatus(s)
	t.Logf("PostgreSQL stopped with %d of the %d backlog certificates recorded (agent queue depth %d)", recorded, len(backlog), st.QueueDepth)
	system.WaitHTTPStatus(t, s.API+"/readyz", http.StatusServiceUnavailable, time.Minute)

	more := enrollFleet(t, s, during, fleetOptions{}).wait(t)
	if len(more) != len(during) {
		t.Fatalf("%d of %d devices enrolled with PostgreSQL down", len(more), len(during))
	}
	maps.Copy(accepted, more)
	if err := s.WaitAgent(ctx, 10*time.Second, func(st system.AgentStatus) bool { return st.Online }); err != nil {
		t.Errorf("the agent is not online while only PostgreSQL is down: %v", err)
	}

	if err := s.Postgres.Start(ctx); err != nil {
		t.Fatal(err)
	}
	system.WaitHTTPStatus(t, s.API+"/readyz", http.StatusOK, time.Minute)
	system.WaitHTTPStatus(t, s.API+"/healthz", http.StatusOK, time.Minute)
	if !s.Proc("controlplane").Running() {
		t.Fatal("the control plane exited while PostgreSQL was down")
	}
	assertExactlyOnce(t, s, accepted)
	waitQueueEmpty(t, s)
}

func serials(m map[string]*enrolled) []string {
	out := make([]string, 0, len(m))
	for _, e := range m {
		out = append(out, serialOf(e.Cert))
	}
	return out
}

func bySerial(m map[string]*enrolled) map[string]*enrolled {
	out := make(map[string]*enrolled, len(m))
	for _, e := range m {
		out[serialOf(e.Cert)] = e
	}
	return out
}
