package ctlcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/outpost-pki/outpost/controlplane/internal/apiclient"
	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

var (
	dmsModes       = []string{"online", "queued", "local"}
	dmsDeviceAuths = []string{"client_cert", "basic_secret", "client_cert_or_secret", "webhook"}
)

var dmsList = listSpec[apitypes.DMS]{
	header: []string{"id", "name", "status", "mode", "device auth", "profile", "cas", "created"},
	row: func(d apitypes.DMS) []string {
		return []string{d.ID, d.Name, d.Status, d.Policy.Mode, d.Policy.DeviceAuth, d.Policy.Profile,
			strings.Join(d.AuthorizedCAs, ","), fmtTime(d.CreatedAt)}
	},
	page: func(ctx context.Context, c *apiclient.Client, cursor string, limit int) (apitypes.Page[apitypes.DMS], error) {
		return c.ListDMSs(ctx, cursor, limit)
	},
	all: func(ctx context.Context, c *apiclient.Client, fn func(apitypes.DMS) error) error {
		return c.AllDMSs(ctx, fn)
	},
}

func dmsFields(w io.Writer, d apitypes.DMS) error {
	var labels []string
	for _, l := range d.Policy.Labels {
		s := l.Name + "=" + l.CAID
		if l.Profile != "" {
			s += ":" + l.Profile
		}
		labels = append(labels, s)
	}
	bootstrapCAs := ""
	if n := len(d.Policy.BootstrapCAPEMs); n > 0 {
		bootstrapCAs = fmt.Sprintf("%d certificate(s); see -o json", n)
	}
	return fields(w,
		"id", d.ID,
		"name", d.Name,
		"status", d.Status,
		"mode", d.Policy.Mode,
		"device auth", d.Policy.DeviceAuth,
		"profile", d.Policy.Profile,
		"reenroll window days", fmt.Sprint(d.Policy.ReenrollWindowDays),
		"local quota", fmt.Sprint(d.Policy.LocalQuota),
		"bootstrap cas", bootstrapCAs,
		"labels", strings.Join(labels, ", "),
		"edge ca validity days", fmt.Sprint(d.Policy.EdgeCAValidityDays),
		"edge name constraints", strings.Join(d.Policy.EdgeNameConstraints, ", "),
		"webhook url", d.Policy.WebhookURL,
		"online wait ms", optInt(d.Policy.OnlineWaitMs),
		"jit registration", optBool(d.Policy.JITRegistration),
		"authorized cas", strings.Join(d.AuthorizedCAs, ", "),
		"identity serial", d.IdentitySerial,
		"identity not after", fmtTimePtr(d.IdentityNotAfter),
		"created", fmtTime(d.CreatedAt))
}

func optInt(p *int) string {
	if p == nil {
		return ""
	}
	return fmt.Sprint(*p)
}

func optBool(p *bool) string {
	if p == nil {
		return ""
	}
	return fmt.Sprint(*p)
}

// policyFlags are the DMS policy flags shared by create and update.
type policyFlags struct {
	fs              *flag.FlagSet
	mode            string
	deviceAuth      string
	profile         string
	reenrollDays    int
	localQuota      int
	cas             stringList
	bootstrapCAs    stringList
	labels          stringList
	edgeDays        int
	nameConstraints stringList
	webhookURL      string
	onlineWaitMS    int
	jit             bool
}

// policyFlagNames are the flags that change the policy (not --ca).
var policyFlagNames = []string{"mode", "device-auth", "profile", "reenroll-window-days", "local-quota", "bootstrap-ca",
	"label", "edge-ca-validity-days", "edge-name-constraint", "webhook-url", "online-wait-ms", "jit-registration"}

func addPolicyFlags(fs *flag.FlagSet) *policyFlags {
	p := &policyFlags{fs: fs}
	fs.StringVar(&p.mode, "mode", "", "enrollment `mode`: "+strings.Join(dmsModes, ", "))
	fs.StringVar(&p.deviceAuth, "device-auth", "", "device `authentication`: "+strings.Join(dmsDeviceAuths, ", "))
	fs.StringVar(&p.profile, "profile", "", "certificate `profile` for enrolled devices")
	fs.IntVar(&p.reenrollDays, "reenroll-window-days", 0, "`days` before expiry in which devices may re-enroll")
	fs.IntVar(&p.localQuota, "local-quota", 0, "`number` of certificates the DMS may issue locally while offline")
	fs.Var(&p.cas, "ca", "authorized CA `id` (repeatable)")
	fs.Var(&p.bootstrapCAs, "bootstrap-ca", "PEM `file` of a CA whose certificates may bootstrap devices (repeatable)")
	fs.Var(&p.labels, "label", "EST label as `name=CA-ID[:profile]` (repeatable; replaces the labels)")
	fs.IntVar(&p.edgeDays, "edge-ca-validity-days", 0, "lifetime in `days` of the DMS's edge CA (local mode; 1-3650, default 30)")
	fs.Var(&p.nameConstraints, "edge-name-constraint", "`name` the edge CA may certify: DNS domain, IP CIDR, @email-domain or uri:domain (repeatable; replaces the list)")
	fs.StringVar(&p.webhookURL, "webhook-url", "", "HTTPS `URL` that authenticates devices (with --device-auth webhook)")
	fs.IntVar(&p.onlineWaitMS, "online-wait-ms", 0, "`milliseconds` a device waits in online mode before its request is queued (0-60000, default 5000)")
	fs.BoolVar(&p.jit, "jit-registration", true, "register unknown devices on their first enrollment (--jit-registration=false: only pre-registered devices)")
	return p
}

// policyChanged reports whether any policy field (not --ca) was given.
func (p *policyFlags) policyChanged() bool {
	for _, n := range policyFlagNames {
		if flagSet(p.fs, n) {
			return true
		}
	}
	return false
}

// apply validates the given flags and sets them on pol, leaving the
// fields of flags not given alone.
func (p *policyFlags) apply(pol *apitypes.DMSPolicy) error {
	if err := optOneOf("--mode", p.mode, dmsModes...); err != nil {
		return err
	}
	if err := optOneOf("--device-auth", p.deviceAuth, dmsDeviceAuths...); err != nil {
		return err
	}
	if p.reenrollDays < 0 || p.localQuota < 0 {
		return usageErrorf("--reenroll-window-days and --local-quota must not be negative")
	}
	if flagSet(p.fs, "mode") {
		pol.Mode = p.mode
	}
	if flagSet(p.fs, "device-auth") {
		pol.DeviceAuth = p.deviceAuth
	}
	if flagSet(p.fs, "profile") {
		pol.Profile = p.profile
	}
	if flagSet(p.fs, "reenroll-window-days") {
		pol.ReenrollWindowDays = p.reenrollDays
	}
	if flagSet(p.fs, "local-quota") {
		pol.LocalQuota = p.localQuota
	}
	if flagSet(p.fs, "label") {
		pol.Labels = nil
		for _, l := range p.labels {
			name, rest, ok := strings.Cut(l, "=")
			if !ok || name == "" || rest == "" {
				return usageErrorf("--label %q: want name=CA-ID or name=CA-ID:profile", l)
			}
			ca, profile, _ := strings.Cut(rest, ":")
			pol.Labels = append(pol.Labels, apitypes.DMSLabel{Name: name, CAID: ca, Profile: profile})
		}
	}
	if flagSet(p.fs, "edge-ca-validity-days") {
		pol.EdgeCAValidityDays = p.edgeDays
	}
	if flagSet(p.fs, "edge-name-constraint") {
		pol.EdgeNameConstraints = append([]string(nil), p.nameConstraints...)
	}
	if flagSet(p.fs, "webhook-url") {
		pol.WebhookURL = p.webhookURL
	}
	if flagSet(p.fs, "online-wait-ms") {
		pol.OnlineWaitMs = &p.onlineWaitMS
	}
	if flagSet(p.fs, "jit-registration") {
		pol.JITRegistration = &p.jit
	}
	if flagSet(p.fs, "bootstrap-ca") {
		pol.BootstrapCAPEMs = nil
		for _, f := range p.bootstrapCAs {
			b, err := readFileCapped(f, maxCertFileSize)
			if err != nil {
				return err
			}
			pol.BootstrapCAPEMs = append(pol.BootstrapCAPEMs, string(b))
		}
	}
	return nil
}

func dmsCmds() []*subcommand {
	return []*subcommand{
		{
			name: "list", summary: "list DMSs", api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				l := addListFlags(fs)
				return func(ctx context.Context, r *run) error { return runList(ctx, r, l, dmsList) }
			},
		},
		{
			name: "get", args: "ID", summary: "show a DMS and its policy", minArgs: 1, maxArgs: 1, api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				return func(ctx context.Context, r *run) error {
					c, err := r.client()
					if err != nil {
						return err
					}
					d, err := c.GetDMS(ctx, r.args[0])
					if err != nil {
						return err
					}
					return r.show(d, func(w io.Writer) error { return dmsFields(w, d) })
				}
			},
		},
		{
			name: "create", summary: "create a DMS and print its one-time bootstrap token", api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				name := fs.String("name", "", "DMS `name` (required)")
				pf := addPolicyFlags(fs)
				ttl := fs.Int("token-ttl-hours", 0, "bootstrap token lifetime in `hours` (server default 24)")
				return func(ctx context.Context, r *run) error {
					if *name == "" {
						return usageErrorf("--name is required")
					}
					if *ttl < 0 {
						return usageErrorf("--token-ttl-hours must not be negative")
					}
					req := apitypes.CreateDMSRequest{Name: *name, AuthorizedCAs: pf.cas, TokenTTLHours: *ttl}
					if pf.policyChanged() {
						req.Policy = &apitypes.DMSPolicy{}
						if err := pf.apply(req.Policy); err != nil {
							return err
						}
					}
					c, err := r.client()
					if err != nil {
						return err
					}
					resp, err := c.CreateDMS(ctx, req)
					if err != nil {
						return err
					}
					return r.show(resp, func(w io.Writer) error {
						if err := dmsFields(w, resp.DMS); err != nil {
							return err
						}
						fmt.Fprintln(w)
						showOnce(w, "Bootstrap token", resp.BootstrapToken,
							fmt.Sprintf("It expires at %s and works once: give it to the DMS agent now.", fmtTime(resp.TokenExpiresAt)),
							"It is shown once and cannot be retrieved again; if it is lost, disable this DMS and create another.")
						return nil
					})
				}
			},
		},
		{
			name: "update", args: "ID", summary: "change a DMS's policy or authorized CAs; only the flags given change",
			minArgs: 1, maxArgs: 1, api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				pf := addPolicyFlags(fs)
				return func(ctx context.Context, r *run) error {
					changeCAs := flagSet(fs, "ca")
					if !pf.policyChanged() && !changeCAs {
						return usageErrorf("nothing to update: give at least one policy flag or --ca")
					}
					c, err := r.client()
					if err != nil {
						return err
					}
					var req apitypes.UpdateDMSRequest
					if pf.policyChanged() {
						// The API replaces the policy whole: start from the
						// current one so that flags not given keep their value.
						cur, err := c.GetDMS(ctx, r.args[0])
						if err != nil {
							return err
						}
						pol := cur.Policy
						if err := pf.apply(&pol); err != nil {
							return err
						}
						req.Policy = &pol
					}
					if changeCAs {
						cas := []string(pf.cas)
						req.AuthorizedCAs = &cas
					}
					d, err := c.UpdateDMS(ctx, r.args[0], req)
					if err != nil {
						return err
					}
					return r.show(d, func(w io.Writer) error { return dmsFields(w, d) })
				}
			},
		},
		{
			name: "disable", args: "ID", summary: "disable a DMS", minArgs: 1, maxArgs: 1, api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				return func(ctx context.Context, r *run) error {
					c, err := r.client()
					if err != nil {
						return err
					}
					d, err := c.DisableDMS(ctx, r.args[0])
					if err != nil {
						return err
					}
					return r.show(d, func(w io.Writer) error { return dmsFields(w, d) })
				}
			},
		},
	}
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	*s = append(*s, v)
	return nil
}
