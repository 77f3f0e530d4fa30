package cpconfig

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	good := "version: 1\ndatabase:\n  url: postgres://x@db/outpost\nkeystore:\n  file:\n    dir: /tmp/k\n    passphrase:\n      env: KP\n"
	c, err := Parse([]byte(good), getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":8443" || c.Keystore.Backend != "file" || c.Bootstrap.RootCommonName != "Outpost Root CA" ||
		c.API.RatePerIdentity == nil || *c.API.RatePerIdentity != 50 || c.API.BurstPerIdentity != 200 {
		t.Errorf("defaults not applied: %+v", c)
	}
	env["OUTPOST_DATABASE_URL"] = "postgres://y@db2/o"
	env["OUTPOST_LISTEN"] = "127.0.0.1:9000"
	c, err = Parse([]byte(good), getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Database.URL != "postgres://y@db2/o" || c.Listen != "127.0.0.1:9000" {
		t.Errorf("env overrides not applied: %+v", c)
	}
	if !c.EmbeddedBrokerOn() || c.Sync.Broker.Listen != ":8883" || !strings.HasPrefix(c.Sync.ClientID, "outpost-cp-") {
		t.Errorf("sync defaults: embedded %v, %+v", c.EmbeddedBrokerOn(), c.Sync)
	}
	env["OUTPOST_BROKER_LISTEN"] = "127.0.0.1:18883"
	env["OUTPOST_SYNC_CLIENT_ID"] = "cp-eu-1"
	c, err = Parse([]byte(good+"sync:\n  external_broker_url: mqtts://broker:8883\n"), getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.EmbeddedBrokerOn() || c.Sync.Broker.Listen != "127.0.0.1:18883" || c.Sync.ClientID != "cp-eu-1" {
		t.Errorf("external broker: embedded %v, %+v", c.EmbeddedBrokerOn(), c.Sync)
	}

	tests := []struct {
		name, doc, want string
	}{
		{"unknown field", "version: 1\nlisten_address: x\n", "field listen_address not found"},
		{"wrong version", "version: 2\ndatabase: {url: x}\nkeystore: {file: {passphrase: {value: p}}}\n", "version: got 2"},
		{"no database", "version: 1\nkeystore: {file: {passphrase: {value: p}}}\n", "database.url: required"},
		{"no passphrase", "version: 1\ndatabase: {url: x}\n", "keystore.file.passphrase: required"},
		{"bad backend", "version: 1\ndatabase: {url: x}\nkeystore: {backend: tpm}\n", `keystore.backend: "tpm"`},
		{"pkcs11 incomplete", "version: 1\ndatabase: {url: x}\nkeystore: {backend: pkcs11}\n", "module and token_label are required"},
		{"half tls", "version: 1\ndatabase: {url: x}\nkeystore: {file: {passphrase: {value: p}}}\ntls: {cert_file: a}\n", "tls: set both"},
		{"bad listen", "version: 1\nlisten: nope\ndatabase: {url: x}\nkeystore: {file: {passphrase: {value: p}}}\n", "listen:"},
		{"bad algorithm", "version: 1\ndatabase: {url: x}\nkeystore: {key_algorithm: dsa, file: {passphrase: {value: p}}}\n", "key_algorithm"},
		{"bad yaml", "version: [1\n", "config:"},
		{"plain mqtt", "version: 1\ndatabase: {url: x}\nkeystore: {file: {passphrase: {value: p}}}\nsync: {external_broker_url: \"mqtt://b:1883\"}\n", "sync.external_broker_url"},
		{"bad broker listen", "version: 1\ndatabase: {url: x}\nkeystore: {file: {passphrase: {value: p}}}\nsync: {broker: {listen: nope}}\n", "sync.broker.listen"},
		{"negative api rate", "version: 1\ndatabase: {url: x}\nkeystore: {file: {passphrase: {value: p}}}\napi: {rate_per_identity: -1}\n", "api.rate_per_identity"},
		{"negative api burst", "version: 1\ndatabase: {url: x}\nkeystore: {file: {passphrase: {value: p}}}\napi: {burst_per_identity: -5}\n", "api.burst_per_identity"},
		{"bad client id", "version: 1\ndatabase: {url: x}\nkeystore: {file: {passphrase: {value: p}}}\nsync: {client_id: \"a/b\"}\n", "sync.client_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), func(string) string { return "" })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("version: 1\ndatabase: {url: x}\nkeystore: {file: {passphrase: {value: p}}}\n"))
	f.Add([]byte("version: [1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, func(string) string { return "" })
		if err == nil && c.Validate() != nil {
			t.Fatal("Parse accepted an invalid config")
		}
	})
}

// TestExampleConfig keeps the shipped example valid.
func TestExampleConfig(t *testing.T) {
	c, err := Load("../../config.example.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	if c.API.RatePerIdentity == nil || *c.API.RatePerIdentity != 50 {
		t.Errorf("example api.rate_per_identity: %v", c.API.RatePerIdentity)
	}
	if c.Keystore.File.Passphrase.File == "" || c.AdminToken.File == "" {
		t.Errorf("example does not show secrets read from files: %+v", c)
	}
}
