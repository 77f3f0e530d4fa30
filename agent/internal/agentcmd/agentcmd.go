// Package agentcmd holds the subcommands of outpost-agent.
package agentcmd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-pki/outpost/agent/internal/agent"
	"github.com/outpost-pki/outpost/agent/internal/agentconfig"
	"github.com/outpost-pki/outpost/agent/internal/rotation"
	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/internal/cli"
	"github.com/outpost-pki/outpost/internal/tlspolicy"
)

// DefaultConfigPath is where the packaged config lives.
const DefaultConfigPath = "/etc/outpost-agent/config.yaml"

// App returns the outpost-agent command line.
func App() cli.App {
	return cli.App{
		Name:    "outpost-agent",
		Summary: "edge registration authority: EST for local devices, keys in TPM/HSM, offline issuance, MQTT sync",
		Commands: []cli.Command{
			{Name: "bootstrap", Summary: "get the DMS identity with a one-time token from the control plane", Run: bootstrap},
			{Name: "run", Summary: "run the agent (sync link, admin endpoints)", Run: run},
			{Name: "status", Summary: "show online state, queue depth, identity expiry, last sync", Run: status},
			{Name: "queue", Summary: "list records waiting to reach the control plane", Run: queue},
			{Name: "selftest", Summary: "send test records through the sync link (--records N)", Run: selftest},
			{Name: "secrets", Summary: "mint one-time EST enrollment secrets (--count N | --devices a,b; prints device:secret lines once)", Run: secrets},
			{Name: "renew-identity", Summary: "renew the DMS identity certificate now (the running agent does it by itself before expiry)", Run: renewIdentity},
			{Name: "rotate", Summary: "rotate agentless devices' certificates now (--device ID, --force; --dry-run shows routes and what is due)", Run: rotate},
		},
	}
}

type common struct {
	fs     *flag.FlagSet
	config *string
}

func newFlags(name string, stderr io.Writer) common {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return common{fs: fs, config: fs.String("config", DefaultConfigPath, "configuration `file`")}
}

func (c common) parse(args []string) (*agentconfig.Config, error) {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", cli.ErrUsage, err)
	}
	if c.fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", cli.ErrUsage, c.fs.Arg(0))
	}
	return agentconfig.Load(*c.config, os.Getenv)
}

func logger(cfg *agentconfig.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func bootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newFlags("bootstrap", stderr)
	token := c.fs.String("token", "", "one-time bootstrap `token` from the control plane (or env OUTPOST_BOOTSTRAP_TOKEN)")
	cfg, err := c.parse(args)
	if err != nil {
		return err
	}
	if *token == "" {
		*token = os.Getenv("OUTPOST_BOOTSTRAP_TOKEN")
	}
	if *token == "" {
		return fmt.Errorf("%w: --token is required", cli.ErrUsage)
	}
	ks, err := agent.OpenKeystore(cfg)
	if err != nil {
		return err
	}
	defer ks.Close()
	client := &http.Client{Timeout: 30 * time.Second}
	if cfg.ControlPlaneCAFile != "" {
		b, err := os.ReadFile(cfg.ControlPlaneCAFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return errors.New("control_plane_ca_file holds no PEM certificates")
		}
		client.Transport = &http.Transport{TLSClientConfig: tlspolicy.Client(&tls.Config{RootCAs: pool})}
	}
	id, err := agent.Bootstrap(ctx, cfg, ks, *token, client)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bootstrapped DMS %s; identity valid until %s (key in the %s key store)\n", id.DMSID, id.Cert.NotAfter.UTC().Format(time.RFC3339), cfg.Keystore.Backend)
	return nil
}

func run(ctx context.Context, args []string, _, stderr io.Writer) error {
	c := newFlags("run", stderr)
	cfg, err := c.parse(args)
	if err != nil {
		return err
	}
	return agent.Run(ctx, cfg, logger(cfg, stderr), nil)
}

// adminGet asks the running agent and decodes its JSON answer into v (a
// *string takes the text as is); ok is false when it is not running.
func adminGet(cfg *agentconfig.Config, method, path string, v any) (bool, error) {
	req, err := http.NewRequest(method, "http://"+cfg.AdminAddr+path, nil)
	if err != nil {
		return false, err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return false, nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return true, fmt.Errorf("agent answered %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if v == nil {
		return true, nil
	}
	if sp, ok := v.(*string); ok {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		*sp = strings.TrimSpace(string(b))
		return true, err
	}
	return true, json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(v)
}

func status(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newFlags("status", stderr)
	asJSON := c.fs.Bool("json", false, "print JSON")
	cfg, err := c.parse(args)
	if err != nil {
		return err
	}
	var s agent.Status
	running, err := adminGet(cfg, "GET", "/status", &s)
	if err != nil {
		return err
	}
	if !running {
		// Not running: read what is on disk.
		ks, err := agent.OpenKeystore(cfg)
		if err != nil {
			return err
		}
		defer ks.Close()
		id, err := agent.LoadIdentity(ctx, cfg, ks)
		if err != nil {
			return err
		}
		st, err := agent.OpenStore(cfg)
		if errors.Is(err, store.ErrLocked) {
			return errors.New("the agent is starting (it holds its store but does not answer on admin_addr yet); try again in a moment")
		}
		if err != nil {
			return err
		}
		defer st.Close()
		depth, _ := st.Depth()
		s = agent.Status{DMSID: id.DMSID, QueueDepth: depth, IdentityNotAfter: id.Cert.NotAfter, IdentitySerial: id.Serial()}
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(s)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "DMS\t%s\n", s.DMSID)
	fmt.Fprintf(tw, "running\t%v\n", running)
	fmt.Fprintf(tw, "online\t%v\n", s.Online)
	if s.Disabled {
		fmt.Fprintf(tw, "disabled\tsince %s: %s; enrollments are refused\n", s.DisabledSince.UTC().Format(time.RFC3339), agent.DisabledMessage)
	}
	fmt.Fprintf(tw, "queue depth\t%d\n", s.QueueDepth)
	fmt.Fprintf(tw, "identity serial\t%s\n", s.IdentitySerial)
	fmt.Fprintf(tw, "identity expires\t%s (in %s)\n", s.IdentityNotAfter.UTC().Format(time.RFC3339), time.Until(s.IdentityNotAfter).Round(time.Hour))
	if !s.LastSync.IsZero() {
		fmt.Fprintf(tw, "last sync\t%s\n", s.LastSync.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func queue(_ context.Context, args []string, stdout, stderr io.Writer) error {
	c := newFlags("queue", stderr)
	limit := c.fs.Int("limit", 100, "how many records to list")
	cfg, err := c.parse(args)
	if err != nil {
		return err
	}
	var items []agent.QueueItem
	running, err := adminGet(cfg, "GET", fmt.Sprintf("/queue?limit=%d", *limit), &items)
	if err != nil {
		return err
	}
	if !running {
		return errors.New("the agent is not running; start it (the store is locked while it runs, and read through it)")
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECORD\tKIND\tDEVICE")
	for _, it := range items {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", it.ID, it.Kind, it.DeviceID)
	}
	return tw.Flush()
}

func selftest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newFlags("selftest", stderr)
	n := c.fs.Int("records", 1, "how many test records to send")
	prefix := c.fs.String("prefix", "", "record id prefix (default: random)")
	cfg, err := c.parse(args)
	if err != nil {
		return err
	}
	path := fmt.Sprintf("/selftest?records=%d&prefix=%s", *n, url.QueryEscape(*prefix))
	deadline := time.Now().Add(30 * time.Second)
	for {
		running, err := adminGet(cfg, "POST", path, nil)
		if err != nil {
			return err
		}
		if running {
			break
		}
		// Not answering: either not running (write the store directly) or
		// starting (it holds the store: ask it again shortly).
		st, err := agent.OpenStore(cfg)
		if errors.Is(err, store.ErrLocked) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if err != nil {
			return err
		}
		err = agent.EnqueueSelftest(ctx, st, *prefix, *n)
		st.Close()
		if err != nil {
			return err
		}
		break
	}
	fmt.Fprintf(stdout, "enqueued %d test records\n", *n)
	return nil
}

func renewIdentity(_ context.Context, args []string, stdout, stderr io.Writer) error {
	c := newFlags("renew-identity", stderr)
	cfg, err := c.parse(args)
	if err != nil {
		return err
	}
	var msg string
	running, err := adminGet(cfg, "POST", "/renew-identity", &msg)
	if err != nil {
		return err
	}
	if !running {
		return errors.New("the agent is not running: the renewal goes over its sync link; start it")
	}
	fmt.Fprintln(stdout, msg)
	return nil
}

// rotate asks the running agent to run due rotations now (or plan them
// with --dry-run) and prints the results (docs/ROTATION.md). It fails
// when a rotation failed or was deferred.
func rotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newFlags("rotate", stderr)
	device := c.fs.String("device", "", "only this device `id`")
	force := c.fs.Bool("force", false, "rotate even if the certificate is not due")
	dry := c.fs.Bool("dry-run", false, "print each device's route and whether it is due; rotate nothing")
	asJSON := c.fs.Bool("json", false, "print JSON")
	wait := c.fs.Duration("timeout", 30*time.Minute, "how long to wait for the rotations")
	cfg, err := c.parse(args)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *device != "" {
		q.Set("device", *device)
	}
	if *force {
		q.Set("force", "1")
	}
	method := "POST"
	if *dry {
		method = "GET"
	}
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, method, "http://"+cfg.AdminAddr+"/rotate?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return fmt.Errorf("asking the running agent (admin_addr %s): %w", cfg.AdminAddr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("agent answered %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	var res []rotation.Result
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&res); err != nil {
		return err
	}
	failed := 0
	for _, r := range res {
		if r.Outcome == rotation.OutcomeFailed || r.Outcome == rotation.OutcomeDeferred {
			failed++
		}
	}
	incomplete := func() error {
		if failed > 0 {
			return fmt.Errorf("%d of %d rotations did not complete", failed, len(res))
		}
		return nil
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			return err
		}
		return incomplete()
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if *dry {
		fmt.Fprintln(tw, "DEVICE\tROUTE\tDUE\tREASON")
		for _, r := range res {
			route := r.Route
			if route == "" {
				route = "(none)"
			}
			reason := r.Reason
			if !r.BackoffUntil.IsZero() && r.BackoffUntil.After(time.Now()) {
				reason += "; backing off until " + r.BackoffUntil.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", r.DeviceID, route, r.Due, reason)
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "DEVICE\tROUTE\tOUTCOME\tSERIAL\tDETAIL")
	for _, r := range res {
		detail := r.Reason
		switch r.Outcome {
		case rotation.OutcomeFailed, rotation.OutcomeDeferred:
			detail = r.Phase + ": " + r.Error
			if r.Stderr != "" {
				detail += " (stderr: " + strings.Join(strings.Fields(r.Stderr), " ") + ")"
			}
		case rotation.OutcomeSucceeded:
			detail = "replaced " + r.OldSerial
			if r.OldSerial == "" {
				detail = "installed"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.DeviceID, r.Route, r.Outcome, r.Serial, detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return incomplete()
}

func secrets(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newFlags("secrets", stderr)
	count := c.fs.Int("count", 0, "how many secrets to mint, for device ids <prefix><time>-<n>")
	prefix := c.fs.String("prefix", "device-", "device id prefix with --count")
	devices := c.fs.String("devices", "", "comma-separated device ids to mint for (instead of --count)")
	label := c.fs.String("label", "", "restrict the secrets to this EST label")
	ttl := c.fs.Duration("ttl", 0, "validity of the secrets (0: no expiry)")
	replace := c.fs.Bool("replace", false, "replace unused secrets the devices already have")
	out := c.fs.String("out", "", "write the device:secret lines to this file (mode 0600) instead of stdout")
	cfg, err := c.parse(args)
	if err != nil {
		return err
	}
	req := agent.MintRequest{Count: *count, Prefix: *prefix, Label: *label, TTL: *ttl, Replace: *replace}
	if *devices != "" {
		req.DeviceIDs = strings.Split(*devices, ",")
	}
	creds, err := mintVia(ctx, cfg, req)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, cr := range creds {
		fmt.Fprintf(&b, "%s:%s\n", cr.Username, cr.Password)
	}
	if *out != "" {
		if err := os.WriteFile(*out, []byte(b.String()), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "minted %d enrollment secrets into %s\n", len(creds), *out)
		return nil
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

// mintVia mints through the running agent, or in the store when the agent
// is not running.
func mintVia(ctx context.Context, cfg *agentconfig.Config, req agent.MintRequest) ([]store.Credential, error) {
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, "POST", "http://"+cfg.AdminAddr+"/secrets", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(hr)
	if err == nil {
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return nil, fmt.Errorf("agent answered %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}
		var creds []store.Credential
		return creds, json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&creds)
	}
	st, err := agent.OpenStore(cfg)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return agent.MintSecrets(st, req)
}
