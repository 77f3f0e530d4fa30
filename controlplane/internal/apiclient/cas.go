package apiclient

import (
	"context"
	"net/http"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

// ListCAs returns one page of CAs. An empty cursor starts at the first
// page; limit 0 leaves the server's default page size.
func (c *Client) ListCAs(ctx context.Context, cursor string, limit int) (apitypes.Page[apitypes.CA], error) {
	var out apitypes.Page[apitypes.CA]
	p, _ := endpoint("cas")
	err := c.doJSON(ctx, request{method: http.MethodGet, path: p, query: pageQuery(nil, cursor, limit)}, &out)
	return out, err
}

// AllCAs calls fn for every CA, walking all pages. It stops at the first
// error, from the API or from fn, and returns it.
func (c *Client) AllCAs(ctx context.Context, fn func(apitypes.CA) error) error {
	return walk(ctx, func(cursor string) (apitypes.Page[apitypes.CA], error) {
		return c.ListCAs(ctx, cursor, c.pageSize)
	}, fn)
}

// GetCA returns one CA; an unknown id is a 404 *Error.
func (c *Client) GetCA(ctx context.Context, id string) (apitypes.CA, error) {
	var out apitypes.CA
	p, err := endpoint("cas", id)
	if err != nil {
		return out, err
	}
	err = c.doJSON(ctx, request{method: http.MethodGet, path: p}, &out)
	return out, err
}

// CAChainPEM returns the CA's certificate chain as PEM, the CA first.
func (c *Client) CAChainPEM(ctx context.Context, id string) ([]byte, error) {
	p, err := endpoint("cas", id, "chain")
	if err != nil {
		return nil, err
	}
	return c.do(ctx, request{method: http.MethodGet, path: p, accept: "application/x-pem-file"})
}

// CreateCA creates a root CA (no ParentID) or an intermediate.
func (c *Client) CreateCA(ctx context.Context, req apitypes.CreateCARequest) (apitypes.CA, error) {
	var out apitypes.CA
	p, _ := endpoint("cas")
	err := c.doJSON(ctx, request{method: http.MethodPost, path: p, body: req}, &out)
	return out, err
}

// ImportCA records an existing CA certificate, with its private key or
// without.
func (c *Client) ImportCA(ctx context.Context, req apitypes.ImportCARequest) (apitypes.CA, error) {
	var out apitypes.CA
	p, _ := endpoint("cas", "import")
	err := c.doJSON(ctx, request{method: http.MethodPost, path: p, body: req}, &out)
	return out, err
}

// RevokeCA revokes a CA and everything under it.
func (c *Client) RevokeCA(ctx context.Context, id string, req apitypes.RevokeRequest) (apitypes.RevokeCAResponse, error) {
	var out apitypes.RevokeCAResponse
	p, err := endpoint("cas", id, "revoke")
	if err != nil {
		return out, err
	}
	err = c.doJSON(ctx, request{method: http.MethodPost, path: p, body: req}, &out)
	return out, err
}
