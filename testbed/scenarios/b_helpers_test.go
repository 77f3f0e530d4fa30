package scenarios

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/testbed/system"
)

// fleetOutcome waits until every device of f accepted a certificate or
// gave up and returns both sets without failing t: for scenarios in
// which some refusals are the expected outcome (fleet.wait fails t for
// each device that gave up).
func fleetOutcome(f *fleet) (accepted map[string]*enrolled, failed map[string]string) {
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	accepted = make(map[string]*enrolled, len(f.got))
	for d, e := range f.got {
		accepted[d] = e
	}
	failed = make(map[string]string, len(f.failed))
	for d, why := range f.failed {
		failed[d] = why
	}
	return accepted, failed
}

// appliedByReplica reads a control plane replica's log (logs/<name>.log,
// JSON lines at debug level) and returns how many up messages carrying
// records it applied and how many records they carried ("sync: applied
// a message" lines; heartbeats alone are not counted).
func appliedByReplica(t *testing.T, s *system.System, name string) (messages, records int) {
	t.Helper()
	f, err := os.Open(s.Path("logs/" + name + ".log"))
	if err != nil {
		t.Fatalf("reading %s's log: %v", name, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), "sync: applied a message") {
			continue
		}
		var line struct {
			Records int `json:"records"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Records > 0 {
			messages++
			records += line.Records
		}
	}
	return messages, records
}

// waitFor polls cond every 20 ms until it holds; false after within.
func waitFor(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// agentOutbox lists the record ids waiting in the agent's outbox (its
// admin /queue, at most 1000).
func agentOutbox(t *testing.T, s *system.System) map[string]bool {
	t.Helper()
	resp, err := http.Get("http://" + s.AgentAdmin + "/queue?limit=1000")
	if err != nil {
		t.Fatalf("reading the agent's outbox: %v", err)
	}
	defer resp.Body.Close()
	var items []struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&items); err != nil {
		t.Fatalf("reading the agent's outbox: %v", err)
	}
	out := map[string]bool{}
	for _, it := range items {
		out[it.ID] = true
	}
	return out
}

// logLines returns the lines of logs/<name>.log that contain every one
// of subs.
func logLines(t *testing.T, s *system.System, name string, subs ...string) []string {
	t.Helper()
	b, err := os.ReadFile(s.Path("logs/" + name + ".log"))
	if err != nil {
		t.Fatalf("reading %s's log: %v", name, err)
	}
	var out []string
next:
	for _, line := range strings.Split(string(b), "\n") {
		for _, sub := range subs {
			if !strings.Contains(line, sub) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}
