package device

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/keystore"
)

func TestRenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(90 * 24 * time.Hour)
	for _, tt := range []struct {
		name          string
		percent, days int
		want          time.Time
	}{
		{"a third", 33, 0, na.Add(-time.Duration(int64(90*24*time.Hour) / 100 * 33))},
		{"days win when wider", 33, 60, na.Add(-60 * 24 * time.Hour)},
		{"percent wins when wider", 50, 10, na.Add(-45 * 24 * time.Hour)},
		{"never before expiry", 0, 0, na},
		{"always", 100, 0, nb},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := RenewAt(nb, na, tt.percent, tt.days); !got.Equal(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if Due(na.Add(-31*24*time.Hour), nb, na, 33, 0) {
		t.Errorf("due 31 days before expiry with a 33%% window of 90 days")
	}
	if !Due(na.Add(-29*24*time.Hour), nb, na, 33, 0) {
		t.Errorf("not due 29 days before expiry with a 33%% window of 90 days")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "enroll.conf")
	body := "# comment\n\nOUTPOST_CONFIG_VERSION=1\nOUTPOST_EST_URL = \"https://file/.well-known/est\"\nOUTPOST_KEY='/k'\nOUTPOST_RENEW_DAYS=7\nOUTPOST_KEY_TYPE=ec-p384\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"OUTPOST_EST_URL": "https://env/.well-known/est", "OUTPOST_CERT": "/env.pem", "HOME": "/root"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c, err := Load(conf, lookup, map[string]string{"OUTPOST_CERT": "/flag.pem"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, got, want string }{
		{"env over file", c.ESTURL, "https://env/.well-known/est"},
		{"file over default", c.Key, "/k"},
		{"flag over env", c.Cert, "/flag.pem"},
		{"key type", string(c.KeyType), string(keystore.ECDSAP384)},
		{"tpm dir default", c.TPMDir, "/k.tpm"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	if c.RenewDays != 7 || c.RenewPercent != 33 || c.MaxWait != 300*time.Second || c.Timeout != time.Minute {
		t.Errorf("numbers: got %+v", c)
	}

	for _, tt := range []struct{ name, body, want string }{
		{"unknown name", "OUTPOST_EST_URLS=x\n", "unknown setting"},
		{"no equals", "OUTPOST_EST_URL\n", "want KEY=value"},
		{"version", "OUTPOST_CONFIG_VERSION=2\n", "not supported"},
		{"percent", "OUTPOST_RENEW_PERCENT=101\n", "OUTPOST_RENEW_PERCENT"},
		{"key type", "OUTPOST_KEY_TYPE=ed25519\n", "OUTPOST_KEY_TYPE"},
		{"rekey", "OUTPOST_REKEY=yes\n", "OUTPOST_REKEY"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c")
			if err := os.WriteFile(p, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p, nil, nil)
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want a ConfigError about %q", err, tt.want)
			}
			if ExitCode(err) != ExitConfig {
				t.Errorf("exit code %d, want %d", ExitCode(err), ExitConfig)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := func() *Config {
		c, err := Load("", func(k string) (string, bool) {
			v, ok := map[string]string{"OUTPOST_EST_URL": "https://gw:8443/.well-known/est", "OUTPOST_EST_CA": ca}[k]
			return v, ok
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tt := range []struct {
		name string
		mod  func(*Config)
	}{
		{"http", func(c *Config) { c.ESTURL = "http://gw/.well-known/est" }},
		{"query", func(c *Config) { c.ESTURL += "?x=1" }},
		{"no ca", func(c *Config) { c.ESTCA = "" }},
		{"missing ca", func(c *Config) { c.ESTCA += ".missing" }},
		{"half bootstrap", func(c *Config) { c.BootstrapCert = ca }},
		{"two tpms", func(c *Config) { c.TPMDevice, c.SwtpmAddr = "/dev/tpmrm0", "127.0.0.1:1" }},
		{"bad swtpm", func(c *Config) { c.SwtpmAddr = "nohost" }},
		{"device id", func(c *Config) { c.DeviceID = "a/b" }},
		{"san", func(c *Config) { c.SAN = "IP:not-an-ip" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := good()
			tt.mod(c)
			var ce *ConfigError
			if err := c.Validate(); !errors.As(err, &ce) {
				t.Errorf("got %v, want a ConfigError", err)
			}
		})
	}
}

func TestParseSAN(t *testing.T) {
	san, err := ParseSAN("DNS:cam-1.local, IP:10.0.0.7,URI:urn://dev/1,email:ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(san.DNS) != 1 || san.DNS[0] != "cam-1.local" || len(san.IPs) != 1 || san.IPs[0].String() != "10.0.0.7" ||
		len(san.URIs) != 1 || san.URIs[0].String() != "urn://dev/1" || len(san.Emails) != 1 {
		t.Errorf("got %+v", san)
	}
	for _, bad := range []string{"cam-1.local", "RID:1.2.3", "DNS:"} {
		if _, err := ParseSAN(bad); err == nil {
			t.Errorf("ParseSAN(%q): no error", bad)
		}
	}
}

func TestExitCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{configErr("x"), ExitConfig},
		{fail(ExitPending, "x"), ExitPending},
		{errors.New("other"), ExitLocal},
	} {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v): got %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.lock")
	unlock, err := lock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock(path); ExitCode(err) != ExitTemp {
		t.Errorf("second lock: got %v, want exit %d", err, ExitTemp)
	}
	unlock()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	// pid 1 is alive, but the lock is from another boot: stale.
	if err := os.WriteFile(filepath.Join(path, "pid"), []byte("1 another-boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unlock, err = lock(path)
	if err != nil {
		t.Fatalf("stale lock: %v", err)
	}
	unlock()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("lock left after unlock: %v", err)
	}
}
