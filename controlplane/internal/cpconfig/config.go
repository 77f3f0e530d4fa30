// Package cpconfig is the control plane's configuration file: one
// versioned YAML document, every field documented with its default, and
// environment overrides for what operators set per deployment.
//
// Environment overrides (they win over the file):
//
//	OUTPOST_DATABASE_URL      database.url
//	OUTPOST_LISTEN            listen
//	OUTPOST_PKCS11_PIN        keystore.pkcs11.pin (the value itself)
//	OUTPOST_KEY_PASSPHRASE    keystore.file.passphrase (the value itself)
//	OUTPOST_ADMIN_TOKEN       admin_token (the value itself)
//	OUTPOST_BROKER_LISTEN     sync.broker.listen
//	OUTPOST_SYNC_CLIENT_ID    sync.client_id
package cpconfig

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/outpost-pki/outpost/internal/secret"
	"github.com/outpost-pki/outpost/internal/yamlconf"
)

// Version is the configuration format version this binary reads.
const Version = 1

// MaxSize caps the configuration file: it is a few KiB.
const MaxSize = 1 << 20

// Config is the control plane configuration.
type Config struct {
	// Version of the format; must be 1.
	Version int `yaml:"version"`
	// Listen is the API address. Default ":8443". Env OUTPOST_LISTEN.
	Listen string `yaml:"listen"`
	// TLS serves the API over TLS when both files are set; without them
	// the API speaks plain HTTP (for a local demo or behind a TLS proxy).
	TLS TLS `yaml:"tls"`
	// Database holds the PostgreSQL connection.
	Database Database `yaml:"database"`
	// Keystore holds the CA keys. Replicas must share it (a network HSM,
	// or a key directory on shared storage).
	Keystore Keystore `yaml:"keystore"`
	// Bootstrap names the CAs created at first start.
	Bootstrap Bootstrap `yaml:"bootstrap"`
	// AdminToken, if set, is installed at every start as a token of the
	// "admin" principal: how the first operator gets in. Use 24+ random
	// characters. Env OUTPOST_ADMIN_TOKEN.
	AdminToken secret.Source `yaml:"admin_token"`
	// LogLevel is debug, info (default), warn or error.
	LogLevel string `yaml:"log_level"`
	// PublicURL is the base URL relying parties use to reach OCSP and
	// CRLs (e.g. http://pki.example.com); issued certificates carry
	// PublicURL/ocsp and PublicURL/crl/<ca-id>.crl. Empty: no URLs in
	// certificates. Env OUTPOST_PUBLIC_URL.
	PublicURL string `yaml:"public_url"`
	// Lifecycle configures the status sweeps.
	Lifecycle Lifecycle `yaml:"lifecycle"`
	// OCSP configures the responder.
	OCSP OCSP `yaml:"ocsp"`
	// CRL configures revocation lists.
	CRL CRL `yaml:"crl"`
	// Notifications configures outgoing notifications.
	Notifications Notifications `yaml:"notifications"`
	// Sync configures the link to agents (MQTT).
	Sync Sync `yaml:"sync"`
	// API configures the REST API's limits.
	API API `yaml:"api"`
}

// API configures the REST API's limits.
type API struct {
	// RatePerIdentity is how many requests per second each API token or
	// DMS identity may make on one replica; beyond it (and its burst) the
	// API answers 429 with Retry-After. Default 50; 0: unlimited.
	RatePerIdentity *float64 `yaml:"rate_per_identity"`
	// BurstPerIdentity is the burst above that rate. Default 200.
	BurstPerIdentity int `yaml:"burst_per_identity"`
}

// Sync configures the MQTT link to agents: by default an embedded broker
// in this process; past one machine, an external broker shared by every
// replica (see docs/SYNC.md).
type Sync struct {
	// Broker is the embedded broker.
	Broker EmbeddedBroker `yaml:"broker"`
	// ExternalBrokerURL (mqtts://host:8883), when set, replaces the
	// embedded broker: this replica's sync consumer connects there with a
	// client certificate from the DMS manager CA (common name
	// "outpost-controlplane").
	ExternalBrokerURL string `yaml:"external_broker_url"`
	// ExternalBrokerCAFile (PEM) verifies the external broker's server
	// certificate. Default: the system roots.
	ExternalBrokerCAFile string `yaml:"external_broker_ca_file"`
	// ClientID is this replica's MQTT client id: unique per replica and
	// stable across its restarts (its persistent session holds messages
	// while it restarts). Default "outpost-cp-<hostname>". Env
	// OUTPOST_SYNC_CLIENT_ID.
	ClientID string `yaml:"client_id"`
}

// EmbeddedBroker configures the MQTT broker inside the control plane.
type EmbeddedBroker struct {
	// Enabled runs it. Default true; off when external_broker_url is set.
	Enabled *bool `yaml:"enabled"`
	// Listen is the agents' MQTT-over-TLS address. Default ":8883". Env
	// OUTPOST_BROKER_LISTEN.
	Listen string `yaml:"listen"`
	// DataDir keeps sessions and queued messages across restarts.
	// Default /var/lib/outpost-controlplane/broker.
	DataDir string `yaml:"data_dir"`
	// Hostnames are the DNS names and IP addresses agents use to reach the
	// broker, put in its TLS certificate (issued by the DMS manager CA at
	// start and renewed while running). Always added: localhost,
	// 127.0.0.1, ::1, this machine's hostname and public_url's host.
	Hostnames []string `yaml:"hostnames"`
	// MaxSessionExpiry is how long a disconnected agent's session and
	// queued messages are kept. Default 168h.
	MaxSessionExpiry Duration `yaml:"max_session_expiry"`
}

// EmbeddedBrokerOn reports whether the embedded broker runs.
func (c *Config) EmbeddedBrokerOn() bool {
	return c.Sync.ExternalBrokerURL == "" && (c.Sync.Broker.Enabled == nil || *c.Sync.Broker.Enabled)
}

// Lifecycle configures the sweeps.
type Lifecycle struct {
	// SweepInterval between sweeps. Default 1m.
	SweepInterval Duration `yaml:"sweep_interval"`
	// ExpiryThreshold: certificates this close to notAfter are "about to
	// expire", unless their CA or profile says otherwise. Default 720h.
	ExpiryThreshold Duration `yaml:"expiry_threshold"`
	// ProfileThresholds overrides the threshold per profile name.
	ProfileThresholds map[string]Duration `yaml:"profile_thresholds"`
}

// OCSP configures the responder.
type OCSP struct {
	// ResponseValidity is nextUpdate - thisUpdate. Default 24h.
	ResponseValidity Duration `yaml:"response_validity"`
}

// CRL configures revocation lists.
type CRL struct {
	// Validity of full CRLs (nextUpdate - thisUpdate). Default 24h.
	Validity Duration `yaml:"validity"`
	// DeltaValidity of delta CRLs. Default 1h.
	DeltaValidity Duration `yaml:"delta_validity"`
}

// Notifications configures outgoing notifications.
type Notifications struct {
	// SMTPAddr (host:port) of the mail relay for email subscriptions.
	SMTPAddr string `yaml:"smtp_addr"`
	// SMTPFrom is the sender address. Default outpost@localhost.
	SMTPFrom string `yaml:"smtp_from"`
	// SMTPUsername and SMTPPassword, if the relay needs them.
	SMTPUsername string        `yaml:"smtp_username"`
	SMTPPassword secret.Source `yaml:"smtp_password"`
	// Interval between dispatch rounds. Default 2s.
	Interval Duration `yaml:"interval"`
	// MaxAttempts before a delivery is dead-lettered. Default 8.
	MaxAttempts int `yaml:"max_attempts"`
}

// Duration is a duration written as "90s", "15m", "720h".
type Duration = yamlconf.Duration

// TLS is the API server's certificate.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Database is the PostgreSQL connection.
type Database struct {
	// URL is a libpq-style URL, e.g. postgres://outpost@db/outpost.
	// Required. Env OUTPOST_DATABASE_URL.
	URL string `yaml:"url"`
}

// Keystore selects where CA keys live.
type Keystore struct {
	// Backend is "file" (default) or "pkcs11".
	Backend string `yaml:"backend"`
	File    struct {
		// Dir holds the encrypted key files. Default /var/lib/outpost-controlplane/keys.
		Dir string `yaml:"dir"`
		// Passphrase encrypts the keys. Required for the file backend.
		// Env OUTPOST_KEY_PASSPHRASE.
		Passphrase secret.Source `yaml:"passphrase"`
	} `yaml:"file"`
	PKCS11 struct {
		// Module is the PKCS#11 library path.
		Module string `yaml:"module"`
		// TokenLabel selects the token.
		TokenLabel string `yaml:"token_label"`
		// PIN is the user PIN. Env OUTPOST_PKCS11_PIN.
		PIN secret.Source `yaml:"pin"`
	} `yaml:"pkcs11"`
	// KeyAlgorithm of generated CA keys: ecdsa-p256 (default), ecdsa-p384,
	// rsa-2048, rsa-3072.
	KeyAlgorithm string `yaml:"key_algorithm"`
}

// Bootstrap names the control plane's own CAs.
type Bootstrap struct {
	// Organization of the bootstrap CAs. Default "Outpost".
	Organization string `yaml:"organization"`
	// RootCommonName default "Outpost Root CA".
	RootCommonName string `yaml:"root_common_name"`
	// IssuingCommonName default "Outpost Issuing CA".
	IssuingCommonName string `yaml:"issuing_common_name"`
	// DMSManagerCommonName default "Outpost DMS Manager CA".
	DMSManagerCommonName string `yaml:"dms_manager_common_name"`
}

// Load reads and validates a configuration file, then applies env.
func Load(path string, env func(string) string) (*Config, error) {
	b, err := yamlconf.ReadFile(path, MaxSize)
	if err != nil {
		return nil, err
	}
	return Parse(b, env)
}

// Parse decodes a configuration (unknown fields are errors), fills in
// defaults, applies env overrides and validates.
func Parse(b []byte, env func(string) string) (*Config, error) {
	var c Config
	if err := yamlconf.DecodeStrict(b, &c); err != nil {
		return nil, err
	}
	if env == nil {
		env = os.Getenv
	}
	c.applyDefaults()
	if v := env("OUTPOST_DATABASE_URL"); v != "" {
		c.Database.URL = v
	}
	if v := env("OUTPOST_LISTEN"); v != "" {
		c.Listen = v
	}
	if v := env("OUTPOST_PKCS11_PIN"); v != "" {
		c.Keystore.PKCS11.PIN = secret.Source{Value: secret.Secret(v)}
	}
	if v := env("OUTPOST_KEY_PASSPHRASE"); v != "" {
		c.Keystore.File.Passphrase = secret.Source{Value: secret.Secret(v)}
	}
	if v := env("OUTPOST_PUBLIC_URL"); v != "" {
		c.PublicURL = v
	}
	if v := env("OUTPOST_ADMIN_TOKEN"); v != "" {
		c.AdminToken = secret.Source{Value: secret.Secret(v)}
	}
	if v := env("OUTPOST_BROKER_LISTEN"); v != "" {
		c.Sync.Broker.Listen = v
	}
	if v := env("OUTPOST_SYNC_CLIENT_ID"); v != "" {
		c.Sync.ClientID = v
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) applyDefaults() {
	if c.Listen == "" {
		c.Listen = ":8443"
	}
	if c.Keystore.Backend == "" {
		c.Keystore.Backend = "file"
	}
	if c.Keystore.File.Dir == "" {
		c.Keystore.File.Dir = "/var/lib/outpost-controlplane/keys"
	}
	if c.Keystore.KeyAlgorithm == "" {
		c.Keystore.KeyAlgorithm = "ecdsa-p256"
	}
	if c.Bootstrap.Organization == "" {
		c.Bootstrap.Organization = "Outpost"
	}
	if c.Bootstrap.RootCommonName == "" {
		c.Bootstrap.RootCommonName = "Outpost Root CA"
	}
	if c.Bootstrap.IssuingCommonName == "" {
		c.Bootstrap.IssuingCommonName = "Outpost Issuing CA"
	}
	if c.Bootstrap.DMSManagerCommonName == "" {
		c.Bootstrap.DMSManagerCommonName = "Outpost DMS Manager CA"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	setDefault := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	if c.API.RatePerIdentity == nil {
		c.API.RatePerIdentity = new(50.0)
	}
	if c.API.BurstPerIdentity == 0 {
		c.API.BurstPerIdentity = 200
	}
	setDefault(&c.Lifecycle.SweepInterval, time.Minute)
	setDefault(&c.Lifecycle.ExpiryThreshold, 30*24*time.Hour)
	setDefault(&c.OCSP.ResponseValidity, 24*time.Hour)
	setDefault(&c.CRL.Validity, 24*time.Hour)
	setDefault(&c.CRL.DeltaValidity, time.Hour)
	setDefault(&c.Notifications.Interval, 2*time.Second)
	if c.Notifications.MaxAttempts == 0 {
		c.Notifications.MaxAttempts = 8
	}
	if c.Notifications.SMTPFrom == "" {
		c.Notifications.SMTPFrom = "outpost@localhost"
	}
	if c.Sync.Broker.Listen == "" {
		c.Sync.Broker.Listen = ":8883"
	}
	if c.Sync.Broker.DataDir == "" {
		c.Sync.Broker.DataDir = "/var/lib/outpost-controlplane/broker"
	}
	setDefault(&c.Sync.Broker.MaxSessionExpiry, 7*24*time.Hour)
	if c.Sync.ClientID == "" {
		h, _ := os.Hostname()
		c.Sync.ClientID = "outpost-cp-" + h
	}
}

// Validate reports every problem at once, each naming its field.
func (c *Config) Validate() error {
	var errs []string
	if c.Version != Version {
		errs = append(errs, fmt.Sprintf("version: got %d, this binary reads version %d", c.Version, Version))
	}
	if c.Database.URL == "" {
		errs = append(errs, "database.url: required (or set OUTPOST_DATABASE_URL)")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Sprintf("listen: %q is not host:port", c.Listen))
	}
	if r := c.API.RatePerIdentity; r != nil && (*r < 0 || math.IsNaN(*r) || math.IsInf(*r, 0)) {
		errs = append(errs, fmt.Sprintf("api.rate_per_identity: %v is not a rate (requests per second, 0 for unlimited)", *r))
	}
	if c.API.BurstPerIdentity < 0 {
		errs = append(errs, fmt.Sprintf("api.burst_per_identity: %d is negative", c.API.BurstPerIdentity))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, "tls: set both cert_file and key_file, or neither")
	}
	switch c.Keystore.Backend {
	case "file":
		if !c.Keystore.File.Passphrase.IsSet() {
			errs = append(errs, "keystore.file.passphrase: required (a file, an env variable, or OUTPOST_KEY_PASSPHRASE)")
		}
	case "pkcs11":
		if c.Keystore.PKCS11.Module == "" || c.Keystore.PKCS11.TokenLabel == "" {
			errs = append(errs, "keystore.pkcs11: module and token_label are required")
		}
		if !c.Keystore.PKCS11.PIN.IsSet() {
			errs = append(errs, "keystore.pkcs11.pin: required (a file, an env variable, or OUTPOST_PKCS11_PIN)")
		}
	default:
		errs = append(errs, fmt.Sprintf("keystore.backend: %q is not file or pkcs11", c.Keystore.Backend))
	}
	switch c.Keystore.KeyAlgorithm {
	case "ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072":
	default:
		errs = append(errs, fmt.Sprintf("keystore.key_algorithm: %q is not one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072", c.Keystore.KeyAlgorithm))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Sprintf("log_level: %q is not one of debug, info, warn, error", c.LogLevel))
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Sprintf("public_url: %q is not an http(s) URL", c.PublicURL))
		}
	}
	for name, d := range map[string]Duration{"lifecycle.sweep_interval": c.Lifecycle.SweepInterval, "lifecycle.expiry_threshold": c.Lifecycle.ExpiryThreshold,
		"ocsp.response_validity": c.OCSP.ResponseValidity, "crl.validity": c.CRL.Validity, "crl.delta_validity": c.CRL.DeltaValidity, "notifications.interval": c.Notifications.Interval} {
		if d < 0 {
			errs = append(errs, name+": must not be negative")
		}
	}
	if c.EmbeddedBrokerOn() {
		if _, _, err := net.SplitHostPort(c.Sync.Broker.Listen); err != nil {
			errs = append(errs, fmt.Sprintf("sync.broker.listen: %q is not host:port", c.Sync.Broker.Listen))
		}
		if c.Sync.Broker.MaxSessionExpiry.D() < time.Minute {
			errs = append(errs, "sync.broker.max_session_expiry: must be at least 1m")
		}
	}
	if c.Sync.ExternalBrokerURL != "" {
		if u, err := url.Parse(c.Sync.ExternalBrokerURL); err != nil || (u.Scheme != "mqtts" && u.Scheme != "tls" && u.Scheme != "ssl") || u.Host == "" {
			errs = append(errs, fmt.Sprintf("sync.external_broker_url: %q is not an mqtts://host:port URL (the sync link is TLS only)", c.Sync.ExternalBrokerURL))
		}
	}
	if len(c.Sync.ClientID) > 64 || strings.ContainsAny(c.Sync.ClientID, "/+#") {
		errs = append(errs, "sync.client_id: at most 64 characters, without / + #")
	}
	if c.CRL.DeltaValidity > c.CRL.Validity {
		errs = append(errs, "crl.delta_validity: must not exceed crl.validity")
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return errors.New("config:\n  " + strings.Join(errs, "\n  "))
	}
	return nil
}
