package apiclient

import (
	"context"
	"net/http"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

// WhoAmI returns the principal the token belongs to.
func (c *Client) WhoAmI(ctx context.Context) (apitypes.WhoAmI, error) {
	var out apitypes.WhoAmI
	p, _ := endpoint("whoami")
	err := c.doJSON(ctx, request{method: http.MethodGet, path: p}, &out)
	return out, err
}

// CreateToken creates an API token (and its principal, if new). The
// response carries the token, which the server never shows again.
func (c *Client) CreateToken(ctx context.Context, req apitypes.CreateTokenRequest) (apitypes.CreateTokenResponse, error) {
	var out apitypes.CreateTokenResponse
	p, _ := endpoint("tokens")
	err := c.doJSON(ctx, request{method: http.MethodPost, path: p, body: req}, &out)
	return out, err
}

// RevokeToken revokes an API token by id.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	p, err := endpoint("tokens", id)
	if err != nil {
		return err
	}
	return c.doJSON(ctx, request{method: http.MethodDelete, path: p}, nil)
}
