package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// The variables of outpost.env that loadgen reads (testbed/up writes
// them; README.md describes each).
const (
	envAPIURL        = "OUTPOST_API_URL"
	envAdminToken    = "OUTPOST_ADMIN_TOKEN"
	envESTURL        = "OUTPOST_EST_URL"
	envESTCA         = "OUTPOST_EST_CA"
	envSecretsFile   = "OUTPOST_EST_SECRETS_FILE"
	envBootstrapCert = "OUTPOST_BOOTSTRAP_CERT"
	envBootstrapKey  = "OUTPOST_BOOTSTRAP_KEY"
	envOCSPURL       = "OUTPOST_OCSP_URL"
	envDMSID         = "OUTPOST_DMS_ID"
	envBin           = "OUTPOST_BIN"
	envDatabaseURL   = "OUTPOST_DATABASE_URL"
	envAgentConfig   = "OUTPOST_AGENT_CONFIG"
	envAgentAdminURL = "OUTPOST_AGENT_ADMIN_URL"
	envControlURL    = "OUTPOST_TESTBED_CONTROL_URL"
)

// maxEnvSize caps outpost.env before reading it: the file is a few dozen
// short lines; anything much bigger is not one.
const maxEnvSize = 1 << 20

// sysEnv is the coordinates of a running testbed, from outpost.env.
type sysEnv struct {
	path string
	vars map[string]string
}

// loadEnv reads outpost.env at path.
func loadEnv(path string) (*sysEnv, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%s does not exist: is the testbed up? (testbed/up writes it)", path)
		}
		return nil, err
	}
	defer f.Close()
	vars, err := parseEnv(io.LimitReader(f, maxEnvSize))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return &sysEnv{path: path, vars: vars}, nil
}

// get returns a variable, "" if it is not set.
func (e *sysEnv) get(key string) string { return e.vars[key] }

// require checks that every key is set and not empty.
func (e *sysEnv) require(keys ...string) error {
	var missing []string
	for _, k := range keys {
		if e.vars[k] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s has no %s: was it written by testbed/up?", e.path, strings.Join(missing, ", "))
	}
	return nil
}

// parseEnv reads shell assignments as outpost-testbed writes them, one
// single-quoted value a line, a quote inside it closed, escaped and
// reopened:
//
//	OUTPOST_ADMIN_TOKEN='it'\''s'
//
// Blank lines and # comments are skipped, and an "export " prefix is
// allowed. Unquoted values are taken as they are (up to the end of the
// line).
func parseEnv(r io.Reader) (map[string]string, error) {
	vars := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxEnvSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || !validName(k) {
			return nil, fmt.Errorf("line %d: not a KEY=value assignment", n)
		}
		val, err := unquote(v)
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", n, k, err)
		}
		vars[k] = val
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return vars, nil
}

// validName reports whether k is a shell variable name.
func validName(k string) bool {
	if k == "" || (k[0] >= '0' && k[0] <= '9') {
		return false
	}
	for _, c := range k {
		if c != '_' && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// unquote undoes POSIX shell quoting of single-quoted runs and
// backslash-escaped characters (see parseEnv). Double quotes are not
// interpreted beyond being stripped around a plain value.
func unquote(s string) (string, error) {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' && !strings.ContainsAny(s[1:len(s)-1], `"\$`+"`") {
		return s[1 : len(s)-1], nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return "", fmt.Errorf("unterminated single quote")
			}
			b.WriteString(s[i+1 : i+1+end])
			i += end + 1
		case '\\':
			if i+1 == len(s) {
				return "", fmt.Errorf("trailing backslash")
			}
			b.WriteByte(s[i+1])
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
