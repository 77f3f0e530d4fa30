// Package ctlcmd holds the subcommands of outpostctl, the admin CLI of the
// control plane. It talks to the REST API through apiclient.
//
// Connection settings come from, highest precedence first: the --url,
// --token and --ca-file flags of each command; the environment variables
// OUTPOST_API_URL, OUTPOST_TOKEN and OUTPOST_CA_FILE; the config file
// written by 'outpostctl login' (see [Config]).
package ctlcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apiclient"
	"github.com/outpost-pki/outpost/internal/buildinfo"
	"github.com/outpost-pki/outpost/internal/cli"
)

// Environment variables outpostctl reads.
const (
	EnvAPIURL = "OUTPOST_API_URL"
	EnvToken  = "OUTPOST_TOKEN"
	EnvCAFile = "OUTPOST_CA_FILE"
	EnvConfig = "OUTPOSTCTL_CONFIG"
)

const appName = "outpostctl"

// App returns the outpostctl command line, reading the process
// environment.
func App() cli.App {
	return newApp(environment{getenv: os.Getenv, now: time.Now, isTerminal: isTerminal})
}

// Run runs outpostctl with args (without the program name) and returns
// its exit code. env is the whole environment outpostctl sees: the
// process environment is not consulted, so a test can point it at a
// server (OUTPOST_API_URL, OUTPOST_TOKEN, OUTPOST_CA_FILE) and at a config
// file (OUTPOSTCTL_CONFIG) without touching the process or the user's
// home. Without OUTPOSTCTL_CONFIG, HOME or XDG_CONFIG_HOME in env there is
// no config file: 'login' fails and other commands need the variables.
func Run(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) int {
	getenv := func(k string) string { return env[k] }
	return newApp(environment{getenv: getenv, now: time.Now, isTerminal: isTerminal}).Main(ctx, args, stdout, stderr)
}

// environment is what outpostctl reads from its surroundings.
type environment struct {
	getenv     func(string) string
	now        func() time.Time
	isTerminal func(io.Writer) bool
}

// isTerminal reports whether w is a character device, i.e. a terminal
// (or /dev/null, where drawing a progress bar costs nothing).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// command is a top-level command: either a group of subcommands (ca,
// cert, ...) or a leaf (login, whoami, completion).
type command struct {
	name    string
	summary string
	subs    []*subcommand
	leaf    *subcommand
}

// subcommand is one runnable command line.
type subcommand struct {
	name    string
	args    string // synopsis of positional arguments, e.g. "ID"
	summary string
	// minArgs and maxArgs bound the positional arguments; maxArgs -1 is
	// unbounded.
	minArgs, maxArgs int
	api              bool // adds --url, --token and --ca-file
	output           bool // adds -o table|json
	// setup defines the command's own flags and returns the function
	// that runs it once they are parsed.
	setup func(fs *flag.FlagSet) func(ctx context.Context, r *run) error
}

// run is one invocation of a subcommand.
type run struct {
	env    environment
	path   string // "outpostctl cert list"
	args   []string
	stdout io.Writer
	stderr io.Writer
	conn   connFlags
	output string
}

type connFlags struct {
	url, token, caFile string
}

func newApp(env environment) cli.App {
	cmds := commands()
	app := cli.App{Name: appName, Summary: "admin CLI for the Outpost control plane"}
	for _, c := range cmds {
		app.Commands = append(app.Commands, cli.Command{
			Name:    c.name,
			Summary: c.summary,
			Run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				return c.run(ctx, env, args, stdout, stderr)
			},
		})
	}
	return app
}

// commands returns every top-level command, in the order of the help.
func commands() []*command {
	return []*command{
		{name: "login", summary: "check a URL and token against the control plane and save them", leaf: loginCmd()},
		{name: "whoami", summary: "show the principal behind the current token", leaf: whoamiCmd()},
		{name: "ca", summary: "list, create, import and revoke certificate authorities", subs: caCmds()},
		{name: "cert", summary: "search, issue, export, import and revoke certificates", subs: certCmds()},
		{name: "dms", summary: "manage device manufacturing systems (gateway agents)", subs: dmsCmds()},
		{name: "device", summary: "list, register and decommission devices", subs: deviceCmds()},
		{name: "audit", summary: "read and verify the hash-chained audit log", subs: auditCmds()},
		{name: "token", summary: "create and revoke API tokens", subs: tokenCmds()},
		{name: "completion", summary: "print a shell completion script (bash, zsh, fish)", leaf: completionCmd()},
	}
}

func (c *command) run(ctx context.Context, env environment, args []string, stdout, stderr io.Writer) error {
	if c.leaf != nil {
		return c.leaf.run(ctx, env, appName+" "+c.name, args, stdout, stderr)
	}
	if len(args) == 0 {
		c.usage(stderr)
		return fmt.Errorf("%w: no subcommand given", cli.ErrUsage)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		c.usage(stdout)
		return flag.ErrHelp
	}
	for _, s := range c.subs {
		if s.name == args[0] {
			return s.run(ctx, env, appName+" "+c.name+" "+s.name, args[1:], stdout, stderr)
		}
	}
	return fmt.Errorf("%w: unknown subcommand %q; run '%s %s --help' for the list", cli.ErrUsage, args[0], appName, c.name)
}

func (c *command) usage(w io.Writer) {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s %s <subcommand> [flags]\n\n%s.\n\nSubcommands:\n", appName, c.name, capitalize(c.summary))
	for _, s := range c.subs {
		fmt.Fprintf(&b, "  %-14s %s\n", s.name, s.summary)
	}
	fmt.Fprintf(&b, "\nRun '%s %s <subcommand> -h' for its flags.\n", appName, c.name)
	io.WriteString(w, b.String())
}

// newFlagSet returns the flag set of s with the shared flags added. The
// run's conn and output fields receive the shared flags' values.
func (s *subcommand) newFlagSet(path string, r *run) (*flag.FlagSet, func(ctx context.Context, r *run) error) {
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	runFn := s.setup(fs)
	if s.output {
		fs.StringVar(&r.output, "o", "table", "output `format`: table or json")
	}
	if s.api {
		fs.StringVar(&r.conn.url, "url", "", "control plane `URL`, e.g. https://cp.example:8443 (overrides "+EnvAPIURL+" and the config file)")
		fs.StringVar(&r.conn.token, "token", "", "API `token` (overrides "+EnvToken+" and the config file)")
		fs.StringVar(&r.conn.caFile, "ca-file", "", "PEM `file` of the CA to trust for the control plane's TLS certificate (overrides "+EnvCAFile+" and the config file)")
	}
	return fs, runFn
}

// sharedFlags are printed in their own section of the help.
var sharedFlags = map[string]bool{"url": true, "token": true, "ca-file": true}

func (s *subcommand) run(ctx context.Context, env environment, path string, args []string, stdout, stderr io.Writer) error {
	r := &run{env: env, path: path, stdout: stdout, stderr: stderr}
	fs, runFn := s.newFlagSet(path, r)
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		s.usage(stdout, path, fs)
		return flag.ErrHelp
	}
	if err != nil {
		return fmt.Errorf("%w: %v; run '%s -h' for usage", cli.ErrUsage, err, path)
	}
	if len(pos) < s.minArgs || (s.maxArgs >= 0 && len(pos) > s.maxArgs) {
		return fmt.Errorf("%w: wrong number of arguments: want %s; run '%s -h' for usage", cli.ErrUsage, argsWanted(s), path)
	}
	if s.output && r.output != "table" && r.output != "json" {
		return usageErrorf("-o must be table or json, not %q", r.output)
	}
	r.args = pos
	err = runFn(ctx, r)
	var apiErr *apiclient.Error
	if errors.As(err, &apiErr) {
		return apiFailure{apiErr}
	}
	return err
}

func argsWanted(s *subcommand) string {
	switch {
	case s.maxArgs == 0:
		return "no arguments"
	case s.args == "":
		return "arguments"
	default:
		return s.args
	}
}

// parseInterspersed parses flags anywhere on the command line, so that
// 'cert get SERIAL -o json' works like 'cert get -o json SERIAL'. It
// returns the positional arguments; everything after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (s *subcommand) usage(w io.Writer, path string, fs *flag.FlagSet) {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s", path)
	if s.args != "" {
		fmt.Fprintf(&b, " %s", s.args)
	}
	fmt.Fprintf(&b, " [flags]\n\n%s.\n", capitalize(s.summary))
	var own, shared []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if sharedFlags[f.Name] {
			shared = append(shared, f)
		} else {
			own = append(own, f)
		}
	})
	if len(own) > 0 {
		b.WriteString("\nFlags:\n")
		writeFlags(&b, own)
	}
	if len(shared) > 0 {
		b.WriteString("\nConnection flags:\n")
		writeFlags(&b, shared)
	}
	io.WriteString(w, b.String())
}

func writeFlags(b *strings.Builder, flags []*flag.Flag) {
	for _, f := range flags {
		name, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		fmt.Fprintf(b, "  %s%s", dash, f.Name)
		if name != "" {
			fmt.Fprintf(b, " %s", strings.ToUpper(name))
		}
		fmt.Fprintf(b, "\n      %s", usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(b, " (default %s)", f.DefValue)
		}
		b.WriteByte('\n')
	}
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func usageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", cli.ErrUsage, fmt.Sprintf(format, args...))
}

// apiFailure prints an API error as "<problem title>: <detail>".
type apiFailure struct{ err *apiclient.Error }

func (f apiFailure) Error() string {
	s := f.err.Problem.Title
	if f.err.Problem.Detail != "" {
		s += ": " + f.err.Problem.Detail
	}
	if f.err.Problem.Field != "" {
		s += " (field " + f.err.Problem.Field + ")"
	}
	return clean(s)
}

func (f apiFailure) Unwrap() error { return f.err }

// client returns an API client for the resolved connection settings.
func (r *run) client(opts ...apiclient.Option) (*apiclient.Client, error) {
	c, err := r.resolve()
	if err != nil {
		return nil, err
	}
	if c.url == "" {
		return nil, fmt.Errorf("no control plane URL: run '%s login', set %s or pass --url", appName, EnvAPIURL)
	}
	if c.token == "" {
		return nil, fmt.Errorf("no API token: run '%s login', set %s or pass --token", appName, EnvToken)
	}
	return r.newClient(c, opts...)
}

func (r *run) newClient(c connFlags, opts ...apiclient.Option) (*apiclient.Client, error) {
	opts = append([]apiclient.Option{apiclient.WithUserAgent(appName + "/" + buildinfo.Version)}, opts...)
	if c.caFile != "" {
		opts = append(opts, apiclient.WithCACertFile(c.caFile))
	}
	cl, err := apiclient.New(c.url, c.token, opts...)
	if err != nil {
		return nil, err
	}
	r.warnPlainHTTP(cl.BaseURL())
	return cl, nil
}

// warnPlainHTTP warns when the token would cross a network unencrypted.
func (r *run) warnPlainHTTP(base string) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" {
		return
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return
	}
	fmt.Fprintf(r.stderr, "%s: warning: %s is plain http; the API token crosses the network unencrypted\n", appName, base)
}

// resolve merges flags, environment and config file, in that order of
// precedence. The config file is read only when something is missing.
func (r *run) resolve() (connFlags, error) {
	c := connFlags{
		url:    first(r.conn.url, r.env.getenv(EnvAPIURL)),
		token:  first(r.conn.token, r.env.getenv(EnvToken)),
		caFile: first(r.conn.caFile, r.env.getenv(EnvCAFile)),
	}
	if c.url != "" && c.token != "" {
		return c, nil
	}
	path := configPath(r.env.getenv)
	if path == "" {
		return c, nil
	}
	cfg, err := loadConfig(path, r.stderr)
	if err != nil {
		return c, err
	}
	if c.url == "" {
		c.url = cfg.URL
		// The config's CA file goes with the config's URL.
		c.caFile = first(c.caFile, cfg.CAFile)
	}
	c.token = first(c.token, cfg.Token)
	return c, nil
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
