// Package cpcmd holds the subcommands of outpost-controlplane.
package cpcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/outpost-pki/outpost/controlplane/internal/cpconfig"
	"github.com/outpost-pki/outpost/controlplane/internal/cpserver"
	"github.com/outpost-pki/outpost/controlplane/internal/crl"
	"github.com/outpost-pki/outpost/controlplane/internal/notify"
	"github.com/outpost-pki/outpost/internal/cli"
	"github.com/outpost-pki/outpost/internal/sdnotify"
)

// DefaultConfigPath is where the packaged config lives.
const DefaultConfigPath = "/etc/outpost-controlplane/config.yaml"

// App returns the outpost-controlplane command line.
func App() cli.App {
	return cli.App{
		Name:    "outpost-controlplane",
		Summary: "Outpost control plane: CAs, registry, OCSP/CRL, sync consumer, dashboard",
		Commands: []cli.Command{
			{Name: "serve", Summary: "run the control plane (API; bootstraps its CAs on first start)", Run: serve},
			{Name: "check-config", Summary: "validate the configuration file and exit", Run: checkConfig},
		},
	}
}

func loadConfig(name string, args []string, stderr io.Writer) (*cpconfig.Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", DefaultConfigPath, "configuration file")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", cli.ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", cli.ErrUsage, fs.Arg(0))
	}
	return cpconfig.Load(*path, os.Getenv)
}

func checkConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if _, err := loadConfig("check-config", args, stderr); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "configuration is valid")
	return nil
}

func serve(ctx context.Context, args []string, _, stderr io.Writer) error {
	cfg, err := loadConfig("serve", args, stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	app, err := cpserver.Build(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer app.Close()
	app.AttachCRL(&crl.Service{Reg: app.Svc.Reg, Keys: app.Keys, Validity: cfg.CRL.Validity.D(), DeltaValidity: cfg.CRL.DeltaValidity.D(), Log: log}, crl.PathPrefix)
	d, err := dispatcher(cfg, app, log)
	if err != nil {
		return err
	}
	app.Jobs = append(app.Jobs, func(ctx context.Context) { d.Run(ctx, cfg.Notifications.Interval.D()) })
	if app.Bootstrapped {
		log.Info("bootstrap: created the root, issuing and DMS manager CAs")
	}
	// Under systemd (Type=notify): READY=1 once the API listens, watchdog
	// pings while the database answers, STOPPING=1 on the way out.
	defer func() { _, _ = sdnotify.Notify(sdnotify.Stopping) }()
	return app.Serve(ctx, func(string) {
		if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
			log.Warn("telling systemd the service is ready", "err", err)
		}
		go sdnotify.RunWatchdog(ctx, app.Health, log)
	})
}

// dispatcher builds the notification dispatcher from the configuration.
func dispatcher(cfg *cpconfig.Config, app *cpserver.App, log *slog.Logger) (*notify.Dispatcher, error) {
	var pass string
	if cfg.Notifications.SMTPPassword.IsSet() {
		p, err := cfg.Notifications.SMTPPassword.Resolve("notifications.smtp_password")
		if err != nil {
			return nil, err
		}
		pass = p.Reveal()
	}
	return &notify.Dispatcher{Pool: app.Pool, MaxAttempts: cfg.Notifications.MaxAttempts, Log: log,
		SMTP: notify.SMTPConfig{Addr: cfg.Notifications.SMTPAddr, From: cfg.Notifications.SMTPFrom, Username: cfg.Notifications.SMTPUsername, Password: pass}}, nil
}
