// Package peers measures Outpost next to peer PKI software in the same
// run, for docs/BENCHMARKS.md. It is a module of its own so that the
// peers' dependencies never enter Outpost's binaries or go.mod.
package peers
