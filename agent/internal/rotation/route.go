package rotation

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Match selects devices by platform, OS version and model. An empty field
// matches anything; otherwise a value is an exact string or a glob
// (path.Match: *, ?, [a-z]); os_version may also be a version constraint
// (see [Constraint]) when it starts with <, >, = or !.
type Match struct {
	Platform  string
	OSVersion string
	Model     string
}

// Route sends the devices it matches to a hook.
type Route struct {
	// Name identifies the route in events and logs (default "route-<n>",
	// its position from 1).
	Name  string
	Match Match
	// Hook is the absolute path of the executable; Args its arguments
	// (never secrets: argv is visible to every local user).
	Hook string
	Args []string
	// Label is the EST label whose CA and profile sign (default: the
	// policy's default, as for /.well-known/est/).
	Label string
	// Timeout bounds each hook run and the wait for a signature (queued
	// and online modes). Default 2m.
	Timeout time.Duration
	// RenewBefore: rotate when the device's certificate has less than
	// this left; 0 means a third of its lifetime.
	RenewBefore time.Duration
}

// DefaultHookTimeout is a route's timeout when none is set.
const DefaultHookTimeout = 2 * time.Minute

// Table is an ordered, compiled list of routes: the first match wins.
// It is immutable and safe for concurrent use.
type Table struct {
	routes []compiledRoute
}

type compiledRoute struct {
	Route
	osConstraint *Constraint
}

// NewTable checks and compiles routes; the error names every bad route.
func NewTable(routes []Route) (*Table, error) {
	t := &Table{}
	var errs []error
	names := map[string]int{}
	for i, r := range routes {
		where := fmt.Sprintf("rotation.routes[%d]", i)
		if r.Name == "" {
			r.Name = fmt.Sprintf("route-%d", i+1)
		} else {
			where += fmt.Sprintf(" (%s)", r.Name)
		}
		if j, dup := names[r.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: name %q is also routes[%d]'s", where, r.Name, j))
		}
		names[r.Name] = i
		if r.Timeout == 0 {
			r.Timeout = DefaultHookTimeout
		}
		cr := compiledRoute{Route: r}
		if r.Hook == "" || !filepath.IsAbs(r.Hook) {
			errs = append(errs, fmt.Errorf("%s: hook %q must be an absolute path", where, r.Hook))
		}
		if r.Timeout < time.Second || r.Timeout > time.Hour {
			errs = append(errs, fmt.Errorf("%s: timeout %v must be 1s..1h", where, r.Timeout))
		}
		if r.RenewBefore < 0 {
			errs = append(errs, fmt.Errorf("%s: renew_before must not be negative", where))
		}
		for field, v := range map[string]string{"platform": r.Match.Platform, "model": r.Match.Model, "os_version": r.Match.OSVersion} {
			if field == "os_version" && IsConstraint(v) {
				c, err := ParseConstraint(v)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: match.os_version: %w", where, err))
				}
				cr.osConstraint = c
				continue
			}
			if _, err := path.Match(v, ""); err != nil {
				errs = append(errs, fmt.Errorf("%s: match.%s %q is not a valid glob: %w", where, field, v, err))
			}
		}
		t.routes = append(t.routes, cr)
	}
	if len(errs) > 0 {
		return nil, sortedJoin(errs)
	}
	return t, nil
}

// sortedJoin joins errors in a stable order (map iteration above).
func sortedJoin(errs []error) error {
	s := make([]string, len(errs))
	for i, e := range errs {
		s[i] = e.Error()
	}
	slices.Sort(s)
	return errors.New(strings.Join(s, "; "))
}

// Lookup returns the first route matching d.
func (t *Table) Lookup(d Device) (Route, bool) {
	if t == nil {
		return Route{}, false
	}
	for _, r := range t.routes {
		if r.matches(d) {
			return r.Route, true
		}
	}
	return Route{}, false
}

// Len is the number of routes.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.routes)
}

func (r *compiledRoute) matches(d Device) bool {
	if !globMatch(r.Match.Platform, d.Platform) || !globMatch(r.Match.Model, d.Model) {
		return false
	}
	if r.osConstraint != nil {
		return r.osConstraint.Allows(d.OSVersion)
	}
	return globMatch(r.Match.OSVersion, d.OSVersion)
}

// globMatch: empty pattern matches anything; otherwise path.Match (an
// exact string is a glob without metacharacters).
func globMatch(pattern, s string) bool {
	if pattern == "" {
		return true
	}
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}
