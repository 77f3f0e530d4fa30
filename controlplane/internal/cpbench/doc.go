// Package cpbench holds the control plane benchmarks that share one large
// data set (1,000,000 certificates by default, OUTPOST_BENCH_CERTS): list
// pagination, lifecycle sweeps and OCSP, each next to the approach or the
// program it is compared with, in the same run. `make bench` turns the
// results into docs/BENCHMARKS.md.
package cpbench
