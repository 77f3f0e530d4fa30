package ctlcmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/outpost-pki/outpost/internal/fsutil"
)

// ConfigVersion is the version of the config file format.
//
//	1 (2026-03): url, token, ca_file.
const ConfigVersion = 1

// maxConfigSize caps the config file read: it holds three short strings,
// and the cap stops a wrong OUTPOSTCTL_CONFIG (a device, a log) from being
// read whole.
const maxConfigSize = 64 << 10

// Config is outpostctl's config file, written by 'outpostctl login' with
// mode 0600 because it holds the API token. Its path is $OUTPOSTCTL_CONFIG,
// or outpost/outpostctl.json under $XDG_CONFIG_HOME (default ~/.config).
type Config struct {
	// Version is the file format, ConfigVersion; 0 is read as 1.
	Version int `json:"version"`
	// URL is the control plane's base URL, e.g. https://cp.example:8443.
	// No default. Overridden by OUTPOST_API_URL and --url.
	URL string `json:"url"`
	// Token is the API bearer token. No default. Overridden by
	// OUTPOST_TOKEN and --token.
	Token string `json:"token"`
	// CAFile is an absolute path to the PEM CA the control plane's TLS
	// certificate chains to; empty (the default) trusts the system roots.
	// Overridden by OUTPOST_CA_FILE and --ca-file.
	CAFile string `json:"ca_file,omitempty"`
}

// Validate checks a loaded config.
func (c Config) Validate() error {
	if c.Version < 0 || c.Version > ConfigVersion {
		return fmt.Errorf("version %d is not supported (this outpostctl reads version %d)", c.Version, ConfigVersion)
	}
	return nil
}

// configPath returns where the config file lives, or "" when the
// environment does not say.
func configPath(getenv func(string) string) string {
	if p := getenv(EnvConfig); p != "" {
		return p
	}
	if d := getenv("XDG_CONFIG_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "outpost", "outpostctl.json")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "outpost", "outpostctl.json")
	}
	return ""
}

// loadConfig reads the config at path. A missing file is an empty config.
// A file others can read draws a warning on warn: it holds a token.
func loadConfig(path string, warn io.Writer) (Config, error) {
	var cfg Config
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(warn, "%s: warning: %s is readable by others (mode %04o) and holds an API token; run chmod 600 %s\n",
			appName, path, st.Mode().Perm(), path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	if len(data) > maxConfigSize {
		return cfg, fmt.Errorf("config %s is larger than %d bytes", path, maxConfigSize)
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// saveConfig writes cfg to path with mode 0600, atomically, creating the
// directory (mode 0700) if needed.
func saveConfig(path string, cfg Config) error {
	cfg.Version = ConfigVersion
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating config directory: %w", err)
	}
	if err := fsutil.WriteFile(path, append(data, '\n'), 0o600, true); err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	return nil
}
