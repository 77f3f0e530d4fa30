package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// errUsage marks errors in the command line; main exits 2 on them.
var errUsage = errors.New("usage")

// maxDevices is the most secrets `outpost-agent secrets` mints at once,
// so the most devices one est or sync-backlog run enrolls.
const maxDevices = 100_000

// options are the parsed flags of one run.
type options struct {
	mode    string
	envPath string
	json    bool
	n, c    int
	reuse   bool
	auth    string
	timeout time.Duration // per enrollment, Retry-After waits included
	// sync-backlog
	drainTimeout time.Duration
	// ocsp
	duration time.Duration
	certs    int
	hash     string
}

const usageText = `usage: loadgen <mode> [flags]

Generates load against a system started by testbed/up, reading its
coordinates from outpost.env.

modes:
  est           an EST enrollment storm: -n devices, each with a new P-256 key
  sync-backlog  cut the gateway's uplink, enroll -n devices offline, restore it
                and time until the registry holds them all
  ocsp          OCSP queries against the control plane's responder

Run "loadgen <mode> -h" for the flags of a mode.
`

// defaultEnvPath is outpost.env in $OUTPOST_TESTBED_DIR, else in
// testbed/run (what testbed/up uses).
func defaultEnvPath() string {
	if d := os.Getenv("OUTPOST_TESTBED_DIR"); d != "" {
		return filepath.Join(d, "outpost.env")
	}
	return filepath.Join("testbed", "run", "outpost.env")
}

// parseArgs parses the mode and its flags and validates them. Help (-h)
// returns flag.ErrHelp after printing the flags to stderr.
func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return o, fmt.Errorf("%w: no mode given", errUsage)
	}
	o.mode = args[0]
	switch o.mode {
	case "est", "sync-backlog", "ocsp":
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stderr, usageText)
		return o, flag.ErrHelp
	default:
		fmt.Fprint(stderr, usageText)
		return o, fmt.Errorf("%w: unknown mode %q (est, sync-backlog or ocsp)", errUsage, o.mode)
	}
	fs := flag.NewFlagSet("loadgen "+o.mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.envPath, "env", defaultEnvPath(), "outpost.env `file` of the running testbed (default: $OUTPOST_TESTBED_DIR/outpost.env if set)")
	fs.BoolVar(&o.json, "json", false, "print the summary as JSON on stdout (progress stays on stderr)")
	fs.IntVar(&o.c, "c", 16, "concurrency: parallel workers")
	fs.BoolVar(&o.reuse, "reuse", true, "one keep-alive connection per worker (false: a new TLS connection per request)")
	switch o.mode {
	case "est", "sync-backlog":
		def := 100
		if o.mode == "sync-backlog" {
			def = 500
		}
		fs.IntVar(&o.n, "n", def, "devices to enroll")
		fs.StringVar(&o.auth, "auth", "secret", "device authentication: `secret` (a one-time secret per device, minted first) or cert (the bootstrap certificate; every device is its CN)")
		fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up on one device's enrollment after this long, Retry-After waits included")
		if o.mode == "sync-backlog" {
			fs.DurationVar(&o.drainTimeout, "drain-timeout", 5*time.Minute, "how long to wait after restoring the uplink for the registry to hold every certificate")
		}
	case "ocsp":
		fs.IntVar(&o.n, "n", 1000, "OCSP queries to send (with --duration and no -n: as many as fit)")
		fs.DurationVar(&o.duration, "duration", 0, "stop sending after this long (0: when -n are sent)")
		fs.IntVar(&o.certs, "certs", 50, "certificates to enroll first (one-time secrets) and query in turn")
		fs.StringVar(&o.hash, "hash", "sha1", "hash of the issuer name and key in the requests: sha1 or sha256")
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	nSet := false
	fs.Visit(func(f *flag.Flag) { nSet = nSet || f.Name == "n" })
	if o.mode == "ocsp" && o.duration > 0 && !nSet {
		o.n = 0
	}
	if err := o.validate(); err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	return o, nil
}

// validate checks the flags of o.mode.
func (o *options) validate() error {
	if o.envPath == "" {
		return errors.New("--env must name the outpost.env file")
	}
	if o.c < 1 || o.c > 4096 {
		return fmt.Errorf("-c must be between 1 and 4096 (got %d)", o.c)
	}
	switch o.mode {
	case "est", "sync-backlog":
		if o.n < 1 {
			return fmt.Errorf("-n must be at least 1 (got %d)", o.n)
		}
		if o.n > maxDevices {
			return fmt.Errorf("-n must be at most %d, the most secrets the agent mints at once (got %d)", maxDevices, o.n)
		}
		if o.auth != "secret" && o.auth != "cert" {
			return fmt.Errorf("--auth must be secret or cert (got %q)", o.auth)
		}
		if o.timeout <= 0 {
			return fmt.Errorf("--timeout must be positive (got %v)", o.timeout)
		}
		if o.mode == "sync-backlog" && o.drainTimeout <= 0 {
			return fmt.Errorf("--drain-timeout must be positive (got %v)", o.drainTimeout)
		}
	case "ocsp":
		if o.duration < 0 {
			return fmt.Errorf("--duration must not be negative (got %v)", o.duration)
		}
		if o.n < 0 || (o.n == 0 && o.duration == 0) {
			return fmt.Errorf("-n must be at least 1, or give --duration (got -n %d)", o.n)
		}
		if o.certs < 1 || o.certs > 10_000 {
			return fmt.Errorf("--certs must be between 1 and 10000 (got %d)", o.certs)
		}
		if o.hash != "sha1" && o.hash != "sha256" {
			return fmt.Errorf("--hash must be sha1 or sha256 (got %q)", o.hash)
		}
		o.timeout = 30 * time.Second
	default:
		return fmt.Errorf("unknown mode %q", o.mode)
	}
	return nil
}

// runCommand runs loadgen with args (the mode first): progress goes to
// stderr, the summary to stdout (JSON with --json). It returns the summary
// when the load phase ran, even if partial or failing, and an error when
// the run failed (wrapping errUsage for a bad command line); the summary
// is printed already when it returns.
func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) (*Summary, error) {
	o, err := parseArgs(args, stderr)
	if err != nil {
		return nil, err
	}
	env, err := loadEnv(o.envPath)
	if err != nil {
		return nil, err
	}
	var sum *Summary
	switch o.mode {
	case "est":
		sum, err = runEST(ctx, env, o, stderr)
	case "sync-backlog":
		sum, err = runSyncBacklog(ctx, env, o, stderr)
	case "ocsp":
		sum, err = runOCSP(ctx, env, o, stderr)
	}
	if sum != nil {
		if ctx.Err() != nil {
			sum.Interrupted = true
		}
		if o.json {
			if werr := sum.writeJSON(stdout); werr != nil && err == nil {
				err = werr
			}
		} else {
			sum.writeText(stdout)
		}
		if err == nil {
			err = sum.verdict()
		}
	}
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return sum, err
}

// verdict is the run's failure, if any, from its figures: failed
// enrollments (est, sync-backlog), a registry that did not catch up
// (sync-backlog), transport errors or HTTP 5xx answers (ocsp; other OCSP
// answers are reported, not failures).
func (s *Summary) verdict() error {
	var problems []string
	switch s.Mode {
	case "est", "sync-backlog":
		if s.Failed > 0 {
			problems = append(problems, fmt.Sprintf("%d of %d enrollments failed", s.Failed, s.Done))
		}
		if b := s.Backlog; b != nil && !b.Drained {
			problems = append(problems, fmt.Sprintf("the registry holds %d of the %d certificates after the drain timeout", b.RegistryAfter-b.RegistryBefore, b.Records))
		}
	case "ocsp":
		if n := s.Outcomes[outcomeTransport] + s.Outcomes[outcomeTimeout]; n > 0 {
			problems = append(problems, fmt.Sprintf("%d transport errors", n))
		}
		if n := s.Outcomes[outcomeHTTP5xx]; n > 0 {
			problems = append(problems, fmt.Sprintf("%d HTTP 5xx answers", n))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// pool runs op(ctx, w, i) for i = 0, 1, ... on c workers, each with its
// own state from newWorker, until n operations have started (n > 0), the
// time stopAt has passed (if not zero) or ctx ends; it returns when every
// operation has returned.
func pool[W any](ctx context.Context, c, n int, stopAt time.Time, newWorker func() W, op func(ctx context.Context, w W, i int)) {
	if n > 0 {
		c = min(c, n)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := newWorker()
			for ctx.Err() == nil {
				if !stopAt.IsZero() && !time.Now().Before(stopAt) {
					return
				}
				i := int(next.Add(1) - 1)
				if n > 0 && i >= n {
					return
				}
				op(ctx, w, i)
			}
		}()
	}
	wg.Wait()
}
