// Command mkpkg builds the .deb and .rpm packages of one nfpm
// configuration in packaging/ for one architecture. `make package` runs
// it from the repository root once per package and architecture:
//
//	go run ./cmd/mkpkg -config packaging/outpost-agent.yaml -arch arm64 \
//	    -version v1.2.3 -bindir bin/linux-arm64 -out dist
//
// The mtime of every file and archive member comes from
// SOURCE_DATE_EPOCH, which must be set: packages are reproducible.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-pki/outpost/packaging/internal/pkgbuild"
)

func main() {
	var opts pkgbuild.Options
	flag.StringVar(&opts.Config, "config", "", "nfpm configuration `file`")
	flag.StringVar(&opts.Arch, "arch", "", "architecture in Go/nfpm names (amd64, arm64, arm7)")
	flag.StringVar(&opts.Version, "version", "", "version as make passes it (v1.2.3, git describe output)")
	flag.StringVar(&opts.BinDir, "bindir", "", "`directory` holding the binaries for -arch")
	flag.StringVar(&opts.OutDir, "out", "dist", "output `directory`")
	formats := flag.String("formats", "deb,rpm", "comma-separated packagers")
	flag.Parse()
	if opts.Config == "" || opts.Arch == "" || opts.Version == "" || opts.BinDir == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "mkpkg: -config, -arch, -version and -bindir are required")
		flag.Usage()
		os.Exit(2)
	}
	opts.Formats = strings.Split(*formats, ",")
	epoch, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkpkg: SOURCE_DATE_EPOCH must be set to a Unix time (make package sets it to the commit time)")
		os.Exit(2)
	}
	opts.MTime = time.Unix(epoch, 0)
	written, err := pkgbuild.Build(opts)
	for _, path := range written {
		fmt.Println(path)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkpkg:", err)
		os.Exit(1)
	}
}
