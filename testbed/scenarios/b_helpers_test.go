package scenarios

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/testbed/system"
)

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
