package testpki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// certsPEM encodes certs as concatenated CERTIFICATE blocks.
func certsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// keyPEM encodes key as an unencrypted PKCS#8 PRIVATE KEY block.
func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshaling private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writeFiles writes certPEM to <stem>.crt and key to <stem>.key in dir,
// where stem is built from cert's common name and serial number so that
// certificates of one PKI never overwrite each other.
func writeFiles(dir string, cert *x509.Certificate, certPEM []byte, key crypto.Signer) (certFile, keyFile string, err error) {
	kp, err := keyPEM(key)
	if err != nil {
		return "", "", err
	}
	stem := fmt.Sprintf("%s-%s", slug(cert.Subject.CommonName), cert.SerialNumber)
	certFile = filepath.Join(dir, stem+".crt")
	keyFile = filepath.Join(dir, stem+".key")
	if err := writeFile(certFile, certPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := writeFile(keyFile, kp, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// writeFile writes data with exactly mode perm, also when name exists.
func writeFile(name string, data []byte, perm os.FileMode) error {
	if err := os.WriteFile(name, data, perm); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := os.Chmod(name, perm); err != nil {
		return fmt.Errorf("setting mode of %s: %w", name, err)
	}
	return nil
}

// slug turns a common name into a file name fragment: lower case letters,
// digits, '.', '_' and '-', anything else replaced by '-'.
func slug(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
	s = strings.Trim(s, ".-")
	if s == "" {
		return "cert"
	}
	return s
}
