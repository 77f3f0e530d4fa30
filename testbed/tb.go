package testbed

import (
	"testing"
)

// closer is what every service handle offers.
type closer interface {
	Close() error
	// logs returns the paths of the service's log files.
	logs() []string
}

// register arranges for s to be closed at the end of t, and for its logs
// to be shown when t failed, so a failing test explains itself.
func register(t testing.TB, name string, s closer) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range s.logs() {
				t.Logf("%s log %s (last lines):\n%s", name, l, tailFile(l, 60))
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("stopping %s: %v", name, err)
		}
	})
}
