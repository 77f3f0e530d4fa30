package cpbench_test

import (
	"os"
	"testing"
)

// TestMain stops the services that benchmarks share across the package
// (the pagination fixture's Postgres) once every test and benchmark ran.
func TestMain(m *testing.M) {
	code := m.Run()
	closeOCSP()
	closePaging()
	os.Exit(code)
}
