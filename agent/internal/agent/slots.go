package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"

	"github.com/outpost-pki/outpost/proto/syncpb"
)

var randReader = rand.Reader

// Files and store keys of the agent's control-plane-issued certificates.
const (
	edgeCAFile     = "edge-ca.pem"
	serverCertFile = "est-server.pem"
	kvEdgeCA       = "edge_ca_request"
	kvServerCert   = "server_cert_request"
	// caIDHeader carries the edge CA's id in the control plane.
	caIDHeader = "Outpost-CA-Id"
)

// serverCSR is the EST server certificate request: the DMS id as common
// name, the hostnames as DNS and IP subjectAltNames.
func serverCSR(key crypto.Signer, dmsID string, hostnames []string) ([]byte, error) {
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: dmsID}}
	for _, h := range hostnames {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return x509.CreateCertificateRequest(randReader, tmpl, key)
}

// certCovers reports whether cert is valid for every name.
func certCovers(cert *x509.Certificate, names []string) bool {
	for _, n := range names {
		if cert.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

// installServerCert installs the EST server certificate: it must be for
// serverAuth and chain to the anchors the agent got at bootstrap.
func (a *Agent) installServerCert(ctx context.Context, u *syncpb.ServerCertificate) error {
	_, err := a.server.install(ctx, u.GetCertificateDer(), u.GetChainDers(), nil, func(cert *x509.Certificate, chain []*x509.Certificate) error {
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, c := range a.identity().Chain {
			roots.AddCert(c)
		}
		for _, c := range chain {
			inter.AddCert(c)
		}
		_, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err
	})
	return err
}

// installEdgeCA installs the delegated edge CA: a CA certificate with path
// length 0 whose issuer is one of the DMS's authorized CAs.
func (a *Agent) installEdgeCA(ctx context.Context, u *syncpb.EdgeCACertificate) error {
	_, err := a.edge.install(ctx, u.GetCertificateDer(), u.GetChainDers(), map[string]string{caIDHeader: u.GetCaId()}, func(cert *x509.Certificate, chain []*x509.Certificate) error {
		if !cert.IsCA || !(cert.MaxPathLen == 0 && cert.MaxPathLenZero) || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
			return errors.New("not a CA certificate with path length 0")
		}
		if len(chain) == 0 {
			return errors.New("no chain")
		}
		if err := cert.CheckSignatureFrom(chain[0]); err != nil {
			return fmt.Errorf("not signed by its chain: %w", err)
		}
		ps := a.state.policy.Load()
		if ps == nil {
			return errors.New("no policy yet")
		}
		for _, b := range ps.Bundles {
			if len(b) > 0 && bytes.Equal(b[0].Raw, chain[0].Raw) {
				return nil
			}
		}
		return errors.New("its issuer is not an authorized CA of this DMS")
	})
	return err
}

// edgeCAID is the control plane id of the installed edge CA.
func (c *slotCert) edgeCAID() string { return c.Headers[caIDHeader] }
