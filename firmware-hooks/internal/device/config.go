// Package device enrolls and renews a device certificate over EST (RFC
// 7030) with an Outpost agent: the Go counterpart of the sh hook
// firmware-hooks/sh/outpost-enroll. Both read the same settings (KEY=value
// config file, OUTPOST_* environment variables), keep the same files and
// exit with the same codes, so a device can move from one to the other.
// The Go client can also keep its key in a TPM 2.0 (package tpmkeys).
package device

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-pki/outpost/internal/keystore"
)

// ConfigVersion is the version of the settings this package reads
// (OUTPOST_CONFIG_VERSION; absent means 1).
//
//	1 (2026-11-22): first version, shared with the sh hook.
const ConfigVersion = 1

// DefaultConfigFile is read when no config file is named and it exists.
const DefaultConfigFile = "/etc/outpost/enroll.conf"

// maxConfigSize caps the config file: a few dozen short lines; a cap
// stops a wrong path (a device, a log) from being read whole.
const maxConfigSize = 64 << 10

// Settings are the names a config file or the environment may set, with
// what each means. Both tools accept exactly these.
var Settings = map[string]string{
	"OUTPOST_CONFIG_VERSION": "settings version (1)",
	"OUTPOST_EST_URL":        "EST base URL, https://gateway:8443/.well-known/est[/label] (required)",
	"OUTPOST_EST_CA":         "CA certificates that verify the EST server (required)",
	"OUTPOST_DEVICE_ID":      "device id, the CSR's common name",
	"OUTPOST_KEY":            "private key file (default /etc/outpost/device.key)",
	"OUTPOST_CERT":           "certificate file (default /etc/outpost/device.pem)",
	"OUTPOST_CA_CHAIN":       "where to write the EST server's CA certificates after enrolling",
	"OUTPOST_KEY_TYPE":       "ec-p256 (default), ec-p384, rsa-2048, rsa-3072",
	"OUTPOST_SAN":            "subjectAltNames, DNS:name,IP:addr,URI:uri,email:addr",
	"OUTPOST_SECRET_FILE":    "one-time secret file: secret or device:secret",
	"OUTPOST_BOOTSTRAP_CERT": "bootstrap (manufacturer) certificate",
	"OUTPOST_BOOTSTRAP_KEY":  "bootstrap (manufacturer) key",
	"OUTPOST_RENEW_PERCENT":  "renew when less than this share of the validity is left (default 33)",
	"OUTPOST_RENEW_DAYS":     "also renew when fewer days than this are left (default 0: off)",
	"OUTPOST_REKEY":          "1: every renewal makes a new key (as --rekey); default 0",
	"OUTPOST_MAX_WAIT":       "total seconds to wait for a pending (202) request (default 300)",
	"OUTPOST_TIMEOUT":        "seconds per HTTP request (default 60)",
	"OUTPOST_BACKUP_DIR":     "snapshot directory (sh hook and Mender scripts only)",
	"OUTPOST_TPM":            "TPM device holding the key, e.g. /dev/tpmrm0 (Go client only)",
	"OUTPOST_SWTPM":          "swtpm socket host:port holding the key (Go client only, tests)",
	"OUTPOST_TPM_DIR":        "directory of the TPM key blobs (Go client only; default <key>.tpm)",
}

// Config is what a run needs. Load fills it from a file, the environment
// and overrides; Validate checks it.
type Config struct {
	ESTURL        string
	ESTCA         string
	DeviceID      string
	Key           string // default /etc/outpost/device.key
	Cert          string // default /etc/outpost/device.pem
	CAChain       string // optional
	KeyType       keystore.Algorithm
	SAN           string // openssl syntax, see ParseSAN
	SecretFile    string
	BootstrapCert string
	BootstrapKey  string
	RenewPercent  int           // default 33
	RenewDays     int           // default 0
	RekeyAlways   bool          // OUTPOST_REKEY=1
	MaxWait       time.Duration // default 300 s
	Timeout       time.Duration // default 60 s
	TPMDevice     string        // e.g. /dev/tpmrm0
	SwtpmAddr     string        // host:port
	TPMDir        string        // default Key + ".tpm"
}

// UsesTPM reports whether the key lives in a TPM.
func (c *Config) UsesTPM() bool { return c.TPMDevice != "" || c.SwtpmAddr != "" }

// ConfigError is a problem with the settings (exit code 2).
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

func configErr(format string, args ...any) error {
	return &ConfigError{Msg: fmt.Sprintf(format, args...)}
}

// ParseConfigFile reads KEY=value lines: '#' comments, blank lines and
// optional single or double quotes around the value; only Settings names.
// Nothing is expanded or executed, as in the sh hook.
func ParseConfigFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, configErr("cannot read config file %s: %v", path, err)
	}
	defer f.Close()
	// Cap before reading: see maxConfigSize.
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, configErr("reading config file %s: %v", path, err)
	}
	if len(data) > maxConfigSize {
		return nil, configErr("config file %s is larger than %d bytes", path, maxConfigSize)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, configErr("%s:%d: want KEY=value", path, n)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		if _, known := Settings[k]; !known {
			return nil, configErr("%s:%d: unknown setting '%s'", path, n, k)
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, configErr("reading config file %s: %v", path, err)
	}
	return out, nil
}

// Load builds a Config from, lowest to highest precedence: the defaults,
// the config file (path; "" means DefaultConfigFile if it exists), the
// environment (lookup, normally os.LookupEnv) and overrides (command-line
// flags, by setting name).
func Load(path string, lookup func(string) (string, bool), overrides map[string]string) (*Config, error) {
	vals := map[string]string{}
	if path == "" {
		if _, err := os.Stat(DefaultConfigFile); err == nil {
			path = DefaultConfigFile
		}
	}
	if path != "" {
		file, err := ParseConfigFile(path)
		if err != nil {
			return nil, err
		}
		vals = file
	}
	if lookup != nil {
		for k := range Settings {
			if v, ok := lookup(k); ok {
				vals[k] = v
			}
		}
	}
	for k, v := range overrides {
		if _, known := Settings[k]; !known {
			return nil, configErr("unknown setting %s", k)
		}
		vals[k] = v
	}
	get := func(k, def string) string {
		if v, ok := vals[k]; ok && v != "" {
			return v
		}
		return def
	}
	if v := get("OUTPOST_CONFIG_VERSION", "1"); v != strconv.Itoa(ConfigVersion) {
		return nil, configErr("OUTPOST_CONFIG_VERSION %s is not supported (this client reads version %d)", v, ConfigVersion)
	}
	c := &Config{
		ESTURL:        get("OUTPOST_EST_URL", ""),
		ESTCA:         get("OUTPOST_EST_CA", ""),
		DeviceID:      get("OUTPOST_DEVICE_ID", ""),
		Key:           get("OUTPOST_KEY", "/etc/outpost/device.key"),
		Cert:          get("OUTPOST_CERT", "/etc/outpost/device.pem"),
		CAChain:       get("OUTPOST_CA_CHAIN", ""),
		SAN:           get("OUTPOST_SAN", ""),
		SecretFile:    get("OUTPOST_SECRET_FILE", ""),
		BootstrapCert: get("OUTPOST_BOOTSTRAP_CERT", ""),
		BootstrapKey:  get("OUTPOST_BOOTSTRAP_KEY", ""),
		TPMDevice:     get("OUTPOST_TPM", ""),
		SwtpmAddr:     get("OUTPOST_SWTPM", ""),
	}
	c.TPMDir = get("OUTPOST_TPM_DIR", c.Key+".tpm")
	switch v := get("OUTPOST_REKEY", "0"); v {
	case "0", "1":
		c.RekeyAlways = v == "1"
	default:
		return nil, configErr("OUTPOST_REKEY must be 0 or 1, not '%s'", v)
	}
	alg, err := ParseKeyType(get("OUTPOST_KEY_TYPE", "ec-p256"))
	if err != nil {
		return nil, err
	}
	c.KeyType = alg
	ints := []struct {
		name     string
		def      int
		min, max int
		dst      *int
	}{
		{"OUTPOST_RENEW_PERCENT", 33, 0, 100, &c.RenewPercent},
		{"OUTPOST_RENEW_DAYS", 0, 0, 100000, &c.RenewDays},
	}
	for _, i := range ints {
		n, err := strconv.Atoi(get(i.name, strconv.Itoa(i.def)))
		if err != nil || n < i.min || n > i.max {
			return nil, configErr("%s must be a number from %d to %d, not '%s'", i.name, i.min, i.max, get(i.name, ""))
		}
		*i.dst = n
	}
	secs := []struct {
		name string
		def  int
		min  int
		dst  *time.Duration
	}{
		{"OUTPOST_MAX_WAIT", 300, 0, &c.MaxWait},
		{"OUTPOST_TIMEOUT", 60, 1, &c.Timeout},
	}
	for _, s := range secs {
		n, err := strconv.Atoi(get(s.name, strconv.Itoa(s.def)))
		if err != nil || n < s.min || n > 999999999 {
			return nil, configErr("%s must be a number of seconds (at least %d), not '%s'", s.name, s.min, get(s.name, ""))
		}
		*s.dst = time.Duration(n) * time.Second
	}
	return c, nil
}

// ParseKeyType reads the sh hook's key type names (ec-p256, ec-p384,
// rsa-2048, rsa-3072); keystore names (ecdsa-p256, ...) are accepted too.
func ParseKeyType(s string) (keystore.Algorithm, error) {
	switch s {
	case "ec-p256":
		return keystore.ECDSAP256, nil
	case "ec-p384":
		return keystore.ECDSAP384, nil
	}
	if a, err := keystore.ParseAlgorithm(s); err == nil {
		return a, nil
	}
	return "", configErr("OUTPOST_KEY_TYPE must be ec-p256, ec-p384, rsa-2048 or rsa-3072, not '%s'", s)
}

// Validate checks what a run (enroll or renew) needs.
func (c *Config) Validate() error {
	u, err := url.Parse(c.ESTURL)
	switch {
	case c.ESTURL == "":
		return configErr("OUTPOST_EST_URL is not set (https://gateway:8443/.well-known/est)")
	case err != nil || u.Scheme != "https" || u.Host == "":
		return configErr("OUTPOST_EST_URL must be an https:// URL, not '%s'", c.ESTURL)
	case u.RawQuery != "" || u.Fragment != "":
		return configErr("OUTPOST_EST_URL must not have a query or fragment")
	case c.ESTCA == "":
		return configErr("OUTPOST_EST_CA is not set: the EST server must be verified")
	case c.Key == "" || c.Cert == "":
		return configErr("OUTPOST_KEY and OUTPOST_CERT must not be empty")
	case (c.BootstrapCert == "") != (c.BootstrapKey == ""):
		return configErr("OUTPOST_BOOTSTRAP_CERT and OUTPOST_BOOTSTRAP_KEY go together")
	case c.TPMDevice != "" && c.SwtpmAddr != "":
		return configErr("set OUTPOST_TPM or OUTPOST_SWTPM, not both")
	}
	if c.SwtpmAddr != "" {
		if _, _, err := net.SplitHostPort(c.SwtpmAddr); err != nil {
			return configErr("OUTPOST_SWTPM must be host:port, not '%s'", c.SwtpmAddr)
		}
	}
	if c.DeviceID != "" {
		if err := ValidateDeviceID(c.DeviceID); err != nil {
			return err
		}
	}
	if _, err := ParseSAN(c.SAN); err != nil {
		return err
	}
	for _, f := range []struct{ name, path string }{{"OUTPOST_EST_CA", c.ESTCA}, {"OUTPOST_SECRET_FILE", c.SecretFile}, {"OUTPOST_BOOTSTRAP_CERT", c.BootstrapCert}, {"OUTPOST_BOOTSTRAP_KEY", c.BootstrapKey}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return configErr("cannot read %s %s: %v", f.name, f.path, err)
		}
	}
	if c.UsesTPM() && filepath.Clean(c.TPMDir) == filepath.Clean(filepath.Dir(c.Cert)) {
		return configErr("OUTPOST_TPM_DIR must be a directory of its own, not the certificate's")
	}
	return nil
}

// ValidateDeviceID checks a device id: 1 to 128 of A-Z a-z 0-9 . _ @ : -,
// the characters the sh hook accepts.
func ValidateDeviceID(id string) error {
	if id == "" || len(id) > 128 {
		return configErr("device id must be 1 to 128 characters")
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("._@:-", r):
		default:
			return configErr("device id '%s' has characters other than A-Z a-z 0-9 . _ @ : -", id)
		}
	}
	return nil
}

// SAN is the subjectAltNames asked for in the CSR.
type SAN struct {
	DNS    []string
	IPs    []net.IP
	URIs   []*url.URL
	Emails []string
}

// ParseSAN reads openssl's syntax: DNS:name,IP:addr,URI:uri,email:addr.
func ParseSAN(s string) (SAN, error) {
	var san SAN
	if strings.TrimSpace(s) == "" {
		return san, nil
	}
	for _, part := range strings.Split(s, ",") {
		typ, val, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || val == "" {
			return SAN{}, configErr("OUTPOST_SAN: '%s' is not TYPE:value", part)
		}
		switch strings.ToUpper(typ) {
		case "DNS":
			san.DNS = append(san.DNS, val)
		case "IP":
			ip := net.ParseIP(val)
			if ip == nil {
				return SAN{}, configErr("OUTPOST_SAN: '%s' is not an IP address", val)
			}
			san.IPs = append(san.IPs, ip)
		case "URI":
			u, err := url.Parse(val)
			if err != nil {
				return SAN{}, configErr("OUTPOST_SAN: '%s' is not a URI", val)
			}
			san.URIs = append(san.URIs, u)
		case "EMAIL":
			san.Emails = append(san.Emails, val)
		default:
			return SAN{}, configErr("OUTPOST_SAN: unknown type '%s' (want DNS, IP, URI or email)", typ)
		}
	}
	return san, nil
}
