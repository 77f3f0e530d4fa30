// Package agent is outpost-agent: DMS identity, the durable store, the
// sync link to the control plane, and the local admin endpoints.
package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpost-pki/outpost/agent/internal/agentconfig"
	"github.com/outpost-pki/outpost/internal/fsutil"
	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/keystore/filekeys"
	"github.com/outpost-pki/outpost/internal/keystore/pkcs11keys"
	"github.com/outpost-pki/outpost/internal/keystore/tpmkeys"
)

// IdentityKeyName is the name of the identity key made at bootstrap in
// the key store. Renewals make new keys (IdentityKeyName-<suffix>); the
// name of the key in use is kept in identity.pem (keyNameHeader).
const IdentityKeyName = "dms-identity"

// keyNameHeader is the PEM header of identity.pem naming the key of the
// certificate, so certificate and key name change in one atomic write.
const keyNameHeader = "Outpost-Key"

// Files in the data directory.
const (
	identityFile = "identity.pem" // the DMS certificate
	chainFile    = "chain.pem"    // its CA chain (issuing CA first)
	dmsIDFile    = "dms_id"
	storeFile    = "agent.db"
)

// OpenKeystore opens the configured key store.
func OpenKeystore(cfg *agentconfig.Config) (keystore.Store, error) {
	switch cfg.Keystore.Backend {
	case "tpm":
		open := tpmkeys.OpenDevice(cfg.Keystore.TPM.Device)
		if cfg.Keystore.TPM.SwtpmAddr != "" {
			open = tpmkeys.DialSwtpm(cfg.Keystore.TPM.SwtpmAddr)
		}
		return tpmkeys.Open(tpmkeys.Config{Open: open, Dir: filepath.Join(cfg.DataDir, "tpm")})
	case "pkcs11":
		pin, err := cfg.Keystore.PKCS11.PIN.Resolve("keystore.pkcs11.pin")
		if err != nil {
			return nil, err
		}
		return pkcs11keys.Open(pkcs11keys.Config{Module: cfg.Keystore.PKCS11.Module, TokenLabel: cfg.Keystore.PKCS11.TokenLabel, PIN: pin})
	default:
		pass, err := cfg.Keystore.File.Passphrase.Resolve("keystore.file.passphrase")
		if err != nil {
			return nil, err
		}
		return filekeys.Open(filekeys.Config{Dir: filepath.Join(cfg.DataDir, "keys"), Passphrase: pass})
	}
}

// Identity is the DMS identity: certificate, chain, key.
type Identity struct {
	DMSID string
	Cert  *x509.Certificate
	Chain []*x509.Certificate
	Key   crypto.Signer
	// KeyName is the key's name in the key store.
	KeyName string
}

// Serial is the certificate's serial number in lower-case hex.
func (id *Identity) Serial() string { return strings.ToLower(id.Cert.SerialNumber.Text(16)) }

// TLSCertificate is the identity as a TLS client certificate.
func (id *Identity) TLSCertificate() tls.Certificate {
	c := tls.Certificate{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key, Leaf: id.Cert}
	for _, ca := range id.Chain {
		c.Certificate = append(c.Certificate, ca.Raw)
	}
	return c
}

// Roots returns the root of the identity chain (verifies the broker when
// no broker CA file is configured).
func (id *Identity) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range id.Chain {
		p.AddCert(c)
	}
	return p
}

// ErrNotBootstrapped: run `outpost-agent bootstrap` first.
var ErrNotBootstrapped = errors.New("this agent has no DMS identity yet: run `outpost-agent bootstrap --token <one-time token>`")

// LoadIdentity reads the identity from the data directory and the key
// store.
func LoadIdentity(ctx context.Context, cfg *agentconfig.Config, ks keystore.Store) (*Identity, error) {
	idb, err := os.ReadFile(filepath.Join(cfg.DataDir, dmsIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotBootstrapped
	} else if err != nil {
		return nil, err
	}
	cert, keyName, err := readIdentityCert(filepath.Join(cfg.DataDir, identityFile))
	if err != nil {
		return nil, fmt.Errorf("reading the identity certificate: %w", err)
	}
	chain, err := readCerts(filepath.Join(cfg.DataDir, chainFile))
	if err != nil {
		return nil, fmt.Errorf("reading the identity chain: %w", err)
	}
	key, err := ks.Load(ctx, keyName)
	if err != nil {
		return nil, fmt.Errorf("loading the identity key %q: %w", keyName, err)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("the identity key %q does not match the identity certificate", keyName)
	}
	return &Identity{DMSID: strings.TrimSpace(string(idb)), Cert: cert, Chain: chain, Key: key, KeyName: keyName}, nil
}

// readIdentityCert reads identity.pem: the certificate and the name of
// its key (IdentityKeyName when the file has no header, as written by
// older agents).
func readIdentityCert(path string) (*x509.Certificate, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, "", errors.New("no PEM certificate in it")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, "", err
	}
	name := blk.Headers[keyNameHeader]
	if name == "" {
		name = IdentityKeyName
	}
	return c, name, nil
}

// identityPEM encodes the certificate with the name of its key.
func identityPEM(der []byte, keyName string) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{keyNameHeader: keyName}, Bytes: der})
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// maxBootstrapResponse caps the control plane's answer (a certificate
// and a short chain).
const maxBootstrapResponse = 256 << 10

// Bootstrap exchanges a one-time token for the DMS identity: the key is
// generated in the key store (never leaves a TPM or HSM), the CSR and
// token go to the control plane, the certificate comes back.
func Bootstrap(ctx context.Context, cfg *agentconfig.Config, ks keystore.Store, token string, client *http.Client) (*Identity, error) {
	if cfg.ControlPlaneURL == "" {
		return nil, errors.New("control_plane_url is not configured")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, dmsIDFile)); err == nil {
		return nil, errors.New("this agent is already bootstrapped (its DMS id is in the data directory)")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	key, err := ks.Load(ctx, IdentityKeyName)
	if errors.Is(err, keystore.ErrNotFound) {
		key, err = ks.Generate(ctx, IdentityKeyName, keystore.ECDSAP256)
	}
	if err != nil {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "outpost-agent"}}, key)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]string{"token": token, "csr_pem": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(cfg.ControlPlaneURL, "/")+"/api/v1/dms/bootstrap", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reaching the control plane: %w", err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxBootstrapResponse))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var p struct{ Detail string }
		_ = json.Unmarshal(rb, &p)
		return nil, fmt.Errorf("the control plane refused the bootstrap (%d): %s", resp.StatusCode, p.Detail)
	}
	var out struct {
		DMSID          string `json:"dms_id"`
		CertificatePEM string `json:"certificate_pem"`
		ChainPEM       string `json:"chain_pem"`
	}
	if err := json.Unmarshal(rb, &out); err != nil {
		return nil, fmt.Errorf("reading the control plane's answer: %w", err)
	}
	blk, _ := pem.Decode([]byte(out.CertificatePEM))
	if blk == nil {
		return nil, errors.New("the control plane's answer holds no certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, err
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, errors.New("the certificate the control plane returned is not for this agent's key")
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{identityFile, identityPEM(cert.Raw, IdentityKeyName)}, {chainFile, []byte(out.ChainPEM)}, {dmsIDFile, []byte(out.DMSID + "\n")}} {
		if err := fsutil.WriteFile(filepath.Join(cfg.DataDir, f.name), f.data, 0o600, true); err != nil {
			return nil, err
		}
	}
	return LoadIdentity(ctx, cfg, ks)
}
