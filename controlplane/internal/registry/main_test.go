package registry_test

import (
	"os"
	"testing"
)

// TestMain stops the services that benchmarks share across the package
// (the pagination fixture's Postgres) once every test and benchmark ran.
func TestMain(m *testing.M) {
	code := m.Run()
	closePaging()
	os.Exit(code)
}
