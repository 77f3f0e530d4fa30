// Package buildinfo holds the version and commit of a binary, injected at
// build time by the Makefile:
//
//	go build -ldflags "-X github.com/outpost-pki/outpost/internal/buildinfo.Version=v1.2.3 \
//	    -X github.com/outpost-pki/outpost/internal/buildinfo.Commit=0123abcd"
package buildinfo

import (
	"fmt"
	"runtime"
)

// Set with -ldflags -X; the defaults mark a build made without the Makefile.
var (
	// Version is the release version, e.g. v0.3.1, or a git describe string.
	Version = "v0.0.0-dev"
	// Commit is the git commit the binary was built from.
	Commit = "unknown"
)

// String returns the one-line version banner of the named binary, e.g.
// "outpost-agent v0.3.1 (commit 0123abcd, go1.26.8 linux/arm64)".
func String(binary string) string {
	return fmt.Sprintf("%s %s (commit %s, %s %s/%s)", binary, Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
