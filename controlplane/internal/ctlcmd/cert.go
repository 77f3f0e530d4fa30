package ctlcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/outpost-pki/outpost/controlplane/internal/apiclient"
	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/csrcheck"
)

var certStatuses = []string{"active", "about_to_expire", "expired", "revoked"}

var certHeader = []string{"serial", "common name", "status", "not after", "issuer", "device", "dms"}

func certRow(c apitypes.Certificate) []string {
	return []string{c.Serial, c.CommonName, c.Status, fmtTime(c.NotAfter), c.IssuerID, c.DeviceID, c.DMSID}
}

func certFields(w io.Writer, c apitypes.Certificate) error {
	return fields(w,
		"serial", c.Serial,
		"subject", c.Subject,
		"common name", c.CommonName,
		"sans", strings.Join(c.SANs, ", "),
		"issuer", c.IssuerID,
		"status", c.Status,
		"not before", fmtTime(c.NotBefore),
		"not after", fmtTime(c.NotAfter),
		"revoked at", fmtTimePtr(c.RevokedAt),
		"revocation reason", c.RevocationReason,
		"profile", c.Profile,
		"device", c.DeviceID,
		"dms", c.DMSID)
}

// normalizeSerial accepts a serial as openssl prints it ("0A:1B:...") or
// with a 0x prefix and returns the API's form: lowercase hex, no
// separators.
func normalizeSerial(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "0x")
	return strings.NewReplacer(":", "", " ", "", "-", "").Replace(s)
}

func certCmds() []*subcommand {
	return []*subcommand{
		{
			name: "list", summary: "search certificates", api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				var q apiclient.CertificateQuery
				fs.StringVar(&q.Serial, "serial", "", "exact `serial` (hex)")
				fs.StringVar(&q.CommonName, "cn", "", "common name `prefix`")
				fs.StringVar(&q.SAN, "san", "", "subject alternative `name`")
				fs.StringVar(&q.Status, "status", "", "`status`: "+strings.Join(certStatuses, ", "))
				within := fs.Duration("expires-within", 0, "only certificates not yet expired that expire within `duration`, e.g. 720h")
				fs.StringVar(&q.DMSID, "dms", "", "DMS `id`")
				fs.StringVar(&q.DeviceID, "device", "", "device `id`")
				fs.StringVar(&q.IssuerID, "ca", "", "issuing CA `id`")
				l := addListFlags(fs)
				return func(ctx context.Context, r *run) error {
					if err := optOneOf("--status", q.Status, certStatuses...); err != nil {
						return err
					}
					if *within < 0 {
						return usageErrorf("--expires-within must not be negative")
					}
					if *within > 0 {
						now := r.env.now()
						q.ExpiresAfter, q.ExpiresBefore = now, now.Add(*within)
					}
					if q.Serial != "" {
						q.Serial = normalizeSerial(q.Serial)
					}
					return runList(ctx, r, l, listSpec[apitypes.Certificate]{
						header: certHeader,
						row:    certRow,
						page: func(ctx context.Context, c *apiclient.Client, cursor string, limit int) (apitypes.Page[apitypes.Certificate], error) {
							return c.SearchCertificates(ctx, q, cursor, limit)
						},
						all: func(ctx context.Context, c *apiclient.Client, fn func(apitypes.Certificate) error) error {
							return c.AllCertificates(ctx, q, fn)
						},
					})
				}
			},
		},
		{
			name: "get", args: "SERIAL", summary: "show a certificate (the PEM with 'cert export' or -o json)", minArgs: 1, maxArgs: 1,
			api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				return func(ctx context.Context, r *run) error {
					c, err := r.client()
					if err != nil {
						return err
					}
					cert, err := c.GetCertificate(ctx, normalizeSerial(r.args[0]))
					if err != nil {
						return err
					}
					return r.show(cert, func(w io.Writer) error { return certFields(w, cert) })
				}
			},
		},
		{
			name: "issue", summary: "issue a certificate from a CSR; prints the PEM unless --out", api: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				var req apitypes.IssueRequest
				fs.StringVar(&req.CAID, "ca", "", "issuing CA `id` (required)")
				csrFile := fs.String("csr", "", "PEM CSR `file` (required)")
				fs.StringVar(&req.Profile, "profile", "", "certificate `profile` (server default device)")
				fs.StringVar(&req.DeviceID, "device", "", "device `id` to record the certificate under")
				fs.StringVar(&req.DMSID, "dms", "", "DMS `id` to record the certificate under")
				out := fs.String("out", "", "write the certificate PEM to `file`")
				return func(ctx context.Context, r *run) error {
					if req.CAID == "" || *csrFile == "" {
						return usageErrorf("--ca and --csr are required")
					}
					csr, err := readFileCapped(*csrFile, csrcheck.MaxPEMSize)
					if err != nil {
						return err
					}
					req.CSRPEM = string(csr)
					c, err := r.client()
					if err != nil {
						return err
					}
					cert, err := c.IssueCertificate(ctx, req)
					if err != nil {
						return err
					}
					if err := r.writeOut(*out, []byte(cert.CertPEM)); err != nil {
						return err
					}
					fmt.Fprintf(r.stderr, "issued certificate %s (%s), valid until %s\n", clean(cert.Serial), clean(cert.CommonName), fmtTime(cert.NotAfter))
					return nil
				}
			},
		},
		{
			name: "revoke", args: "SERIAL", summary: "revoke a certificate", minArgs: 1, maxArgs: 1, api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				reason := addReasonFlag(fs)
				return func(ctx context.Context, r *run) error {
					if err := oneOf("--reason", *reason, revocationReasons...); err != nil {
						return err
					}
					c, err := r.client()
					if err != nil {
						return err
					}
					cert, err := c.RevokeCertificate(ctx, normalizeSerial(r.args[0]), apitypes.RevokeRequest{Reason: *reason})
					if err != nil {
						return err
					}
					return r.show(cert, func(w io.Writer) error { return certFields(w, cert) })
				}
			},
		},
		{
			name: "export", args: "SERIAL", summary: "write a certificate as PEM or DER", minArgs: 1, maxArgs: 1, api: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				format := fs.String("format", "pem", "`format`: pem or der")
				out := fs.String("out", "", "write to `file` instead of standard output")
				return func(ctx context.Context, r *run) error {
					if err := oneOf("--format", *format, "pem", "der"); err != nil {
						return err
					}
					if *format == "der" && *out == "" && r.env.isTerminal(r.stdout) {
						return usageErrorf("refusing to write DER to a terminal; use --out FILE or redirect")
					}
					c, err := r.client()
					if err != nil {
						return err
					}
					serial := normalizeSerial(r.args[0])
					var data []byte
					if *format == "der" {
						data, err = c.CertificateDER(ctx, serial)
					} else {
						data, err = c.CertificatePEM(ctx, serial)
					}
					if err != nil {
						return err
					}
					return r.writeOut(*out, data)
				}
			},
		},
		{
			name: "import", args: "FILE_OR_DIR...", summary: "record existing certificates from PEM files and directories (*.pem, *.crt, *.cer)",
			minArgs: 1, maxArgs: -1, api: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				var opts importOptions
				fs.StringVar(&opts.deviceID, "device", "", "device `id` to record every certificate under")
				fs.StringVar(&opts.dmsID, "dms", "", "DMS `id` to record every certificate under")
				fs.IntVar(&opts.parallel, "parallel", 4, "`number` of files imported at once (1-32)")
				return func(ctx context.Context, r *run) error {
					if opts.parallel < 1 || opts.parallel > 32 {
						return usageErrorf("--parallel must be between 1 and 32")
					}
					return importCertificates(ctx, r, r.args, opts)
				}
			},
		},
	}
}
