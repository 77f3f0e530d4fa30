package agentconfig

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	none := func(string) string { return "" }
	c, err := Parse([]byte("version: 1\nkeystore: {backend: file, file: {passphrase: {value: p}}}\n"), none)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/var/lib/outpost-agent" || c.Sync.BatchSize != 200 || c.AdminAddr != "127.0.0.1:9464" {
		t.Errorf("defaults: %+v", c)
	}
	if c.EST.Listen != ":8443" || *c.EST.RatePerAddress != 50 || c.EST.BurstPerDevice != 10 || !c.EST.Enabled() || *c.EST.CRLGrace != Duration(24*time.Hour) {
		t.Errorf("EST defaults: %+v", c.EST)
	}
	c, err = Parse([]byte("version: 1\nkeystore: {backend: file, file: {passphrase: {value: p}}}\nest: {rate_per_address: 0, listen: \"off\", crl_grace: 0s}\n"), none)
	if err != nil || *c.EST.RatePerAddress != 0 || c.EST.Enabled() || *c.EST.CRLGrace != 0 {
		t.Errorf("EST rate 0, listen off and no CRL grace: %+v %v", c.EST, err)
	}
	if _, err := Parse([]byte("version: 1\nkeystore: {backend: file, file: {passphrase: {value: p}}}\nest: {crl_grace: -1h}\n"), none); err == nil || !strings.Contains(err.Error(), "est.crl_grace") {
		t.Errorf("a negative CRL grace: got %v, want an error naming est.crl_grace", err)
	}
	c, err = Parse([]byte("version: 1\nkeystore: {backend: file, file: {passphrase: {value: p}}}\n"), func(k string) string {
		return map[string]string{"OUTPOST_AGENT_DATA_DIR": "/d", "OUTPOST_BROKER_URL": "mqtts://b:8883"}[k]
	})
	if err != nil || c.DataDir != "/d" || c.Sync.BrokerURL != "mqtts://b:8883" {
		t.Errorf("env overrides: %+v %v", c, err)
	}
	for _, tt := range []struct{ doc, want string }{
		{"version: 2\nkeystore: {backend: file, file: {passphrase: {value: p}}}\n", "version: got 2"},
		{"version: 1\nkeystore: {backend: floppy}\n", `keystore.backend: "floppy"`},
		{"version: 1\nkeystore: {backend: pkcs11}\n", "module and token_label"},
		{"version: 1\nkeystore: {backend: file}\n", "passphrase: required"},
		{"version: 1\nkeystore: {backend: file, file: {passphrase: {value: p}}}\nsync: {batch_size: 9999}\n", "batch_size"},
		{"version: 1\nkeystore: {backend: file, file: {passphrase: {value: p}}}\nsync: {heartbeat: soon}\n", "not a duration"},
		{"version: 1\nbogus: 1\n", "field bogus not found"},
		{"version: 1\nkeystore: {backend: file, file: {passphrase: {value: p}}}\nest: {listen: nowhere}\n", "est.listen"},
		{"version: 1\nkeystore: {backend: file, file: {passphrase: {value: p}}}\nest: {rate_per_device: -1}\n", "must not be negative"},
		{"version: 1\nkeystore: {backend: file, file: {passphrase: {value: p}}}\nest: {retry_after: 0.5s}\n", "est.retry_after"},
	} {
		if _, err := Parse([]byte(tt.doc), none); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want %q", tt.doc, err, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("version: 1\nkeystore: {backend: file, file: {passphrase: {value: p}}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, func(string) string { return "" })
		if err == nil && c.Validate() != nil {
			t.Fatal("accepted an invalid config")
		}
	})
}

// TestExampleConfig keeps the shipped example valid.
func TestExampleConfig(t *testing.T) {
	c, err := Load("../../config.example.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	if c.Keystore.File.Passphrase.File == "" || c.EST.Listen != ":8443" || len(c.EST.Hostnames) != 2 {
		t.Errorf("example: %+v", c)
	}
}

func TestRotationConfig(t *testing.T) {
	none := func(string) string { return "" }
	base := "version: 1\nkeystore: {backend: file, file: {passphrase: {value: p}}}\n"
	c, err := Parse([]byte(base), none)
	if err != nil {
		t.Fatal(err)
	}
	if c.Rotation.Enabled() || c.Rotation.Interval.D() != time.Hour || c.Rotation.Concurrency != 4 || c.Rotation.VerifyTimeout.D() != 10*time.Second ||
		c.Rotation.BackoffMin.D() != 5*time.Minute || c.Rotation.BackoffMax.D() != 6*time.Hour {
		t.Errorf("rotation defaults: %+v", c.Rotation)
	}
	c, err = Parse([]byte(base+`rotation:
  inventory_file: /etc/outpost-agent/devices.yaml
  routes:
    - name: cams
      match: {platform: axis, os_version: ">=10.0,<12", model: "P14*"}
      hook: /usr/lib/outpost-agent/rotation/axis.sh
      args: [--user-file, /etc/outpost-agent/axis-user]
      timeout: 30s
    - hook: /usr/lib/outpost-agent/rotation/generic.sh
`), none)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := c.Rotation.Table()
	if err != nil || tbl.Len() != 2 || !c.Rotation.Enabled() {
		t.Fatalf("routes: %v %v", tbl, err)
	}
	for _, tt := range []struct{ doc, want string }{
		{"rotation: {concurrency: 100}\n", "rotation.concurrency"},
		{"rotation: {interval: 1s}\n", "rotation.interval"},
		{"rotation: {verify_timeout: 1h}\n", "rotation.verify_timeout"},
		{"rotation: {backoff_min: 1h, backoff_max: 1m}\n", "backoff_max"},
		{"rotation: {routes: [{hook: relative.sh}]}\n", `rotation.routes[0]: hook "relative.sh" must be an absolute path`},
		{"rotation: {routes: [{name: x, hook: /h, match: {os_version: '>=2.x'}}]}\n", "rotation.routes[0] (x): match.os_version"},
		{"rotation: {routes: [{hook: /h, match: {model: '[abc'}}]}\n", "match.model"},
		{"rotation: {routes: [{hook: /h, timeout: 2h}]}\n", "timeout 2h0m0s must be 1s..1h"},
		{"rotation: {routes: [{name: a, hook: /h}, {name: a, hook: /h}]}\n", `name "a" is also routes[0]'s`},
		{"rotation: {routes: [{hook: /h, matches: {}}]}\n", "field matches not found"},
	} {
		if _, err := Parse([]byte(base+tt.doc), none); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want %q", tt.doc, err, tt.want)
		}
	}
}
