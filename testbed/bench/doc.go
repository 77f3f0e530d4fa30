// Package bench holds the benchmarks that `make bench` turns into
// docs/BENCHMARKS.md. They run against the real key backends (files,
// SoftHSM2, swtpm, the in-process TPM simulator) started through testbed.
package bench
