package rotation

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Device is an agentless device on the gateway's LAN.
type Device struct {
	// ID is the device id: the certificate's common name, the registry's
	// device.
	ID string `yaml:"id" json:"id"`
	// Address is host:port where the device serves TLS.
	Address string `yaml:"address" json:"address"`
	// Platform, OSVersion and Model route the device (see Match).
	Platform  string `yaml:"platform" json:"platform"`
	OSVersion string `yaml:"os_version" json:"os_version"`
	Model     string `yaml:"model" json:"model"`
	// ServerName is sent as TLS SNI when the agent connects (default: the
	// address's host when it is a name).
	ServerName string `yaml:"server_name,omitempty" json:"server_name,omitempty"`
}

// Inventory limits. A gateway's LAN holds hundreds of devices, not
// millions: the caps bound memory and parse time of a damaged or hostile
// file before it is parsed.
const (
	MaxInventorySize    = 4 << 20
	MaxInventoryDevices = 20_000
	// maxField caps each string field (the sync protocol's device id
	// limit).
	maxField = 256
)

type inventoryDoc struct {
	Devices []Device `yaml:"devices" json:"devices"`
}

// ParseInventory parses an inventory: a YAML or JSON document with a list
// "devices". Unknown fields are errors. The error names every bad entry
// (its index and id).
func ParseInventory(b []byte) ([]Device, error) {
	if len(b) > MaxInventorySize {
		return nil, fmt.Errorf("inventory: %d bytes, limit %d", len(b), MaxInventorySize)
	}
	var doc inventoryDoc
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&doc); err != nil {
			return nil, fmt.Errorf("inventory (JSON): %w", err)
		}
		if dec.More() {
			return nil, errors.New("inventory (JSON): data after the document")
		}
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("inventory (YAML): %w", err)
		}
	}
	if len(doc.Devices) > MaxInventoryDevices {
		return nil, fmt.Errorf("inventory: %d devices, limit %d", len(doc.Devices), MaxInventoryDevices)
	}
	var errs []string
	seen := map[string]int{}
	for i, d := range doc.Devices {
		where := fmt.Sprintf("devices[%d]", i)
		if d.ID != "" {
			where += fmt.Sprintf(" (id %q)", d.ID)
		}
		for _, p := range d.problems() {
			errs = append(errs, where+": "+p)
		}
		if j, dup := seen[d.ID]; dup && d.ID != "" {
			errs = append(errs, fmt.Sprintf("%s: id also used by devices[%d]", where, j))
		}
		seen[d.ID] = i
	}
	if len(errs) > 0 {
		return nil, errors.New("inventory: " + strings.Join(errs, "; "))
	}
	return doc.Devices, nil
}

func (d Device) problems() []string {
	var out []string
	if d.ID == "" {
		out = append(out, "id is required")
	}
	for _, f := range []struct{ name, v string }{{"id", d.ID}, {"address", d.Address}, {"platform", d.Platform}, {"os_version", d.OSVersion}, {"model", d.Model}, {"server_name", d.ServerName}} {
		if len(f.v) > maxField {
			out = append(out, fmt.Sprintf("%s is %d bytes, limit %d", f.name, len(f.v), maxField))
		}
		if strings.IndexFunc(f.v, func(r rune) bool { return unicode.IsControl(r) || r == unicode.ReplacementChar }) >= 0 {
			out = append(out, fmt.Sprintf("%s holds control characters", f.name))
		}
		if f.v != strings.TrimSpace(f.v) {
			out = append(out, fmt.Sprintf("%s %q has leading or trailing spaces", f.name, f.v))
		}
	}
	host, port, err := net.SplitHostPort(d.Address)
	switch {
	case d.Address == "":
		out = append(out, "address is required (host:port where the device serves TLS)")
	case err != nil || host == "":
		out = append(out, fmt.Sprintf("address %q is not host:port", d.Address))
	default:
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			out = append(out, fmt.Sprintf("address %q: port must be 1..65535", d.Address))
		}
	}
	if strings.ContainsAny(d.ServerName, " /:") {
		out = append(out, fmt.Sprintf("server_name %q is not a host name", d.ServerName))
	}
	return out
}

// InventoryFile is an inventory on disk, read again when it changes (its
// size, modification time or content). Safe for concurrent use.
type InventoryFile struct {
	Path string

	mu      sync.Mutex
	loaded  bool
	size    int64
	modTime time.Time
	sum     [32]byte
	devices []Device
	gen     uint64
}

// Load returns the current devices, reading the file again if it
// changed. A file that does not exist is an empty inventory. When the
// file is unreadable or invalid, Load returns the error and keeps the
// devices it had. gen counts the changes (it starts at 1 after the first
// successful read), so a caller can tell a new inventory.
func (f *InventoryFile) Load() (devices []Device, gen uint64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Stat(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		if !f.loaded || len(f.devices) > 0 {
			f.loaded, f.devices, f.size, f.modTime, f.sum = true, nil, -1, time.Time{}, [32]byte{}
			f.gen++
		}
		return nil, f.gen, nil
	}
	if err != nil {
		return f.devices, f.gen, fmt.Errorf("inventory %s: %w", f.Path, err)
	}
	if f.loaded && fi.Size() == f.size && fi.ModTime().Equal(f.modTime) {
		return f.devices, f.gen, nil
	}
	if fi.Size() > MaxInventorySize {
		return f.devices, f.gen, fmt.Errorf("inventory %s: %d bytes, limit %d", f.Path, fi.Size(), MaxInventorySize)
	}
	fh, err := os.Open(f.Path)
	if err != nil {
		return f.devices, f.gen, fmt.Errorf("inventory %s: %w", f.Path, err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, MaxInventorySize+1))
	if err != nil {
		return f.devices, f.gen, fmt.Errorf("inventory %s: %w", f.Path, err)
	}
	sum := sha256.Sum256(b)
	if f.loaded && sum == f.sum {
		f.size, f.modTime = fi.Size(), fi.ModTime()
		return f.devices, f.gen, nil
	}
	devs, err := ParseInventory(b)
	if err != nil {
		return f.devices, f.gen, fmt.Errorf("%s: %w", f.Path, err)
	}
	f.loaded, f.size, f.modTime, f.sum, f.devices = true, fi.Size(), fi.ModTime(), sum, devs
	f.gen++
	return devs, f.gen, nil
}
