package ctlcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/outpost-pki/outpost/controlplane/internal/apiclient"
	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/secret"
)

// Size caps for files read from the command line, so a wrong path (a
// device, a log, a disk image) is refused instead of read whole.
const (
	maxCertFileSize = 4 << 20  // a PEM bundle of a few thousand certificates
	maxKeyFileSize  = 64 << 10 // an RSA-8192 key in encrypted PKCS#8 PEM is under 8 KiB
)

// revocationReasons are the RFC 5280 reason names the API accepts.
var revocationReasons = []string{
	"unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
	"cessationOfOperation", "certificateHold", "privilegeWithdrawn", "aACompromise",
}

var keyAlgorithms = []string{"ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072"}

var caList = listSpec[apitypes.CA]{
	header: []string{"id", "name", "kind", "role", "status", "key", "subject", "not after"},
	row: func(ca apitypes.CA) []string {
		return []string{ca.ID, ca.Name, ca.Kind, ca.Role, ca.Status, yesNo(ca.HasKey), ca.Subject, fmtTime(ca.NotAfter)}
	},
	page: func(ctx context.Context, c *apiclient.Client, cursor string, limit int) (apitypes.Page[apitypes.CA], error) {
		return c.ListCAs(ctx, cursor, limit)
	},
	all: func(ctx context.Context, c *apiclient.Client, fn func(apitypes.CA) error) error {
		return c.AllCAs(ctx, fn)
	},
}

func caFields(w io.Writer, ca apitypes.CA) error {
	return fields(w,
		"id", ca.ID,
		"name", ca.Name,
		"kind", ca.Kind,
		"role", ca.Role,
		"parent", ca.ParentID,
		"status", ca.Status,
		"has key", yesNo(ca.HasKey),
		"subject", ca.Subject,
		"serial", ca.Serial,
		"not before", fmtTime(ca.NotBefore),
		"not after", fmtTime(ca.NotAfter),
		"revoked at", fmtTimePtr(ca.RevokedAt))
}

func caCmds() []*subcommand {
	return []*subcommand{
		{
			name: "list", summary: "list certificate authorities", api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				l := addListFlags(fs)
				return func(ctx context.Context, r *run) error { return runList(ctx, r, l, caList) }
			},
		},
		{
			name: "get", args: "ID", summary: "show a certificate authority", minArgs: 1, maxArgs: 1, api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				return func(ctx context.Context, r *run) error {
					c, err := r.client()
					if err != nil {
						return err
					}
					ca, err := c.GetCA(ctx, r.args[0])
					if err != nil {
						return err
					}
					return r.show(ca, func(w io.Writer) error { return caFields(w, ca) })
				}
			},
		},
		{
			name: "create", summary: "create a root CA, or an intermediate with --parent", api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				name := fs.String("name", "", "CA `name` (required)")
				cn := fs.String("cn", "", "subject common `name` (required)")
				parent := fs.String("parent", "", "parent CA `id`; without it, a root")
				alg := fs.String("key-algorithm", "", "key `algorithm`: "+strings.Join(keyAlgorithms, ", ")+" (server default ecdsa-p256)")
				days := fs.Int("validity-days", 0, "validity in `days` (server default 3650 for roots, 1825 for intermediates)")
				pathLen := fs.Int("max-path-len", -1, "maximum path length: -1 unconstrained, 0 for an issuing CA (server default -1 for roots)")
				return func(ctx context.Context, r *run) error {
					if *name == "" || *cn == "" {
						return usageErrorf("--name and --cn are required")
					}
					if err := optOneOf("--key-algorithm", *alg, keyAlgorithms...); err != nil {
						return err
					}
					if *days < 0 {
						return usageErrorf("--validity-days must not be negative")
					}
					req := apitypes.CreateCARequest{Name: *name, ParentID: *parent, CommonName: *cn, KeyAlgorithm: *alg, ValidityDays: *days}
					if flagSet(fs, "max-path-len") {
						if *pathLen < -1 {
							return usageErrorf("--max-path-len must be -1 or more")
						}
						req.MaxPathLen = pathLen
					}
					c, err := r.client()
					if err != nil {
						return err
					}
					ca, err := c.CreateCA(ctx, req)
					if err != nil {
						return err
					}
					return r.show(ca, func(w io.Writer) error { return caFields(w, ca) })
				}
			},
		},
		{
			name: "import", summary: "import an existing CA certificate, optionally with its private key", api: true, output: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				name := fs.String("name", "", "CA `name` (required)")
				certFile := fs.String("cert", "", "PEM certificate `file` (required)")
				keyFile := fs.String("key", "", "PKCS#8 PEM private key `file`, encrypted or not")
				passFile := fs.String("key-passphrase-file", "", "`file` holding the key's passphrase")
				return func(ctx context.Context, r *run) error {
					if *name == "" || *certFile == "" {
						return usageErrorf("--name and --cert are required")
					}
					if *passFile != "" && *keyFile == "" {
						return usageErrorf("--key-passphrase-file needs --key")
					}
					req := apitypes.ImportCARequest{Name: *name}
					cert, err := readFileCapped(*certFile, maxCertFileSize)
					if err != nil {
						return err
					}
					req.CertificatePEM = string(cert)
					if *keyFile != "" {
						key, err := readFileCapped(*keyFile, maxKeyFileSize)
						if err != nil {
							return err
						}
						req.KeyPEM = string(key)
					}
					if *passFile != "" {
						pass, err := secret.Source{File: *passFile}.Resolve("key passphrase")
						if err != nil {
							return err
						}
						req.KeyPassphrase = pass.Reveal()
					}
					c, err := r.client()
					if err != nil {
						return err
					}
					ca, err := c.ImportCA(ctx, req)
					if err != nil {
						return err
					}
					return r.show(ca, func(w io.Writer) error { return caFields(w, ca) })
				}
			},
		},
		{
			name: "revoke", args: "ID", summary: "revoke a CA and everything it issued, CAs and certificates", minArgs: 1, maxArgs: 1,
			api: true, output: true,
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
					resp, err := c.RevokeCA(ctx, r.args[0], apitypes.RevokeRequest{Reason: *reason})
					if err != nil {
						return err
					}
					return r.show(resp, func(w io.Writer) error {
						return fields(w,
							"revoked cas", strings.Join(resp.RevokedCAs, ", "),
							"revoked certificates", fmt.Sprint(resp.RevokedCertificates))
					})
				}
			},
		},
		{
			name: "chain", args: "ID", summary: "print a CA's certificate chain as PEM, the CA first", minArgs: 1, maxArgs: 1, api: true,
			setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
				out := fs.String("out", "", "write to `file` instead of standard output")
				return func(ctx context.Context, r *run) error {
					c, err := r.client()
					if err != nil {
						return err
					}
					pemBytes, err := c.CAChainPEM(ctx, r.args[0])
					if err != nil {
						return err
					}
					return r.writeOut(*out, pemBytes)
				}
			},
		},
	}
}

func addReasonFlag(fs *flag.FlagSet) *string {
	return fs.String("reason", "", "RFC 5280 `reason` (required): "+strings.Join(revocationReasons, ", "))
}

// optOneOf is oneOf for an optional flag: empty is fine.
func optOneOf(flagName, v string, allowed ...string) error {
	if v == "" {
		return nil
	}
	return oneOf(flagName, v, allowed...)
}

// flagSet reports whether the named flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
