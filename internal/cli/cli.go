// Package cli is the small command-line frame shared by the Outpost
// binaries: global --help and --version, and subcommands that each parse
// their own flags. Mains stay thin: they build an App and call Main.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/outpost-pki/outpost/internal/buildinfo"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1 // the command ran and failed
	ExitUsage = 2 // the command line was wrong
)

// ErrUsage marks an error in the command line; Main prints it with a hint
// and exits with ExitUsage.
var ErrUsage = errors.New("usage error")

// Command is one subcommand.
type Command struct {
	// Name is what the user types, e.g. "run".
	Name string
	// Summary is a one-line description for --help.
	Summary string
	// Run executes the command with the arguments after its name. Return
	// an error wrapping ErrUsage for a bad command line.
	Run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// App is a binary.
type App struct {
	// Name is the binary name, e.g. "outpost-agent".
	Name string
	// Summary is a one-line description for --help.
	Summary string
	// Commands are the subcommands; "version" is added automatically.
	Commands []Command
}

// Main runs the app with args (without the program name) and returns the
// process exit code.
func (a App) Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(a.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.usage(stdout)
			return ExitOK
		}
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", a.Name, err, a.Name)
		return ExitUsage
	}
	if *showVersion {
		fmt.Fprintln(stdout, buildinfo.String(a.Name))
		return ExitOK
	}
	rest := fs.Args()
	if len(rest) == 0 {
		a.usage(stderr)
		fmt.Fprintf(stderr, "\n%s: no command given\n", a.Name)
		return ExitUsage
	}
	name, cmdArgs := rest[0], rest[1:]
	if name == "help" {
		a.usage(stdout)
		return ExitOK
	}
	cmd, ok := a.lookup(name)
	if !ok {
		fmt.Fprintf(stderr, "%s: unknown command %q\nRun '%s --help' for the list of commands.\n", a.Name, name, a.Name)
		return ExitUsage
	}
	if err := cmd.Run(ctx, cmdArgs, stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "%s %s: %v\n", a.Name, name, err)
		if errors.Is(err, ErrUsage) {
			return ExitUsage
		}
		return ExitError
	}
	return ExitOK
}

func (a App) commands() []Command {
	cmds := append([]Command(nil), a.Commands...)
	cmds = append(cmds, Command{
		Name:    "version",
		Summary: "print the version and the commit the binary was built from",
		Run: func(_ context.Context, args []string, stdout, _ io.Writer) error {
			if len(args) > 0 {
				return fmt.Errorf("%w: version takes no arguments", ErrUsage)
			}
			fmt.Fprintln(stdout, buildinfo.String(a.Name))
			return nil
		},
	})
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].Name < cmds[j].Name })
	return cmds
}

func (a App) lookup(name string) (Command, bool) {
	for _, c := range a.commands() {
		if c.Name == name {
			return c, true
		}
	}
	return Command{}, false
}

func (a App) usage(w io.Writer) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s - %s\n\nUsage:\n  %s [--version] [--help] <command> [arguments]\n\nCommands:\n", a.Name, a.Summary, a.Name)
	for _, c := range a.commands() {
		fmt.Fprintf(&b, "  %-12s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintf(&b, "\nRun '%s <command> --help' for the flags of a command.\n", a.Name)
	io.WriteString(w, b.String())
}

// Run is the whole body of a main function: it runs the app with the
// process arguments, cancels its context on SIGINT or SIGTERM, and exits
// with the app's exit code.
func Run(a App) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := a.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
