package apiclient

import (
	"context"
	"net/http"
	"net/url"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

// DeviceQuery filters [Client.ListDevices]. Zero fields do not filter.
type DeviceQuery struct {
	Prefix string // device id prefix (?q=)
	Status string
	DMSID  string
}

func (q DeviceQuery) values() url.Values {
	v := url.Values{}
	if q.Prefix != "" {
		v.Set("q", q.Prefix)
	}
	if q.Status != "" {
		v.Set("status", q.Status)
	}
	if q.DMSID != "" {
		v.Set("dms_id", q.DMSID)
	}
	return v
}

// ListDevices returns one page of the devices matching q.
func (c *Client) ListDevices(ctx context.Context, q DeviceQuery, cursor string, limit int) (apitypes.Page[apitypes.Device], error) {
	var out apitypes.Page[apitypes.Device]
	p, _ := endpoint("devices")
	err := c.doJSON(ctx, request{method: http.MethodGet, path: p, query: pageQuery(q.values(), cursor, limit)}, &out)
	return out, err
}

// AllDevices calls fn for every device matching q, walking all pages.
func (c *Client) AllDevices(ctx context.Context, q DeviceQuery, fn func(apitypes.Device) error) error {
	return walk(ctx, func(cursor string) (apitypes.Page[apitypes.Device], error) {
		return c.ListDevices(ctx, q, cursor, c.pageSize)
	}, fn)
}

// GetDevice returns one device with its slots and timeline; an unknown id
// is a 404 *Error.
func (c *Client) GetDevice(ctx context.Context, id string) (apitypes.Device, error) {
	var out apitypes.Device
	p, err := endpoint("devices", id)
	if err != nil {
		return out, err
	}
	err = c.doJSON(ctx, request{method: http.MethodGet, path: p}, &out)
	return out, err
}

// RegisterDevice pre-registers a device.
func (c *Client) RegisterDevice(ctx context.Context, req apitypes.RegisterDeviceRequest) (apitypes.Device, error) {
	var out apitypes.Device
	p, _ := endpoint("devices")
	err := c.doJSON(ctx, request{method: http.MethodPost, path: p, body: req}, &out)
	return out, err
}

// DecommissionDevice decommissions a device and revokes its certificates.
func (c *Client) DecommissionDevice(ctx context.Context, id string) (apitypes.DecommissionResponse, error) {
	var out apitypes.DecommissionResponse
	p, err := endpoint("devices", id, "decommission")
	if err != nil {
		return out, err
	}
	err = c.doJSON(ctx, request{method: http.MethodPost, path: p}, &out)
	return out, err
}
