// Package scenarios holds end-to-end fault scenarios: the whole system
// (PostgreSQL, the control plane with its embedded MQTT broker, an agent
// serving EST in local mode) started from the built binaries by
// testbed/system, a factory line of simulated devices enrolling over EST,
// and one fault per test (the gateway's uplink cut through a proxy, the
// agent killed with SIGKILL, the control plane and its broker restarted,
// PostgreSQL restarted). Every scenario ends by checking the registry
// holds each certificate the devices accepted exactly once.
//
// The package has tests only; TestMain builds the binaries once
// (make build-host under bin/.build-lock).
package scenarios
