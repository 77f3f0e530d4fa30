package ctlcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/outpost-pki/outpost/controlplane/internal/apiclient"
	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

var auditList = listSpec[apitypes.AuditEntry]{
	header: []string{"seq", "at", "actor", "action", "target", "hash"},
	row: func(e apitypes.AuditEntry) []string {
		return []string{fmt.Sprint(e.Seq), fmtTime(e.At), e.Actor, e.Action, e.Target, shortHash(e.Hash)}
	},
	page: func(ctx context.Context, c *apiclient.Client, cursor string, limit int) (apitypes.Page[apitypes.AuditEntry], error) {
		return c.ListAudit(ctx, cursor, limit)
	},
	all: func(ctx context.Context, c *apiclient.Client, fn func(apitypes.AuditEntry) error) error {
		return c.AllAudit(ctx, fn)
	},
}

// errAuditBroken is returned by 'audit verify' when the chain does not
// verify; the exit code is then 1.
var errAuditBroken = errors.New("audit chain broken")

func auditCmds() []*subcommand {
	return []*subcommand{
		{
			name: "list", summary: "list audit log entries", api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				l := addListFlags(fs)
				return func(ctx context.Context, r *run) error { return runList(ctx, r, l, auditList) }
			},
		},
		{
			name: "verify", summary: "verify the audit log's hash chain; exits 1 if it is broken", api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				return func(ctx context.Context, r *run) error {
					c, err := r.client()
					if err != nil {
						return err
					}
					v, err := c.VerifyAudit(ctx)
					if err != nil {
						return err
					}
					if err := r.show(v, func(w io.Writer) error {
						if v.OK {
							_, err := fmt.Fprintf(w, "Audit chain OK: %d entries checked.\n", v.Checked)
							return err
						}
						_, err := fmt.Fprintf(w, "Audit chain BROKEN at entry %d (%d entries checked).\n", v.FirstBadSeq, v.Checked)
						return err
					}); err != nil {
						return err
					}
					if v.OK {
						return nil
					}
					if v.Problem != "" {
						return fmt.Errorf("%w: first bad entry is seq %d: %s", errAuditBroken, v.FirstBadSeq, clean(v.Problem))
					}
					return fmt.Errorf("%w: first bad entry is seq %d", errAuditBroken, v.FirstBadSeq)
				}
			},
		},
	}
}
