// Package testbed starts real services for tests, the demo and benchmarks:
// a throwaway PostgreSQL cluster, a SoftHSM2 token, an swtpm TPM 2.0
// simulator, a mosquitto MQTT broker and a headless Chromium.
//
// Every service runs on loopback with free ports, in its own temporary
// directory, in its own process group; Close stops it, reaps every process
// it started and removes the directory. The New* functions take a
// testing.TB, register Close with t.Cleanup and fail the test (never skip
// it) when the service cannot start, for instance because a package is
// missing: `make deps` installs everything these helpers need.
//
// The Start* functions do the same without a testing.TB, for programs such
// as the demo that manage the lifetime themselves.
package testbed
