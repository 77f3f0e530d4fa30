package este2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/csrcheck"
	"github.com/outpost-pki/outpost/internal/est/estclient"
	"github.com/outpost-pki/outpost/internal/issuer"
)

// benchWorkers is how many devices enroll at once.
const benchWorkers = 16

// connModes are the two ways devices connect: keeping their TLS
// connection across enrollments, or a new connection (full handshake with
// client certificate) for each.
var connModes = []struct {
	name      string
	keepAlive bool
}{{"keep_alive", true}, {"new_connection", false}}

// BenchmarkESTLocalEnroll measures local-mode enrollments per second
// through the agent's EST server: 16 devices at once authenticate with
// bootstrap client certificates (mutual TLS) and enroll fresh P-256 keys;
// the agent signs with its edge CA (file key store) and commits each
// certificate with its sync record before answering. The uplink is cut
// (local mode's purpose), so the control plane does not share the CPU.
func BenchmarkESTLocalEnroll(b *testing.B) {
	bootKey, bootCert, bootPEM := benchCA(b)
	v := newEnv(b, apitypes.DMSPolicy{Mode: "local", DeviceAuth: "client_cert", Profile: "device", LocalQuota: 1 << 30, ReenrollWindowDays: 14, BootstrapCAPEMs: []string{string(bootPEM)}})
	v.cutUplink()
	devices := make([]tls.Certificate, benchWorkers)
	for i := range devices {
		devices[i] = benchDevice(b, bootKey, bootCert, fmt.Sprintf("bench-device-%02d", i))
	}
	for _, mode := range connModes {
		b.Run(mode.name, func(b *testing.B) {
			csrs := make([][]byte, b.N)
			for i := range csrs {
				_, csrs[i] = newCSR(b, fmt.Sprintf("bench-device-%02d", i%benchWorkers))
			}
			clients := make([]*estclient.Client, benchWorkers)
			for w := range clients {
				tc := &tls.Config{RootCAs: v.trust, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{devices[w]}}
				clients[w] = &estclient.Client{BaseURL: v.estURL, HTTPClient: &http.Client{Timeout: time.Minute,
					Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: !mode.keepAlive, MaxIdleConnsPerHost: 1}}}
			}
			var failed sync.Once
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for w := 0; w < benchWorkers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := w; i < b.N; i += benchWorkers {
						if _, err := clients[w].SimpleEnroll(context.Background(), csrs[i]); err != nil {
							failed.Do(func() { b.Errorf("enrollment %d: %v", i, err) })
							return
						}
					}
				}(w)
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "enrollments/s")
		})
	}
}

// BenchmarkESTRawIssue is the floor under an enrollment, in process on all
// cores: CSR parsing and validation (1 signature verification) plus
// certificate creation by an in-memory P-256 CA key (1 signature, and
// crypto/x509's check of it), with the profile the agent's edge CA uses.
// The same figure is reported under both connection modes to sit beside
// BenchmarkESTLocalEnroll's.
func BenchmarkESTRawIssue(b *testing.B) {
	caKey, caCert, _ := benchCA(b)
	prof := issuer.DefaultDeviceProfile()
	iss := &issuer.Issuer{Cert: caCert, Signer: caKey}
	for _, mode := range connModes {
		b.Run(mode.name, func(b *testing.B) {
			csrs := make([][]byte, 256)
			for i := range csrs {
				_, csrs[i] = newCSR(b, fmt.Sprintf("raw-%d", i))
			}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					csr, err := csrcheck.Parse(csrs[i%len(csrs)], csrcheck.DefaultPolicy())
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := iss.Issue(csr, prof, issuer.Request{DeviceID: csr.Subject.CommonName}); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issuances/s")
		})
	}
}

// benchCA makes a self-signed P-256 CA.
func benchCA(b testing.TB) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Bench Bootstrap CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		b.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// benchDevice makes a device certificate from the bootstrap CA.
func benchDevice(b testing.TB, caKey *ecdsa.PrivateKey, ca *x509.Certificate, cn string) tls.Certificate {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		b.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
