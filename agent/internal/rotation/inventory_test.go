package rotation

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseInventory(t *testing.T) {
	yamlDoc := `devices:
  - id: cam-17
    address: 10.20.0.51:443
    platform: axis
    os_version: 10.12.3
    model: P1448-LE
    server_name: cam-17.local
  - {id: ups-1, address: "[fd00::5]:8443", platform: apc}
`
	devs, err := ParseInventory([]byte(yamlDoc))
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].ServerName != "cam-17.local" || devs[0].OSVersion != "10.12.3" || devs[1].Address != "[fd00::5]:8443" {
		t.Errorf("got %+v", devs)
	}
	jsonDoc := `{"devices": [{"id": "cam-17", "address": "cam-17.lan:443", "platform": "axis", "os_version": "10.12.3", "model": "P1448-LE"}]}`
	devs, err = ParseInventory([]byte(jsonDoc))
	if err != nil || len(devs) != 1 || devs[0].Model != "P1448-LE" {
		t.Errorf("JSON: got %+v, %v", devs, err)
	}
	if devs, err := ParseInventory(nil); err != nil || len(devs) != 0 {
		t.Errorf("empty: got %v, %v", devs, err)
	}
}

func TestParseInventoryErrors(t *testing.T) {
	for _, tt := range []struct{ name, doc, want string }{
		{"no id", "devices: [{address: a:1}]", "devices[0]: id is required"},
		{"no address", "devices: [{id: a}]", `devices[0] (id "a"): address is required`},
		{"not host:port", "devices: [{id: a, address: nohost}]", `devices[0] (id "a"): address "nohost" is not host:port`},
		{"bad port", "devices: [{id: a, address: 'h:99999'}]", "port must be 1..65535"},
		{"duplicate", "devices: [{id: a, address: 'h:1'}, {id: a, address: 'h:2'}]", `devices[1] (id "a"): id also used by devices[0]`},
		{"unknown field YAML", "devices: [{id: a, address: 'h:1', ip: x}]", "field ip not found"},
		{"unknown field JSON", `{"devices": [{"id": "a", "address": "h:1", "ip": "x"}]}`, `unknown field "ip"`},
		{"control characters", "devices: [{id: \"a\\tb\", address: 'h:1'}]", "id holds control characters"},
		{"spaces", "devices: [{id: ' a', address: 'h:1'}]", "leading or trailing spaces"},
		{"server name", "devices: [{id: a, address: 'h:1', server_name: 'x/y'}]", "server_name"},
		{"long id", "devices: [{id: " + strings.Repeat("x", 300) + ", address: 'h:1'}]", "id is 300 bytes"},
		{"not a list", "devices: 3", "inventory (YAML)"},
		{"trailing JSON", `{"devices": []} {}`, "data after the document"},
		{"too large", strings.Repeat(" ", MaxInventorySize+1), "limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseInventory([]byte(tt.doc)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func FuzzParseInventory(f *testing.F) {
	f.Add([]byte("devices: [{id: a, address: 'h:1', platform: p}]"))
	f.Add([]byte(`{"devices": [{"id": "a", "address": "h:1"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		devs, err := ParseInventory(b)
		if err != nil {
			return
		}
		for _, d := range devs {
			if len(d.problems()) > 0 {
				t.Fatalf("accepted a bad device %+v", d)
			}
		}
	})
}

func TestInventoryFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "devices.yaml")
	f := &InventoryFile{Path: path}
	devs, gen, err := f.Load()
	if err != nil || len(devs) != 0 {
		t.Fatalf("missing file: got %v, %v", devs, err)
	}
	write := func(doc string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	write("devices: [{id: a, address: 'h:1'}]", t0)
	devs, gen2, err := f.Load()
	if err != nil || len(devs) != 1 || gen2 == gen {
		t.Fatalf("first read: got %v gen %d, %v", devs, gen2, err)
	}
	if _, gen3, _ := f.Load(); gen3 != gen2 {
		t.Errorf("unchanged file: generation %d, want %d", gen3, gen2)
	}
	write("devices: [{id: a, address: 'h:1'}, {id: b, address: 'h:2'}]", t0.Add(time.Second))
	devs, gen4, err := f.Load()
	if err != nil || len(devs) != 2 || gen4 == gen2 {
		t.Fatalf("changed file: got %v gen %d, %v", devs, gen4, err)
	}
	write("devices: [{id: a}]", t0.Add(2*time.Second))
	devs, gen5, err := f.Load()
	if err == nil || !strings.Contains(err.Error(), "address is required") || len(devs) != 2 || gen5 != gen4 {
		t.Errorf("bad file: got %v gen %d, %v; want the previous devices and an error", devs, gen5, err)
	}
	// Same size and time, other content, still read after an error.
	write("devices: [{id: c, address: 'h:3'}]", t0.Add(3*time.Second))
	if devs, _, err := f.Load(); err != nil || len(devs) != 1 || devs[0].ID != "c" {
		t.Errorf("fixed file: got %v, %v", devs, err)
	}
}
