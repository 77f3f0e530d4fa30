package outpost_test

// Tests of the repository's own machinery: the Makefile targets that CI
// relies on. They run make in the checkout (or in a copy of it) and check
// what comes out.

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// runMake runs make in dir with args and returns its combined output. The
// environment drops the variables of an enclosing make (make test runs
// these tests) so the child starts clean.
func runMake(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("make", append([]string{"--no-print-directory"}, args...)...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=") || strings.HasPrefix(kv, "MFLAGS=") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestMakeHelpListsEveryTarget(t *testing.T) {
	mk, err := os.ReadFile("Makefile")
	if err != nil {
		t.Fatal(err)
	}
	targetRE := regexp.MustCompile(`^([a-zA-Z0-9_-]+):([^=]|$)`)
	var targets []string
	sc := bufio.NewScanner(bytes.NewReader(mk))
	for sc.Scan() {
		if m := targetRE.FindStringSubmatch(sc.Text()); m != nil {
			targets = append(targets, m[1])
		}
	}
	if len(targets) < 8 {
		t.Fatalf("found only %d targets in the Makefile: %v", len(targets), targets)
	}
	out, err := runMake(t, ".", "help")
	if err != nil {
		t.Fatalf("make help: %v\n%s", err, out)
	}
	for _, target := range targets {
		re := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(target) + `\s+\S.{9,}$`)
		if !re.MatchString(out) {
			t.Errorf("make help does not list %q with a description; output:\n%s", target, out)
		}
	}
	for _, required := range []string{"deps", "build", "test", "bench", "lint", "proto", "help"} {
		if !strings.Contains(out, "  "+required+" ") {
			t.Errorf("make help lacks required target %q", required)
		}
	}
}

func TestMakeBuild(t *testing.T) {
	const version, commit = "v9.9.9-buildtest", "c0ffee0dd00d"
	bin := t.TempDir()
	if out, err := runMake(t, ".", "build", "BINDIR="+bin, "VERSION="+version, "COMMIT="+commit); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	tests := []struct {
		file    string
		machine elf.Machine
		goarch  string
		goarm   string
		cgo     string
		native  bool
	}{
		{"outpost-agent", elf.EM_X86_64, "amd64", "", "1", true},
		{"outpost-agent-linux-arm64", elf.EM_AARCH64, "arm64", "", "1", false},
		{"outpost-agent-linux-armv7", elf.EM_ARM, "arm", "7", "1", false},
		{"outpost-controlplane", elf.EM_X86_64, "amd64", "", "1", true},
		{"outpostctl", elf.EM_X86_64, "amd64", "", "0", true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(bin, tt.file)
			f, err := elf.Open(path)
			if err != nil {
				t.Fatalf("%s is not an ELF binary: %v", tt.file, err)
			}
			defer f.Close()
			if f.Machine != tt.machine {
				t.Errorf("got machine %v, want %v", f.Machine, tt.machine)
			}
			info, err := buildinfo.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			if settings["GOARCH"] != tt.goarch || settings["GOARM"] != tt.goarm || settings["CGO_ENABLED"] != tt.cgo {
				t.Errorf("got GOARCH=%s GOARM=%s CGO_ENABLED=%s, want %s %s %s",
					settings["GOARCH"], settings["GOARM"], settings["CGO_ENABLED"], tt.goarch, tt.goarm, tt.cgo)
			}
			if tt.native {
				out, err := exec.Command(path, "--version").CombinedOutput()
				if err != nil {
					t.Fatalf("%s --version: %v\n%s", tt.file, err, out)
				}
				want := tt.file + " " + version + " (commit " + commit
				if !strings.HasPrefix(string(out), want) {
					t.Errorf("--version printed %q, want it to start with %q", out, want)
				}
				return
			}
			// A cross-built binary cannot run here: check that the
			// version and commit were linked in.
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{version, commit} {
				if !bytes.Contains(raw, []byte(s)) {
					t.Errorf("%s does not contain %q", tt.file, s)
				}
			}
		})
	}
}

// copyRepo copies the working tree (without .git and build output) to a
// temporary directory and returns it.
func copyRepo(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (path == ".git" || path == "bin" || path == filepath.Join("testbed", "run")) {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, path)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() || path == "test-output.log" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copying the repository: %v", err)
	}
	return dst
}

func TestMakeTestFailsOnDrift(t *testing.T) {
	// TEST_FLAGS makes go test run nothing, so that if a check wrongly
	// passed, this test would not recurse into the whole suite.
	noTests := "TEST_FLAGS=-run=^NoTestMatchesThis$"
	tests := []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		wantOut string
	}{
		{
			name: "unformatted file",
			mutate: func(t *testing.T, dir string) {
				src := "package cli\n\nfunc   unformatted( ) int {return 1}\n"
				if err := os.WriteFile(filepath.Join(dir, "internal", "cli", "zz_unformatted.go"), []byte(src), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantOut: "internal/cli/zz_unformatted.go",
		},
		{
			name: "untidy go.mod",
			mutate: func(t *testing.T, dir string) {
				// Add a requirement no package imports.
				gomod := filepath.Join(dir, "go.mod")
				b, err := os.ReadFile(gomod)
				if err != nil {
					t.Fatal(err)
				}
				b = append(b, []byte("\nrequire github.com/pkg/errors v0.8.1\n")...)
				if err := os.WriteFile(gomod, b, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantOut: "go.mod/go.sum are not tidy",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyRepo(t)
			tt.mutate(t, dir)
			out, err := runMake(t, dir, "test", noTests)
			if err == nil {
				t.Fatalf("make test passed with %s; output:\n%s", tt.name, out)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("make test failed, but its output does not name the problem %q:\n%s", tt.wantOut, out)
			}
		})
	}

	// The untouched copy passes the same checks, so the failures above come
	// from the mutations and not from the copy.
	t.Run("clean copy", func(t *testing.T) {
		dir := copyRepo(t)
		if out, err := runMake(t, dir, "fmt-check", "tidy-check"); err != nil {
			t.Fatalf("checks fail on an unmodified copy: %v\n%s", err, out)
		}
	})
}
