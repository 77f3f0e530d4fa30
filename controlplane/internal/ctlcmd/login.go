package ctlcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

func loginCmd() *subcommand {
	return &subcommand{
		name: "login", args: "", summary: "check a URL and token with /whoami, then save them to the config file (mode 0600)",
		api: true,
		setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
			return func(ctx context.Context, r *run) error {
				c := connFlags{
					url:    first(r.conn.url, r.env.getenv(EnvAPIURL)),
					token:  first(r.conn.token, r.env.getenv(EnvToken)),
					caFile: first(r.conn.caFile, r.env.getenv(EnvCAFile)),
				}
				if c.url == "" || c.token == "" {
					return usageErrorf("login needs --url and --token (or %s and %s)", EnvAPIURL, EnvToken)
				}
				path := configPath(r.env.getenv)
				if path == "" {
					return fmt.Errorf("no config path: set %s or HOME", EnvConfig)
				}
				if c.caFile != "" {
					abs, err := filepath.Abs(c.caFile)
					if err != nil {
						return err
					}
					c.caFile = abs
				}
				cl, err := r.newClient(c)
				if err != nil {
					return err
				}
				who, err := cl.WhoAmI(ctx)
				if err != nil {
					return err
				}
				if err := saveConfig(path, Config{URL: cl.BaseURL(), Token: c.token, CAFile: c.caFile}); err != nil {
					return err
				}
				fmt.Fprintf(r.stdout, "Logged in to %s as %s (%s).\nSaved to %s.\n",
					cl.BaseURL(), clean(who.Principal.Name), clean(who.Principal.Role), path)
				return nil
			}
		},
	}
}

func whoamiCmd() *subcommand {
	return &subcommand{
		name: "whoami", summary: "show the principal and role behind the current token",
		api: true, output: true,
		setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
			return func(ctx context.Context, r *run) error {
				c, err := r.client()
				if err != nil {
					return err
				}
				who, err := c.WhoAmI(ctx)
				if err != nil {
					return err
				}
				return r.show(who, func(w io.Writer) error {
					return fields(w,
						"url", c.BaseURL(),
						"principal", who.Principal.Name,
						"principal id", who.Principal.ID,
						"role", who.Principal.Role,
						"token id", who.TokenID)
				})
			}
		},
	}
}

func tokenCmds() []*subcommand {
	return []*subcommand{
		{
			name: "create", summary: "create an API token (and its principal, if new); the token is shown once",
			api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				principal := fs.String("principal", "", "principal `name` (required)")
				role := fs.String("role", "", "`role`: admin, operator or viewer (required)")
				desc := fs.String("description", "", "what the token is for")
				ttl := fs.Int("ttl-hours", 0, "token lifetime in `hours`; 0 never expires")
				return func(ctx context.Context, r *run) error {
					if *principal == "" {
						return usageErrorf("--principal is required")
					}
					if err := oneOf("--role", *role, "admin", "operator", "viewer"); err != nil {
						return err
					}
					if *ttl < 0 {
						return usageErrorf("--ttl-hours must not be negative")
					}
					c, err := r.client()
					if err != nil {
						return err
					}
					resp, err := c.CreateToken(ctx, apitypes.CreateTokenRequest{
						Principal: *principal, Role: *role, Description: *desc, TTLHours: *ttl,
					})
					if err != nil {
						return err
					}
					return r.show(resp, func(w io.Writer) error {
						expires := "never"
						if resp.ExpiresAt != nil {
							expires = fmtTimePtr(resp.ExpiresAt)
						}
						fmt.Fprintf(w, "Created token %s for %s (%s), expires %s.\n\n", clean(resp.TokenID), clean(*principal), *role, expires)
						showOnce(w, "API token", resp.Token,
							"Store it now, e.g. in a secret manager: it is shown once and cannot be retrieved again.",
							fmt.Sprintf("Revoke it with '%s token revoke %s'.", appName, clean(resp.TokenID)))
						return nil
					})
				}
			},
		},
		{
			name: "revoke", args: "ID", summary: "revoke an API token by id", minArgs: 1, maxArgs: 1,
			api: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				return func(ctx context.Context, r *run) error {
					c, err := r.client()
					if err != nil {
						return err
					}
					if err := c.RevokeToken(ctx, r.args[0]); err != nil {
						return err
					}
					fmt.Fprintf(r.stdout, "Revoked token %s.\n", clean(r.args[0]))
					return nil
				}
			},
		},
	}
}

// showOnce prints a secret the server will never show again, set apart so
// that it cannot be missed, followed by notes.
func showOnce(w io.Writer, what, secret string, notes ...string) {
	fmt.Fprintf(w, "%s (shown once):\n\n    %s\n\n", what, clean(secret))
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}

// oneOf checks a flag value against the allowed ones.
func oneOf(flagName, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	if v == "" {
		return usageErrorf("%s is required: one of %v", flagName, allowed)
	}
	return usageErrorf("%s %q: want one of %v", flagName, v, allowed)
}
