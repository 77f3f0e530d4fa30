// Package packagetest tests the .deb and .rpm packages `make package`
// builds (docs/PACKAGING.md): their metadata, files, owners and modes,
// config-file handling, reproducibility, and a real install, upgrade,
// removal and purge of the .deb with dpkg when the test runs as root (as
// CI does). packaging/ is a Go module of its own, so its packages are
// tested from here, in Outpost's module, where `go test ./...` sees them.
package packagetest
