// Package agentconfig is outpost-agent's configuration file: one
// versioned YAML document; every field has a documented default.
//
// Environment overrides: OUTPOST_AGENT_DATA_DIR (data_dir),
// OUTPOST_BROKER_URL (sync.broker_url), OUTPOST_PKCS11_PIN
// (keystore.pkcs11.pin), OUTPOST_KEY_PASSPHRASE (keystore.file.passphrase),
// OUTPOST_EST_LISTEN (est.listen). agent/config.example.yaml shows every
// field.
package agentconfig

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/outpost-pki/outpost/agent/internal/rotation"
	"github.com/outpost-pki/outpost/internal/secret"
	"github.com/outpost-pki/outpost/internal/yamlconf"
)

// Version is the format version this binary reads.
const Version = 1

// MaxSize caps the file (a few KiB in practice).
const MaxSize = 1 << 20

// Config is the agent configuration.
type Config struct {
	Version int `yaml:"version"`
	// DataDir holds the store, the identity certificate and TPM key blobs.
	// Default /var/lib/outpost-agent.
	DataDir string `yaml:"data_dir"`
	// ControlPlaneURL is the control plane API (for bootstrap).
	ControlPlaneURL string `yaml:"control_plane_url"`
	// ControlPlaneCAFile verifies the control plane's TLS certificate
	// (empty: the system roots).
	ControlPlaneCAFile string   `yaml:"control_plane_ca_file"`
	Keystore           Keystore `yaml:"keystore"`
	Sync               Sync     `yaml:"sync"`
	Identity           Identity `yaml:"identity"`
	EST                EST      `yaml:"est"`
	Rotation           Rotation `yaml:"rotation"`
	// AdminAddr serves /healthz, /readyz and /metrics. Default 127.0.0.1:9464.
	AdminAddr string `yaml:"admin_addr"`
	// LogLevel: debug, info (default), warn, error.
	LogLevel string `yaml:"log_level"`
}

// Keystore selects where the DMS identity key lives.
type Keystore struct {
	// Backend: tpm (default when /dev/tpmrm0 exists), pkcs11, or file.
	Backend string `yaml:"backend"`
	TPM     struct {
		// Device is the TPM device. Default /dev/tpmrm0.
		Device string `yaml:"device"`
		// SwtpmAddr (host:port) uses an swtpm socket instead (tests, demo).
		SwtpmAddr string `yaml:"swtpm_addr"`
	} `yaml:"tpm"`
	PKCS11 struct {
		Module     string        `yaml:"module"`
		TokenLabel string        `yaml:"token_label"`
		PIN        secret.Source `yaml:"pin"`
	} `yaml:"pkcs11"`
	File struct {
		Passphrase secret.Source `yaml:"passphrase"`
	} `yaml:"file"`
}

// Sync configures the link to the control plane.
type Sync struct {
	// BrokerURL is the MQTT broker, e.g. mqtts://cp.example:8883.
	BrokerURL string `yaml:"broker_url"`
	// BrokerCAFile verifies the broker's certificate (default: the CA
	// chain received at bootstrap).
	BrokerCAFile string `yaml:"broker_ca_file"`
	// BrokerServerName overrides the name checked in the broker's
	// certificate (default: the URL's host).
	BrokerServerName string `yaml:"broker_server_name"`
	// Heartbeat interval. Default 30s.
	Heartbeat Duration `yaml:"heartbeat"`
	// BatchSize is the most records per message. Default 200.
	BatchSize int `yaml:"batch_size"`
}

// EST configures the EST (RFC 7030) server devices enroll with.
type EST struct {
	// Listen is the HTTPS address devices use. Default ":8443"; "off"
	// disables the EST server. Env OUTPOST_EST_LISTEN.
	Listen string `yaml:"listen"`
	// Hostnames are the DNS names and IP addresses devices reach the agent
	// by, put in the EST server certificate (issued by the control plane,
	// renewed automatically). Default: this machine's hostname, localhost,
	// 127.0.0.1 and ::1.
	Hostnames []string `yaml:"hostnames"`
	// RetryAfter is what a queued enrollment answers in Retry-After.
	// Default 30s.
	RetryAfter Duration `yaml:"retry_after"`
	// RatePerAddress and BurstPerAddress limit requests per client IP
	// address (per second). Default 50 and 100; a rate of 0 is unlimited.
	RatePerAddress  *float64 `yaml:"rate_per_address"`
	BurstPerAddress int      `yaml:"burst_per_address"`
	// RatePerDevice and BurstPerDevice limit enrollments per device
	// identity. Default 1 and 10; a rate of 0 is unlimited.
	RatePerDevice  *float64 `yaml:"rate_per_device"`
	BurstPerDevice int      `yaml:"burst_per_device"`
	// CRLGrace is how long past its nextUpdate a cached CRL still decides
	// re-enrollments; past it they are refused (fail closed) until a
	// fresh CRL arrives. Default 24h; 0s is no grace (refused from
	// nextUpdate on).
	CRLGrace *Duration `yaml:"crl_grace"`
	// WebhookCAFile (PEM) verifies the enrollment webhook's certificate
	// (device_auth "webhook"); default: the system roots.
	WebhookCAFile string `yaml:"webhook_ca_file"`
	// DeviceValidity is the lifetime of certificates the edge CA issues
	// in local mode, clipped to the edge CA's own. Default 2160h (90 days).
	DeviceValidity Duration `yaml:"device_validity"`
}

// Enabled reports whether the EST server runs.
func (e EST) Enabled() bool { return e.Listen != "off" }

// Identity configures the DMS identity certificate's renewal.
type Identity struct {
	// RenewBefore: renew when the certificate has less than this left.
	// Default (0): when a third of its lifetime is left. Renewal runs over
	// the sync link with a fresh key and needs no operator.
	RenewBefore Duration `yaml:"renew_before"`
}

// Rotation configures the rotation of agentless devices' certificates
// (docs/ROTATION.md): devices listed in an inventory, routed by platform,
// OS version and model to a hook that has the device make a CSR and
// installs the certificate the agent got signed for it.
type Rotation struct {
	// InventoryFile lists the devices (YAML or JSON), read again when it
	// changes. Empty (the default): rotation is off.
	InventoryFile string `yaml:"inventory_file"`
	// Interval between scans of the inventory. Default 1h.
	Interval Duration `yaml:"interval"`
	// Concurrency bounds the devices checked or rotated at once. Default 4.
	Concurrency int `yaml:"concurrency"`
	// VerifyTimeout: how long after the install phase the device may take
	// to present its new certificate. Default 10s.
	VerifyTimeout Duration `yaml:"verify_timeout"`
	// BackoffMin and BackoffMax bound the wait after a failed rotation
	// (doubling per failure in a row). Default 5m and 6h.
	BackoffMin Duration `yaml:"backoff_min"`
	BackoffMax Duration `yaml:"backoff_max"`
	// Routes are tried in order; the first whose match fits the device
	// rotates it. A device no route matches is reported, not rotated.
	Routes []RotationRoute `yaml:"routes"`
}

// RotationRoute sends matching devices to a hook.
type RotationRoute struct {
	// Name identifies the route in events (default route-<n>).
	Name string `yaml:"name"`
	// Match: empty fields match anything; values are exact strings or
	// globs (path.Match); os_version also takes version constraints such
	// as ">=2.1,<3".
	Match struct {
		Platform  string `yaml:"platform"`
		OSVersion string `yaml:"os_version"`
		Model     string `yaml:"model"`
	} `yaml:"match"`
	// Hook is the executable's absolute path; Args its arguments (never
	// secrets: give the hook file paths instead).
	Hook string   `yaml:"hook"`
	Args []string `yaml:"args"`
	// Label is the EST label whose CA and profile sign ("" the default).
	Label string `yaml:"label"`
	// Timeout bounds each hook run and the wait for a signature. Default 2m.
	Timeout Duration `yaml:"timeout"`
	// RenewBefore: rotate when less than this is left (0: a third of the
	// certificate's lifetime).
	RenewBefore Duration `yaml:"renew_before"`
}

// Enabled reports whether rotation runs.
func (r Rotation) Enabled() bool { return r.InventoryFile != "" }

// Table compiles the routes.
func (r Rotation) Table() (*rotation.Table, error) {
	routes := make([]rotation.Route, len(r.Routes))
	for i, x := range r.Routes {
		routes[i] = rotation.Route{Name: x.Name, Match: rotation.Match{Platform: x.Match.Platform, OSVersion: x.Match.OSVersion, Model: x.Match.Model},
			Hook: x.Hook, Args: x.Args, Label: x.Label, Timeout: x.Timeout.D(), RenewBefore: x.RenewBefore.D()}
	}
	return rotation.NewTable(routes)
}

// Duration is a duration written as "90s", "15m", "720h".
type Duration = yamlconf.Duration

// Load reads, defaults, overrides and validates.
func Load(path string, env func(string) string) (*Config, error) {
	b, err := yamlconf.ReadFile(path, MaxSize)
	if err != nil {
		return nil, err
	}
	return Parse(b, env)
}

// Parse decodes strictly (unknown fields are errors).
func Parse(b []byte, env func(string) string) (*Config, error) {
	var c Config
	if err := yamlconf.DecodeStrict(b, &c); err != nil {
		return nil, err
	}
	if env == nil {
		env = os.Getenv
	}
	if c.DataDir == "" {
		c.DataDir = "/var/lib/outpost-agent"
	}
	if c.AdminAddr == "" {
		c.AdminAddr = "127.0.0.1:9464"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Keystore.Backend == "" {
		c.Keystore.Backend = "file"
		if _, err := os.Stat("/dev/tpmrm0"); err == nil {
			c.Keystore.Backend = "tpm"
		}
	}
	if c.Keystore.TPM.Device == "" {
		c.Keystore.TPM.Device = "/dev/tpmrm0"
	}
	if c.Sync.Heartbeat == 0 {
		c.Sync.Heartbeat = Duration(30 * time.Second)
	}
	if c.Sync.BatchSize == 0 {
		c.Sync.BatchSize = 200
	}
	if c.EST.Listen == "" {
		c.EST.Listen = ":8443"
	}
	if v := env("OUTPOST_EST_LISTEN"); v != "" {
		c.EST.Listen = v
	}
	if len(c.EST.Hostnames) == 0 {
		c.EST.Hostnames = []string{"localhost", "127.0.0.1", "::1"}
		if h, err := os.Hostname(); err == nil && h != "" {
			c.EST.Hostnames = append([]string{h}, c.EST.Hostnames...)
		}
	}
	if c.EST.RetryAfter == 0 {
		c.EST.RetryAfter = Duration(30 * time.Second)
	}
	setRate := func(r **float64, b *int, rate float64, burst int) {
		if *r == nil {
			*r = &rate
		}
		if *b == 0 {
			*b = burst
		}
	}
	setRate(&c.EST.RatePerAddress, &c.EST.BurstPerAddress, 50, 100)
	setRate(&c.EST.RatePerDevice, &c.EST.BurstPerDevice, 1, 10)
	if c.EST.CRLGrace == nil {
		grace := Duration(24 * time.Hour)
		c.EST.CRLGrace = &grace
	}
	if c.EST.DeviceValidity == 0 {
		c.EST.DeviceValidity = Duration(90 * 24 * time.Hour)
	}
	if c.Rotation.Interval == 0 {
		c.Rotation.Interval = Duration(time.Hour)
	}
	if c.Rotation.Concurrency == 0 {
		c.Rotation.Concurrency = 4
	}
	if c.Rotation.VerifyTimeout == 0 {
		c.Rotation.VerifyTimeout = Duration(10 * time.Second)
	}
	if c.Rotation.BackoffMin == 0 {
		c.Rotation.BackoffMin = Duration(5 * time.Minute)
	}
	if c.Rotation.BackoffMax == 0 {
		c.Rotation.BackoffMax = Duration(6 * time.Hour)
	}
	if v := env("OUTPOST_AGENT_DATA_DIR"); v != "" {
		c.DataDir = v
	}
	if v := env("OUTPOST_BROKER_URL"); v != "" {
		c.Sync.BrokerURL = v
	}
	if v := env("OUTPOST_PKCS11_PIN"); v != "" {
		c.Keystore.PKCS11.PIN = secret.Source{Value: secret.Secret(v)}
	}
	if v := env("OUTPOST_KEY_PASSPHRASE"); v != "" {
		c.Keystore.File.Passphrase = secret.Source{Value: secret.Secret(v)}
	}
	return &c, c.Validate()
}

// Validate reports every problem, each naming its field.
func (c *Config) Validate() error {
	var errs []string
	if c.Version != Version {
		errs = append(errs, fmt.Sprintf("version: got %d, this binary reads version %d", c.Version, Version))
	}
	if c.Identity.RenewBefore < 0 {
		errs = append(errs, "identity.renew_before: must not be negative")
	}
	switch c.Keystore.Backend {
	case "tpm":
	case "pkcs11":
		if c.Keystore.PKCS11.Module == "" || c.Keystore.PKCS11.TokenLabel == "" {
			errs = append(errs, "keystore.pkcs11: module and token_label are required")
		}
		if !c.Keystore.PKCS11.PIN.IsSet() {
			errs = append(errs, "keystore.pkcs11.pin: required (file, env or OUTPOST_PKCS11_PIN)")
		}
	case "file":
		if !c.Keystore.File.Passphrase.IsSet() {
			errs = append(errs, "keystore.file.passphrase: required (file, env or OUTPOST_KEY_PASSPHRASE)")
		}
	default:
		errs = append(errs, fmt.Sprintf("keystore.backend: %q is not tpm, pkcs11 or file", c.Keystore.Backend))
	}
	if c.EST.Enabled() {
		if _, _, err := net.SplitHostPort(c.EST.Listen); err != nil {
			errs = append(errs, fmt.Sprintf("est.listen: %q is not host:port (or off)", c.EST.Listen))
		}
	}
	if *c.EST.RatePerAddress < 0 || *c.EST.RatePerDevice < 0 || c.EST.BurstPerAddress < 0 || c.EST.BurstPerDevice < 0 {
		errs = append(errs, "est: rates and bursts must not be negative")
	}
	if c.EST.RetryAfter < Duration(time.Second) || c.EST.RetryAfter > Duration(24*time.Hour) {
		errs = append(errs, "est.retry_after: must be 1s..24h")
	}
	if *c.EST.CRLGrace < 0 {
		errs = append(errs, "est.crl_grace: must not be negative")
	}
	if c.EST.DeviceValidity < Duration(time.Hour) {
		errs = append(errs, "est.device_validity: must be at least 1h")
	}
	if c.Sync.BatchSize < 1 || c.Sync.BatchSize > 500 {
		errs = append(errs, "sync.batch_size: must be 1..500")
	}
	if c.Sync.Heartbeat < Duration(time.Second) {
		errs = append(errs, "sync.heartbeat: must be at least 1s")
	}
	errs = append(errs, c.Rotation.problems()...)
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Sprintf("log_level: %q is not debug, info, warn or error", c.LogLevel))
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return errors.New("config:\n  " + strings.Join(errs, "\n  "))
	}
	return nil
}

func (r Rotation) problems() []string {
	var errs []string
	if r.Interval < Duration(10*time.Second) {
		errs = append(errs, "rotation.interval: must be at least 10s")
	}
	if r.Concurrency < 1 || r.Concurrency > 64 {
		errs = append(errs, "rotation.concurrency: must be 1..64")
	}
	if r.VerifyTimeout < Duration(time.Second) || r.VerifyTimeout > Duration(10*time.Minute) {
		errs = append(errs, "rotation.verify_timeout: must be 1s..10m")
	}
	if r.BackoffMin < Duration(time.Second) || r.BackoffMax < r.BackoffMin {
		errs = append(errs, "rotation.backoff_min, backoff_max: need 1s <= backoff_min <= backoff_max")
	}
	if _, err := r.Table(); err != nil {
		errs = append(errs, err.Error())
	}
	return errs
}
