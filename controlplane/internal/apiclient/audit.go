package apiclient

import (
	"context"
	"net/http"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

// ListAudit returns one page of the audit log.
func (c *Client) ListAudit(ctx context.Context, cursor string, limit int) (apitypes.Page[apitypes.AuditEntry], error) {
	var out apitypes.Page[apitypes.AuditEntry]
	p, _ := endpoint("audit")
	err := c.doJSON(ctx, request{method: http.MethodGet, path: p, query: pageQuery(nil, cursor, limit)}, &out)
	return out, err
}

// AllAudit calls fn for every audit entry, walking all pages.
func (c *Client) AllAudit(ctx context.Context, fn func(apitypes.AuditEntry) error) error {
	return walk(ctx, func(cursor string) (apitypes.Page[apitypes.AuditEntry], error) {
		return c.ListAudit(ctx, cursor, c.pageSize)
	}, fn)
}

// VerifyAudit has the server verify the whole hash chain. A broken chain
// is a successful call whose response has OK false; the error is only for
// failing to ask.
func (c *Client) VerifyAudit(ctx context.Context) (apitypes.AuditVerifyResponse, error) {
	var out apitypes.AuditVerifyResponse
	p, _ := endpoint("audit", "verify")
	err := c.doJSON(ctx, request{method: http.MethodGet, path: p}, &out)
	return out, err
}
