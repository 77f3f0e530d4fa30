package apiclient

import (
	"context"
	"net/http"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

// ListDMSs returns one page of DMSs.
func (c *Client) ListDMSs(ctx context.Context, cursor string, limit int) (apitypes.Page[apitypes.DMS], error) {
	var out apitypes.Page[apitypes.DMS]
	p, _ := endpoint("dmss")
	err := c.doJSON(ctx, request{method: http.MethodGet, path: p, query: pageQuery(nil, cursor, limit)}, &out)
	return out, err
}

// AllDMSs calls fn for every DMS, walking all pages.
func (c *Client) AllDMSs(ctx context.Context, fn func(apitypes.DMS) error) error {
	return walk(ctx, func(cursor string) (apitypes.Page[apitypes.DMS], error) {
		return c.ListDMSs(ctx, cursor, c.pageSize)
	}, fn)
}

// GetDMS returns one DMS; an unknown id is a 404 *Error.
func (c *Client) GetDMS(ctx context.Context, id string) (apitypes.DMS, error) {
	var out apitypes.DMS
	p, err := endpoint("dmss", id)
	if err != nil {
		return out, err
	}
	err = c.doJSON(ctx, request{method: http.MethodGet, path: p}, &out)
	return out, err
}

// CreateDMS creates a DMS. The response carries its one-time bootstrap
// token, which the server never shows again.
func (c *Client) CreateDMS(ctx context.Context, req apitypes.CreateDMSRequest) (apitypes.CreateDMSResponse, error) {
	var out apitypes.CreateDMSResponse
	p, _ := endpoint("dmss")
	err := c.doJSON(ctx, request{method: http.MethodPost, path: p, body: req}, &out)
	return out, err
}

// UpdateDMS replaces a DMS's policy and/or authorized CAs (nil fields are
// left unchanged).
func (c *Client) UpdateDMS(ctx context.Context, id string, req apitypes.UpdateDMSRequest) (apitypes.DMS, error) {
	var out apitypes.DMS
	p, err := endpoint("dmss", id)
	if err != nil {
		return out, err
	}
	err = c.doJSON(ctx, request{method: http.MethodPatch, path: p, body: req}, &out)
	return out, err
}

// DisableDMS disables a DMS.
func (c *Client) DisableDMS(ctx context.Context, id string) (apitypes.DMS, error) {
	var out apitypes.DMS
	p, err := endpoint("dmss", id, "disable")
	if err != nil {
		return out, err
	}
	err = c.doJSON(ctx, request{method: http.MethodPost, path: p}, &out)
	return out, err
}

// BootstrapDMS exchanges a one-time bootstrap token and a CSR for the DMS
// identity certificate. It never sends the Client's bearer token: the
// bootstrap token authenticates, so a Client made with an empty token
// will do.
func (c *Client) BootstrapDMS(ctx context.Context, req apitypes.DMSBootstrapRequest) (apitypes.DMSBootstrapResponse, error) {
	var out apitypes.DMSBootstrapResponse
	p, _ := endpoint("dms", "bootstrap")
	err := c.doJSON(ctx, request{method: http.MethodPost, path: p, body: req, noAuth: true}, &out)
	return out, err
}
