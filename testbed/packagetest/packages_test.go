package packagetest

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	// A git describe version: the packages must turn it into a version
	// both dpkg and rpm accept and order after 1.2.3.
	buildVersion = "v1.2.3-4-gabcdef123456-dirty"
	pkgVersion   = "1.2.3+4.gabcdef123456.dirty-1"
	// The upgrade the install test applies.
	upgradeVersion    = "v1.2.4"
	upgradePkgVersion = "1.2.4-1"
	sourceDateEpoch   = 1700000000
)

// pkgSpec is what one package must hold.
type pkgSpec struct {
	name string
	// config is the repository file installed as
	// /etc/<name>/config.yaml; empty for outpostctl.
	config string
	// service: a systemd unit, a system user and group of the package's
	// name, /var/lib/<name>, maintainer scripts.
	service bool
	// controlPlaneOnly: built for amd64 and arm64 only.
	controlPlaneOnly bool
}

var specs = []pkgSpec{
	{name: "outpost-agent", config: "agent/config.example.yaml", service: true},
	{name: "outpost-controlplane", config: "controlplane/config.example.yaml", service: true, controlPlaneOnly: true},
	{name: "outpostctl"},
}

// hostArch is the host architecture in the names of make, dpkg and rpm.
type hostArch struct {
	make, deb, rpm string
	controlPlane   bool
}

func host(t *testing.T) hostArch {
	switch runtime.GOARCH {
	case "amd64":
		return hostArch{"amd64", "amd64", "x86_64", true}
	case "arm64":
		return hostArch{"arm64", "arm64", "aarch64", true}
	case "arm":
		return hostArch{"armv7", "armhf", "armv7hl", false}
	}
	t.Fatalf("make package builds no packages for GOARCH %s", runtime.GOARCH)
	return hostArch{}
}

func (a hostArch) debFile(dir, name, version string) string {
	return filepath.Join(dir, fmt.Sprintf("%s_%s_%s.deb", name, version, a.deb))
}

func (a hostArch) rpmFile(dir, name, version string) string {
	return filepath.Join(dir, fmt.Sprintf("%s-%s.%s.rpm", name, version, a.rpm))
}

func (a hostArch) specs() []pkgSpec {
	var out []pkgSpec
	for _, s := range specs {
		if !s.controlPlaneOnly || a.controlPlane {
			out = append(out, s)
		}
	}
	return out
}

// TestPackages builds the host architecture's packages with make, checks
// them with dpkg-deb and rpm, and installs, upgrades, removes and purges
// the .debs when it may (root, or passwordless sudo).
func TestPackages(t *testing.T) {
	for _, tool := range []string{"make", "dpkg", "dpkg-deb", "rpm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (make deps installs it): %v", tool, err)
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	arch := host(t)
	tmp := t.TempDir()
	bindir := filepath.Join(tmp, "bin")
	dist := filepath.Join(tmp, "dist")
	makeVars := []string{
		"ARCHES=" + arch.make,
		"BINDIR=" + bindir,
		fmt.Sprint("SOURCE_DATE_EPOCH=", sourceDateEpoch),
	}
	start := time.Now()
	runMake(t, root, append([]string{"package", "VERSION=" + buildVersion, "DISTDIR=" + dist}, makeVars...)...)
	t.Logf("make package ARCHES=%s took %v", arch.make, time.Since(start).Round(time.Millisecond))

	for _, spec := range arch.specs() {
		t.Run(spec.name+"/deb", func(t *testing.T) {
			checkDeb(t, root, arch, spec, arch.debFile(dist, spec.name, pkgVersion), filepath.Join(bindir, "linux-"+arch.make, spec.name))
		})
		t.Run(spec.name+"/rpm", func(t *testing.T) {
			checkRPM(t, root, arch, spec, arch.rpmFile(dist, spec.name, pkgVersion))
		})
	}

	t.Run("reproducible", func(t *testing.T) {
		dist2 := filepath.Join(tmp, "dist2")
		runMake(t, root, append([]string{"package-files", "PACKAGES=outpost-agent", "VERSION=" + buildVersion, "DISTDIR=" + dist2}, makeVars...)...)
		for _, pair := range [][2]string{
			{arch.debFile(dist, "outpost-agent", pkgVersion), arch.debFile(dist2, "outpost-agent", pkgVersion)},
			{arch.rpmFile(dist, "outpost-agent", pkgVersion), arch.rpmFile(dist2, "outpost-agent", pkgVersion)},
		} {
			a, b := readFile(t, pair[0]), readFile(t, pair[1])
			if !bytes.Equal(a, b) {
				t.Errorf("%s and %s differ: the packages are not reproducible", pair[0], pair[1])
			}
		}
	})

	sudo, ok := privileged()
	if !ok {
		// Not a skip: everything above ran. CI runs as root and takes
		// the path below.
		t.Log("not root and no passwordless sudo: the .debs were checked as archives only; the real dpkg install runs where the test runs as root (CI)")
		return
	}
	dist3 := filepath.Join(tmp, "dist3")
	runMake(t, root, append([]string{"package-files", "PACKAGES=outpost-agent", "VERSION=" + upgradeVersion, "DISTDIR=" + dist3}, makeVars...)...)
	for _, spec := range arch.specs() {
		if !spec.service {
			continue
		}
		t.Run(spec.name+"/install", func(t *testing.T) {
			upgrade := ""
			if spec.name == "outpost-agent" {
				upgrade = arch.debFile(dist3, spec.name, upgradePkgVersion)
			}
			installAndPurge(t, sudo, root, spec, arch.debFile(dist, spec.name, pkgVersion), upgrade)
		})
	}
}

// tarEntry is one file of a package as the archive records it.
type tarEntry struct {
	mode         string
	owner, group string
}

func checkDeb(t *testing.T, root string, arch hostArch, spec pkgSpec, deb, bin string) {
	fields := run(t, nil, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture")
	want := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: %s", spec.name, pkgVersion, arch.deb)
	if strings.TrimSpace(fields) != want {
		t.Errorf("control fields: got\n%s\nwant\n%s", fields, want)
	}

	// The data archive: every file with its mode, owner, mtime and content.
	data, err := exec.Command("dpkg-deb", "--fsys-tarfile", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile %s: %v", deb, err)
	}
	got := map[string]tarEntry{}
	contents := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading the data archive of %s: %v", deb, err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(h.Name, "."), "/")
		if !h.ModTime.Equal(time.Unix(sourceDateEpoch, 0)) {
			t.Errorf("%s: mtime %v, want SOURCE_DATE_EPOCH %v", name, h.ModTime.UTC(), time.Unix(sourceDateEpoch, 0).UTC())
		}
		if h.Typeflag == tar.TypeDir && !strings.HasPrefix(name, "/etc/outpost") {
			continue // /usr, /usr/bin, ...
		}
		got[name] = tarEntry{fs.FileMode(h.Mode).String(), h.Uname, h.Gname}
		if h.Typeflag == tar.TypeDir {
			got[name] = tarEntry{(fs.ModeDir | fs.FileMode(h.Mode)).String(), h.Uname, h.Gname}
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		contents[name] = b
	}
	wantFiles := map[string]tarEntry{
		"/usr/bin/" + spec.name: {"-rwxr-xr-x", "root", "root"},
	}
	if spec.service {
		wantFiles["/etc/"+spec.name] = tarEntry{"drwxr-x---", "root", spec.name}
		wantFiles["/etc/"+spec.name+"/config.yaml"] = tarEntry{"-rw-r-----", "root", spec.name}
		wantFiles["/usr/lib/systemd/system/"+spec.name+".service"] = tarEntry{"-rw-r--r--", "root", "root"}
	}
	for name, w := range wantFiles {
		if g, ok := got[name]; !ok {
			t.Errorf("%s is not in %s", name, filepath.Base(deb))
		} else if g != w {
			t.Errorf("%s: got %v, want %v", name, g, w)
		}
	}
	for name := range got {
		if _, ok := wantFiles[name]; !ok {
			t.Errorf("unexpected file %s in %s", name, filepath.Base(deb))
		}
	}
	if !bytes.Equal(contents["/usr/bin/"+spec.name], readFile(t, bin)) {
		t.Errorf("/usr/bin/%s is not %s", spec.name, bin)
	}

	if !spec.service {
		return
	}
	if c := contents["/etc/"+spec.name+"/config.yaml"]; !bytes.Equal(c, readFile(t, filepath.Join(root, spec.config))) {
		t.Errorf("/etc/%s/config.yaml is not %s", spec.name, spec.config)
	}
	conffiles := run(t, nil, "dpkg-deb", "-I", deb, "conffiles")
	if strings.TrimSpace(conffiles) != "/etc/"+spec.name+"/config.yaml" {
		t.Errorf("conffiles: got %q, want /etc/%s/config.yaml", conffiles, spec.name)
	}
	ctrl := filepath.Join(t.TempDir(), "control")
	run(t, nil, "dpkg-deb", "-e", deb, ctrl)
	for _, script := range []string{"preinst", "postinst", "prerm", "postrm"} {
		path := filepath.Join(ctrl, script)
		st, err := os.Stat(path)
		if err != nil {
			t.Errorf("no %s maintainer script: %v", script, err)
			continue
		}
		if st.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s is not executable: %v", script, st.Mode())
		}
		if !bytes.Equal(readFile(t, path), readFile(t, filepath.Join(root, "packaging/scripts", spec.name+"."+script))) {
			t.Errorf("%s is not packaging/scripts/%s.%s", script, spec.name, script)
		}
		run(t, nil, "sh", "-n", path)
	}
}

func checkRPM(t *testing.T, root string, arch hostArch, spec pkgSpec, rpm string) {
	nvra := run(t, nil, "rpm", "-qp", "--qf", "%{NAME} %{VERSION}-%{RELEASE} %{ARCH}", rpm)
	if want := fmt.Sprintf("%s %s %s", spec.name, pkgVersion, arch.rpm); nvra != want {
		t.Errorf("name, version, arch: got %q, want %q", nvra, want)
	}
	list := strings.Fields(run(t, nil, "rpm", "-qpl", rpm))
	want := []string{"/usr/bin/" + spec.name}
	if spec.service {
		want = append(want, "/etc/"+spec.name, "/etc/"+spec.name+"/config.yaml", "/usr/lib/systemd/system/"+spec.name+".service")
	}
	slices.Sort(want)
	if !slices.Equal(list, want) {
		t.Errorf("rpm -qpl: got %v, want %v", list, want)
	}

	// Path, mode, owner, group, %config flags (c = config, n = noreplace), mtime.
	dump := run(t, nil, "rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} f=%{FILEFLAGS:fflags} %{FILEMTIMES}\n]`, rpm)
	wantDump := map[string]string{"/usr/bin/" + spec.name: "-rwxr-xr-x root root f="}
	if spec.service {
		wantDump["/etc/"+spec.name] = "drwxr-x--- root " + spec.name + " f="
		wantDump["/etc/"+spec.name+"/config.yaml"] = "-rw-r----- root " + spec.name + " f=cn"
		wantDump["/usr/lib/systemd/system/"+spec.name+".service"] = "-rw-r--r-- root root f="
	}
	for _, line := range strings.Split(strings.TrimSpace(dump), "\n") {
		f := strings.Fields(line)
		if len(f) != 6 {
			t.Errorf("unexpected rpm --qf line %q", line)
			continue
		}
		if got, want := strings.Join(f[1:5], " "), wantDump[f[0]]; got != want {
			t.Errorf("%s: got %q, want %q", f[0], got, want)
		}
		if f[5] != fmt.Sprint(sourceDateEpoch) {
			t.Errorf("%s: mtime %s, want SOURCE_DATE_EPOCH %d", f[0], f[5], sourceDateEpoch)
		}
	}

	scripts := run(t, nil, "rpm", "-qp", "--scripts", rpm)
	if !spec.service {
		if strings.TrimSpace(scripts) != "" {
			t.Errorf("outpostctl has scriptlets:\n%s", scripts)
		}
		return
	}
	for _, want := range []string{
		"preinstall scriptlet", "postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet",
		"useradd --system", "systemctl enable", "systemctl disable --now", "chmod 0750",
	} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm -qp --scripts lacks %q:\n%s", want, scripts)
		}
	}
}

// installAndPurge installs deb with dpkg, checks the user, files, owners
// and modes, upgrades to upgradeDeb (if set) and checks that the edited
// config and the state survive, removes the package (config and state
// stay) and purges it (everything goes).
func installAndPurge(t *testing.T, sudo []string, root string, spec pkgSpec, deb, upgradeDeb string) {
	name := spec.name
	if status := pkgStatus(t, sudo, name); status != "not-installed" {
		t.Fatalf("%s is already on this machine (status %q): the test installs and purges it; remove it first (dpkg --purge %s)", name, status, name)
	}
	if _, err := command(sudo, "getent", "passwd", name); err == nil {
		t.Fatalf("user %s already exists on this machine: the test creates and deletes it; remove it first", name)
	}
	t.Cleanup(func() {
		if _, err := command(sudo, "dpkg", "--purge", name); err != nil {
			t.Logf("cleanup: dpkg --purge %s: %v", name, err)
		}
	})

	conf := "/etc/" + name + "/config.yaml"
	state := "/var/lib/" + name
	unit := name + ".service"

	run(t, sudo, "dpkg", "-i", deb)
	if got := pkgStatus(t, sudo, name); got != "installed" {
		t.Fatalf("after dpkg -i: status %q, want installed", got)
	}
	passwd := strings.Split(run(t, sudo, "getent", "passwd", name), ":")
	if len(passwd) != 7 || passwd[5] != state || (!strings.HasSuffix(passwd[6], "nologin") && passwd[6] != "/bin/false") {
		t.Errorf("passwd entry %v: want home %s and no login shell", passwd, state)
	}
	groups := strings.Fields(run(t, sudo, "id", "-nG", name))
	if !slices.Contains(groups, name) {
		t.Errorf("%s is not in the group %s: %v", name, name, groups)
	}
	// The unit's SupplementaryGroups=tss needs the group: the package
	// creates it where no TPM package did.
	if name == "outpost-agent" && !slices.Contains(groups, "tss") {
		t.Errorf("%s is not in the group tss (needed for /dev/tpmrm0 and by the unit): %v", name, groups)
	}
	wantStat := map[string]string{
		"/usr/bin/" + name:                "755 root root regular file",
		"/etc/" + name:                    "750 root " + name + " directory",
		conf:                              "640 root " + name + " regular file",
		"/usr/lib/systemd/system/" + unit: "644 root root regular file",
		state:                             "750 " + name + " " + name + " directory",
	}
	for path, want := range wantStat {
		if got := statPath(t, sudo, path); got != want {
			t.Errorf("%s: got %q, want %q", path, got, want)
		}
	}
	if got, want := run(t, sudo, "cat", conf), strings.TrimSpace(string(readFile(t, filepath.Join(root, spec.config)))); got != want {
		t.Errorf("%s is not %s", conf, spec.config)
	}
	if got := run(t, sudo, "dpkg-query", "-W", "-f=${Conffiles}", name); !strings.Contains(got, conf) {
		t.Errorf("dpkg does not list %s as a conffile: %q", conf, got)
	}
	checkEnablement(t, sudo, unit)

	// The operator edits the config; the service writes state.
	run(t, sudo, "sh", "-c", "echo '# edited by the operator' >> "+conf)
	run(t, sudo, "sh", "-c", "echo state > "+state+"/marker")
	edited := run(t, sudo, "cat", conf)

	if upgradeDeb != "" {
		run(t, sudo, "dpkg", "-i", upgradeDeb)
		if got := run(t, sudo, "dpkg-query", "-W", "-f=${Version}", name); got != upgradePkgVersion {
			t.Errorf("after the upgrade: version %q, want %q", got, upgradePkgVersion)
		}
		if got := run(t, sudo, "cat", conf); got != edited {
			t.Errorf("the upgrade replaced the edited %s", conf)
		}
		if got := statPath(t, sudo, conf); got != wantStat[conf] {
			t.Errorf("after the upgrade %s: got %q, want %q", conf, got, wantStat[conf])
		}
		if got := run(t, sudo, "cat", state+"/marker"); got != "state" {
			t.Errorf("the upgrade lost %s/marker: %q", state, got)
		}
	}

	// Remove: the program goes; config, state and user stay.
	run(t, sudo, "dpkg", "--remove", name)
	if got := pkgStatus(t, sudo, name); got != "config-files" {
		t.Errorf("after dpkg --remove: status %q, want config-files", got)
	}
	for _, path := range []string{"/usr/bin/" + name, "/usr/lib/systemd/system/" + unit} {
		if got := statPath(t, sudo, path); got != "" {
			t.Errorf("after dpkg --remove %s is still there: %s", path, got)
		}
	}
	if got := run(t, sudo, "cat", conf); got != edited {
		t.Errorf("dpkg --remove changed %s", conf)
	}
	if got := statPath(t, sudo, state); got == "" {
		t.Errorf("dpkg --remove deleted %s", state)
	}
	if _, err := command(sudo, "getent", "passwd", name); err != nil {
		t.Errorf("dpkg --remove deleted the user %s", name)
	}

	// Purge: everything goes.
	run(t, sudo, "dpkg", "--purge", name)
	if got := pkgStatus(t, sudo, name); got != "not-installed" {
		t.Errorf("after dpkg --purge: status %q, want not-installed", got)
	}
	for _, path := range []string{"/etc/" + name, state, "/usr/bin/" + name, "/usr/lib/systemd/system/" + unit} {
		if got := statPath(t, sudo, path); got != "" {
			t.Errorf("after dpkg --purge %s is still there: %s", path, got)
		}
	}
	for _, db := range []string{"passwd", "group"} {
		if out, err := command(sudo, "getent", db, name); err == nil {
			t.Errorf("after dpkg --purge the %s entry is still there: %s", db, out)
		}
	}
	checkNotEnabled(t, unit)
}

// checkEnablement: with systemd running the unit is enabled but not
// started; without it (a container, a chroot) it is not enabled at all.
func checkEnablement(t *testing.T, sudo []string, unit string) {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		checkNotEnabled(t, unit)
		return
	}
	if out, _ := command(sudo, "systemctl", "is-enabled", unit); out != "enabled" {
		t.Errorf("systemd runs but %s is %q, want enabled", unit, out)
	}
	if out, _ := command(sudo, "systemctl", "is-active", unit); out == "active" || out == "activating" {
		t.Errorf("the package started %s (%s); it must only enable it", unit, out)
	}
}

// checkNotEnabled fails if a symlink to unit is left in /etc/systemd/system.
func checkNotEnabled(t *testing.T, unit string) {
	_ = filepath.WalkDir("/etc/systemd/system", func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == unit {
			t.Errorf("%s exists: the unit is enabled although systemd is not running", path)
		}
		return nil
	})
}

// pkgStatus is dpkg's status of name: installed, config-files,
// not-installed, ...
func pkgStatus(t *testing.T, sudo []string, name string) string {
	out, err := command(sudo, "dpkg-query", "-W", "-f=${db:Status-Status}", name)
	if err != nil {
		if strings.Contains(out, "no packages found") || strings.Contains(out, "not installed") {
			return "not-installed"
		}
		t.Fatalf("dpkg-query %s: %v: %s", name, err, out)
	}
	return out
}

// statPath returns "mode owner group type" of path, or "" if it does not
// exist.
func statPath(t *testing.T, sudo []string, path string) string {
	out, err := command(sudo, "stat", "-c", "%a %U %G %F", path)
	if err != nil {
		if strings.Contains(out, "No such file") {
			return ""
		}
		t.Fatalf("stat %s: %v: %s", path, err, out)
	}
	return out
}

// privileged returns the prefix that runs a command as root: none when
// the test is root (CI), sudo -n when that works without a password.
func privileged() ([]string, bool) {
	if os.Geteuid() == 0 {
		return nil, true
	}
	if exec.Command("sudo", "-n", "true").Run() == nil {
		return []string{"sudo", "-n"}, true
	}
	return nil, false
}

// command runs prefix+name+args with the sbin directories on PATH (dpkg
// and the maintainer scripts need them) and returns its trimmed combined
// output.
func command(prefix []string, name string, args ...string) (string, error) {
	argv := append(append(slices.Clone(prefix), name), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/local/sbin:/usr/sbin:/sbin", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func run(t *testing.T, prefix []string, name string, args ...string) string {
	t.Helper()
	out, err := command(prefix, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// runMake runs make in dir without the variables of an enclosing make
// (make test runs this test), so that the child starts clean.
func runMake(t *testing.T, dir string, args ...string) {
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
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
