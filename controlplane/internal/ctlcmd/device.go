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

var deviceListHeader = []string{"id", "dms", "status", "labels", "created"}

func deviceRow(d apitypes.Device) []string {
	return []string{d.ID, d.DMSID, d.Status, fmtMap(d.Labels), fmtTime(d.CreatedAt)}
}

// deviceDetail prints a device, its certificate slots and its timeline.
func deviceDetail(w io.Writer, d apitypes.Device) error {
	if err := fields(w,
		"id", d.ID,
		"dms", d.DMSID,
		"status", d.Status,
		"labels", fmtMap(d.Labels),
		"created", fmtTime(d.CreatedAt)); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nSLOTS")
	if len(d.Slots) == 0 {
		fmt.Fprintln(w, "(none)")
	} else {
		t := newTable(w, "ca", "serial", "status", "not before", "not after", "active")
		for _, s := range d.Slots {
			if len(s.Certificates) == 0 {
				t.row(s.CAID, s.ActiveSerial, "", "", "", yesNo(s.ActiveSerial != ""))
			}
			for _, c := range s.Certificates {
				active := ""
				if c.Serial == s.ActiveSerial {
					active = "*"
				}
				t.row(s.CAID, c.Serial, c.Status, fmtTime(c.NotBefore), fmtTime(c.NotAfter), active)
			}
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "\nTIMELINE")
	if len(d.Timeline) == 0 {
		fmt.Fprintln(w, "(none)")
		return nil
	}
	t := newTable(w, "at", "kind", "detail")
	for _, e := range d.Timeline {
		t.row(fmtTime(e.At), e.Kind, fmtMap(e.Detail))
	}
	return t.flush()
}

func deviceCmds() []*subcommand {
	return []*subcommand{
		{
			name: "list", summary: "list devices", api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				var q apiclient.DeviceQuery
				fs.StringVar(&q.Prefix, "q", "", "device id `prefix`")
				fs.StringVar(&q.Status, "status", "", "device `status`")
				fs.StringVar(&q.DMSID, "dms", "", "DMS `id`")
				l := addListFlags(fs)
				return func(ctx context.Context, r *run) error {
					return runList(ctx, r, l, listSpec[apitypes.Device]{
						header: deviceListHeader,
						row:    deviceRow,
						page: func(ctx context.Context, c *apiclient.Client, cursor string, limit int) (apitypes.Page[apitypes.Device], error) {
							return c.ListDevices(ctx, q, cursor, limit)
						},
						all: func(ctx context.Context, c *apiclient.Client, fn func(apitypes.Device) error) error {
							return c.AllDevices(ctx, q, fn)
						},
					})
				}
			},
		},
		{
			name: "get", args: "ID", summary: "show a device with its certificate slots and timeline", minArgs: 1, maxArgs: 1,
			api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				return func(ctx context.Context, r *run) error {
					c, err := r.client()
					if err != nil {
						return err
					}
					d, err := c.GetDevice(ctx, r.args[0])
					if err != nil {
						return err
					}
					return r.show(d, func(w io.Writer) error { return deviceDetail(w, d) })
				}
			},
		},
		{
			name: "register", args: "ID", summary: "pre-register a device", minArgs: 1, maxArgs: 1, api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				dms := fs.String("dms", "", "DMS `id` the device enrolls through")
				labels := labelFlag{}
				fs.Var(labels, "label", "`key=value` label (repeatable)")
				return func(ctx context.Context, r *run) error {
					c, err := r.client()
					if err != nil {
						return err
					}
					req := apitypes.RegisterDeviceRequest{ID: r.args[0], DMSID: *dms}
					if len(labels) > 0 {
						req.Labels = labels
					}
					d, err := c.RegisterDevice(ctx, req)
					if err != nil {
						return err
					}
					return r.show(d, func(w io.Writer) error { return deviceDetail(w, d) })
				}
			},
		},
		{
			name: "decommission", args: "ID", summary: "decommission a device and revoke its certificates", minArgs: 1, maxArgs: 1,
			api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				return func(ctx context.Context, r *run) error {
					c, err := r.client()
					if err != nil {
						return err
					}
					resp, err := c.DecommissionDevice(ctx, r.args[0])
					if err != nil {
						return err
					}
					return r.show(resp, func(w io.Writer) error {
						fmt.Fprintf(w, "Decommissioned device %s; revoked %d certificate(s).\n", clean(r.args[0]), len(resp.RevokedSerials))
						for _, s := range resp.RevokedSerials {
							fmt.Fprintf(w, "  %s\n", clean(s))
						}
						return nil
					})
				}
			},
		},
	}
}

// labelFlag is a repeatable key=value flag.
type labelFlag map[string]string

func (l labelFlag) String() string { return fmtMap(map[string]string(l)) }

func (l labelFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	if _, dup := l[k]; dup {
		return fmt.Errorf("label %q given twice", k)
	}
	l[k] = val
	return nil
}
