// Package devicecmd is the command line of outpost-device, the static Go
// device client: flags over the sh hook's settings, and its exit codes.
package devicecmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/outpost-pki/outpost/firmware-hooks/internal/device"
	"github.com/outpost-pki/outpost/internal/buildinfo"
)

const name = "outpost-device"

// flagSettings maps each flag to the setting it overrides.
var flagSettings = []struct{ flag, setting, usage string }{
	{"est-url", "OUTPOST_EST_URL", "EST base URL, https://gateway:8443/.well-known/est[/label]"},
	{"ca", "OUTPOST_EST_CA", "CA certificates that verify the EST server"},
	{"device-id", "OUTPOST_DEVICE_ID", "device id, the CSR's common name"},
	{"key", "OUTPOST_KEY", "private key file (default /etc/outpost/device.key)"},
	{"cert", "OUTPOST_CERT", "certificate file (default /etc/outpost/device.pem)"},
	{"ca-chain", "OUTPOST_CA_CHAIN", "write the EST server's CA certificates here after enrolling"},
	{"key-type", "OUTPOST_KEY_TYPE", "ec-p256 (default), ec-p384, rsa-2048, rsa-3072"},
	{"san", "OUTPOST_SAN", "subjectAltNames: DNS:name,IP:addr,URI:uri,email:addr"},
	{"secret-file", "OUTPOST_SECRET_FILE", "one-time secret file (secret or device:secret)"},
	{"bootstrap-cert", "OUTPOST_BOOTSTRAP_CERT", "bootstrap (manufacturer) certificate"},
	{"bootstrap-key", "OUTPOST_BOOTSTRAP_KEY", "bootstrap (manufacturer) key"},
	{"renew-percent", "OUTPOST_RENEW_PERCENT", "renew when less than this share of the validity is left (default 33)"},
	{"renew-days", "OUTPOST_RENEW_DAYS", "also renew when fewer days than this are left (default 0: off)"},
	{"max-wait", "OUTPOST_MAX_WAIT", "total seconds to wait for a pending (202) request (default 300)"},
	{"timeout", "OUTPOST_TIMEOUT", "seconds per HTTP request (default 60)"},
	{"tpm", "OUTPOST_TPM", "keep the key in this TPM device, e.g. /dev/tpmrm0"},
	{"swtpm", "OUTPOST_SWTPM", "keep the key in the swtpm at host:port (tests)"},
	{"tpm-dir", "OUTPOST_TPM_DIR", "directory of the TPM key blobs (default <key>.tpm)"},
}

// Main runs outpost-device with args (without the program name) and
// returns its exit code: device.ExitOK and the others.
func Main(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	config := fs.String("config", "", "config file, KEY=value lines (default "+device.DefaultConfigFile+" if it exists; also OUTPOST_CONFIG)")
	force := fs.Bool("force", false, "re-enroll now even if the certificate is not due")
	rekey := fs.Bool("rekey", false, "re-enroll with a new key")
	quiet := fs.Bool("quiet", false, "print errors only")
	version := fs.Bool("version", false, "print the version and exit")
	vals := map[string]*string{}
	for _, f := range flagSettings {
		vals[f.flag] = fs.String(f.flag, "", f.usage+" ("+f.setting+")")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, fs)
			return device.ExitOK
		}
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
		return device.ExitConfig
	}
	if *version {
		fmt.Fprintln(stdout, buildinfo.String(name))
		return device.ExitOK
	}
	cmd := "run"
	switch rest := fs.Args(); len(rest) {
	case 0:
	case 1:
		cmd = rest[0]
	default:
		fmt.Fprintf(stderr, "%s: one command at most, got %q\n", name, rest)
		return device.ExitConfig
	}
	if cmd != "run" && cmd != "status" {
		fmt.Fprintf(stderr, "%s: unknown command %q (want run or status)\nRun '%s --help' for usage.\n", name, cmd, name)
		return device.ExitConfig
	}
	overrides := map[string]string{}
	fs.Visit(func(f *flag.Flag) {
		for _, fsf := range flagSettings {
			if fsf.flag == f.Name {
				overrides[fsf.setting] = f.Value.String()
			}
		}
	})
	if *config == "" {
		*config, _ = lookup("OUTPOST_CONFIG")
	}
	level := slog.LevelInfo
	if *quiet {
		level = slog.LevelError
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := device.Load(*config, lookup, overrides)
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", name, err)
		return device.ExitCode(err)
	}
	if cmd == "status" {
		return status(cfg, stdout, stderr)
	}
	res, err := device.Run(ctx, cfg, device.Options{Force: *force, Rekey: *rekey, Log: log})
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", name, err)
		return device.ExitCode(err)
	}
	if !*quiet {
		fmt.Fprintf(stdout, "%s: %s serial %X, valid until %s, renewal due from %s\n", res.Action, cfg.Cert, res.Cert.SerialNumber,
			res.Cert.NotAfter.UTC().Format(time.RFC3339), res.RenewAt.UTC().Format(time.RFC3339))
	}
	return device.ExitOK
}

// status prints the certificate and whether it is due.
func status(cfg *device.Config, stdout, stderr io.Writer) int {
	st, err := device.ReadStatus(cfg, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", name, err)
		return device.ExitCode(err)
	}
	if st.Cert == nil {
		fmt.Fprintf(stdout, "not enrolled: no certificate at %s\n", cfg.Cert)
		return device.ExitOK
	}
	due := "due from " + st.RenewAt.UTC().Format(time.RFC3339)
	if st.Due {
		due = "due"
	}
	fmt.Fprintf(stdout, "certificate: %s\nsubject: %s\nserial: %X\nnot after: %s\nrenewal: %s\n",
		cfg.Cert, st.Cert.Subject.CommonName, st.Cert.SerialNumber, st.Cert.NotAfter.UTC().Format(time.RFC3339), due)
	return device.ExitOK
}

func usage(w io.Writer, fs *flag.FlagSet) {
	var b strings.Builder
	fmt.Fprintf(&b, `%s - enroll and renew this device's certificate over EST with an Outpost agent

Usage:
  %s [flags] [run|status]

  run     (default) enroll when there is no certificate, re-enroll when it is due
  status  print the certificate and whether it is due

Settings come from the config file, then OUTPOST_* environment variables,
then flags (docs/FIRMWARE-HOOKS.md). Exit codes: 0 done, 2 configuration,
3 temporary (network, server unavailable), 4 refused by the server,
5 still pending after --max-wait, 6 local error.

Flags:
`, name, name)
	fs.SetOutput(&b)
	fs.PrintDefaults()
	io.WriteString(w, b.String())
}
