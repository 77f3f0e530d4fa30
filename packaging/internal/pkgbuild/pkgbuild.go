// Package pkgbuild builds .deb and .rpm packages from the nfpm
// configurations in packaging/ with the nfpm library, filling in the
// architecture, version and binary directory of one build.
package pkgbuild

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Options describe one package build.
type Options struct {
	// Config is the nfpm YAML file. Its ${ARCH}, ${VERSION},
	// ${PRERELEASE} and ${BINDIR} are filled in from the fields below;
	// any other variable is an error.
	Config string
	// Arch is the architecture in nfpm's (Go's) names: amd64, arm64,
	// arm7. nfpm maps it to armhf / armv7hl and so on per format.
	Arch string
	// Version is the build's version as make passes it: a tag
	// (v1.2.3), git describe output (v1.2.3-4-gabc123-dirty) or
	// v0.0.0-dev. See PackageVersion.
	Version string
	// BinDir holds the binaries built for Arch.
	BinDir string
	// OutDir receives the packages, named the way each format expects.
	OutDir string
	// Formats lists the packagers to run: deb, rpm.
	Formats []string
	// MTime is written into every file, header and archive member, so
	// the same inputs give byte-identical packages.
	MTime time.Time
}

// Build writes one package per format and returns the paths it wrote.
// Source paths in the configuration are relative to the working
// directory (the repository root when make runs it).
func Build(opts Options) ([]string, error) {
	if opts.MTime.IsZero() {
		return nil, errors.New("no mtime: set SOURCE_DATE_EPOCH so that packages are reproducible")
	}
	version, prerelease, err := PackageVersion(opts.Version)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{
		"ARCH":       opts.Arch,
		"VERSION":    version,
		"PRERELEASE": prerelease,
		"BINDIR":     opts.BinDir,
	}
	var unknown []string
	mapping := func(name string) string {
		v, ok := vars[name]
		// nfpm itself looks up the signing passphrases; packages are
		// not signed here, so they stay empty.
		if !ok && !strings.HasPrefix(name, "NFPM_") && !slices.Contains(unknown, name) {
			unknown = append(unknown, name)
		}
		return v
	}
	cfg, err := nfpm.ParseFileWithEnvMapping(opts.Config, mapping)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", opts.Config, err)
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("%s: unknown variables %s (known: ARCH, VERSION, PRERELEASE, BINDIR)", opts.Config, strings.Join(unknown, ", "))
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, err
	}
	var written []string
	for _, format := range opts.Formats {
		path, err := buildOne(cfg, format, opts)
		if err != nil {
			return written, fmt.Errorf("%s %s for %s: %w", cfg.Name, format, opts.Arch, err)
		}
		written = append(written, path)
	}
	return written, nil
}

func buildOne(cfg nfpm.Config, format string, opts Options) (string, error) {
	packager, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	info, err := cfg.Get(format)
	if err != nil {
		return "", err
	}
	info.MTime = opts.MTime.UTC()
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return "", err
	}
	path := filepath.Join(opts.OutDir, packager.ConventionalFileName(info))
	info.Target = path
	// Write next to the target and rename, so that an interrupted build
	// never leaves a truncated package under the final name.
	tmp, err := os.CreateTemp(opts.OutDir, ".mkpkg-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := packager.Package(info, tmp); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

var (
	baseRE       = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)
	describeRE   = regexp.MustCompile(`^([0-9]+)-g([0-9a-f]+)(-dirty)?$`)
	prereleaseRE = regexp.MustCompile(`^[0-9A-Za-z]+([.-][0-9A-Za-z]+)*$`)
)

// PackageVersion turns make's VERSION into a package version and
// prerelease that order correctly in both dpkg and rpm:
//
//	v1.2.3                 -> 1.2.3
//	v1.3.0-rc1             -> 1.3.0, prerelease rc1 (1.3.0~rc1: before 1.3.0)
//	v1.2.3-4-gabc123       -> 1.2.3+4.gabc123 (after 1.2.3)
//	v1.2.3-4-gabc123-dirty -> 1.2.3+4.gabc123.dirty
//	v1.2.3-dirty           -> 1.2.3+dirty
//	v0.0.0-dev             -> 0.0.0, prerelease dev
//
// Hyphens, which rpm forbids in a version and dpkg reads as the start of
// the revision, become dots.
func PackageVersion(v string) (version, prerelease string, err error) {
	s := strings.TrimPrefix(v, "v")
	base, rest, hasSuffix := strings.Cut(s, "-")
	if !baseRE.MatchString(base) || (hasSuffix && rest == "") {
		return "", "", fmt.Errorf("version %q: want v<major>.<minor>.<patch>[-suffix]", v)
	}
	switch {
	case !hasSuffix:
		return base, "", nil
	case rest == "dirty":
		return base + "+dirty", "", nil
	case describeRE.MatchString(rest):
		m := describeRE.FindStringSubmatch(rest)
		version = base + "+" + m[1] + ".g" + m[2]
		if m[3] != "" {
			version += ".dirty"
		}
		return version, "", nil
	case prereleaseRE.MatchString(rest):
		return base, strings.ReplaceAll(rest, "-", "."), nil
	default:
		return "", "", fmt.Errorf("version %q: suffix %q may hold only letters, digits, dots and hyphens", v, rest)
	}
}
