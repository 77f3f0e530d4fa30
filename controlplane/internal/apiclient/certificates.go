package apiclient

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

// CertificateQuery filters [Client.SearchCertificates]. Zero fields do
// not filter.
type CertificateQuery struct {
	Serial     string // exact, lowercase hex
	CommonName string // prefix of the subject common name
	SAN        string // a subject alternative name
	Status     string // active | about_to_expire | expired | revoked
	// ExpiresAfter and ExpiresBefore bound NotAfter.
	ExpiresAfter  time.Time
	ExpiresBefore time.Time
	DMSID         string
	DeviceID      string
	IssuerID      string // the issuing CA's id
}

// values returns the query as URL parameters, times in RFC 3339 UTC.
func (q CertificateQuery) values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("serial", q.Serial)
	set("cn", q.CommonName)
	set("san", q.SAN)
	set("status", q.Status)
	if !q.ExpiresAfter.IsZero() {
		v.Set("expires_after", q.ExpiresAfter.UTC().Format(time.RFC3339))
	}
	if !q.ExpiresBefore.IsZero() {
		v.Set("expires_before", q.ExpiresBefore.UTC().Format(time.RFC3339))
	}
	set("dms_id", q.DMSID)
	set("device_id", q.DeviceID)
	set("issuer_id", q.IssuerID)
	return v
}

// SearchCertificates returns one page of the certificates matching q.
func (c *Client) SearchCertificates(ctx context.Context, q CertificateQuery, cursor string, limit int) (apitypes.Page[apitypes.Certificate], error) {
	var out apitypes.Page[apitypes.Certificate]
	p, _ := endpoint("certificates")
	err := c.doJSON(ctx, request{method: http.MethodGet, path: p, query: pageQuery(q.values(), cursor, limit)}, &out)
	return out, err
}

// AllCertificates calls fn for every certificate matching q, walking all
// pages. It stops at the first error, from the API or from fn.
func (c *Client) AllCertificates(ctx context.Context, q CertificateQuery, fn func(apitypes.Certificate) error) error {
	return walk(ctx, func(cursor string) (apitypes.Page[apitypes.Certificate], error) {
		return c.SearchCertificates(ctx, q, cursor, c.pageSize)
	}, fn)
}

// GetCertificate returns one certificate by serial (lowercase hex); an
// unknown serial is a 404 *Error.
func (c *Client) GetCertificate(ctx context.Context, serial string) (apitypes.Certificate, error) {
	var out apitypes.Certificate
	p, err := endpoint("certificates", serial)
	if err != nil {
		return out, err
	}
	err = c.doJSON(ctx, request{method: http.MethodGet, path: p}, &out)
	return out, err
}

// CertificatePEM returns the certificate as PEM.
func (c *Client) CertificatePEM(ctx context.Context, serial string) ([]byte, error) {
	p, err := endpoint("certificates", serial, "pem")
	if err != nil {
		return nil, err
	}
	return c.do(ctx, request{method: http.MethodGet, path: p, accept: "application/x-pem-file"})
}

// CertificateDER returns the certificate as DER.
func (c *Client) CertificateDER(ctx context.Context, serial string) ([]byte, error) {
	p, err := endpoint("certificates", serial, "der")
	if err != nil {
		return nil, err
	}
	return c.do(ctx, request{method: http.MethodGet, path: p, accept: "application/pkix-cert"})
}

// IssueCertificate issues a certificate from a CSR.
func (c *Client) IssueCertificate(ctx context.Context, req apitypes.IssueRequest) (apitypes.Certificate, error) {
	var out apitypes.Certificate
	p, _ := endpoint("certificates")
	err := c.doJSON(ctx, request{method: http.MethodPost, path: p, body: req}, &out)
	return out, err
}

// ImportCertificate records an existing certificate. One already recorded
// is a 409 *Error (see [IsConflict]).
func (c *Client) ImportCertificate(ctx context.Context, req apitypes.ImportCertificateRequest) (apitypes.Certificate, error) {
	var out apitypes.Certificate
	p, _ := endpoint("certificates", "import")
	err := c.doJSON(ctx, request{method: http.MethodPost, path: p, body: req}, &out)
	return out, err
}

// RevokeCertificate revokes a certificate and returns it as revoked.
func (c *Client) RevokeCertificate(ctx context.Context, serial string, req apitypes.RevokeRequest) (apitypes.Certificate, error) {
	var out apitypes.Certificate
	p, err := endpoint("certificates", serial, "revoke")
	if err != nil {
		return out, err
	}
	err = c.doJSON(ctx, request{method: http.MethodPost, path: p, body: req}, &out)
	return out, err
}
