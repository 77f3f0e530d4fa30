package badinput

import (
	"testing"

	"github.com/outpost-pki/outpost/testbed/system"
)

// TestMain builds the binaries once for the whole package
// (system.RunTests); a failed build fails the package loudly.
func TestMain(m *testing.M) { system.RunTests(m) }
