package rotation

import (
	"fmt"
	"strconv"
	"strings"
)

// Versions are compared as dotted numbers: "10.12.3" > "10.9" and
// "2.1" == "2.1.0". Only the leading dotted numbers count: anything from
// the first other character on is ignored, so "2.1.3-rc1" and
// "2.1.3 (build 77)" compare as 2.1.3. A version that does not start with
// a number satisfies no constraint.

// maxVersionParts bounds the numbers of a version (hostile inventories).
const maxVersionParts = 16

// parseVersion returns the leading dotted numbers of s; ok is false when
// s does not start with a digit.
func parseVersion(s string) (v []uint64, ok bool) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "v"), "V")
	for len(v) < maxVersionParts {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			break
		}
		n, err := strconv.ParseUint(s[:i], 10, 64)
		if err != nil {
			n = ^uint64(0) // absurdly long numbers compare as the largest
		}
		v = append(v, n)
		s = s[i:]
		if len(s) < 2 || s[0] != '.' || s[1] < '0' || s[1] > '9' {
			break
		}
		s = s[1:]
	}
	return v, len(v) > 0
}

// compareVersions returns -1, 0 or 1; missing parts count as 0.
func compareVersions(a, b []uint64) int {
	for i := 0; i < max(len(a), len(b)); i++ {
		var x, y uint64
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
	}
	return 0
}

// versionClause is one "op version" of a constraint.
type versionClause struct {
	op string // one of < <= > >= = !=
	v  []uint64
}

// Constraint is a version constraint such as ">=2.1,<3" or "!=4.0.1":
// comma-separated clauses, each an operator (<, <=, >, >=, =, ==, !=)
// and a dotted numeric version; a version satisfies the constraint when
// it satisfies every clause.
type Constraint struct {
	text    string
	clauses []versionClause
}

// IsConstraint reports whether a match value is a version constraint
// rather than an exact string or a glob: it starts with <, >, = or !.
func IsConstraint(s string) bool {
	s = strings.TrimSpace(s)
	return s != "" && strings.ContainsRune("<>=!", rune(s[0]))
}

// ParseConstraint parses a version constraint.
func ParseConstraint(s string) (*Constraint, error) {
	c := &Constraint{text: s}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("version constraint %q: empty clause", s)
		}
		op := ""
		for _, o := range []string{"<=", ">=", "==", "!=", "<", ">", "="} {
			if strings.HasPrefix(part, o) {
				op = o
				break
			}
		}
		if op == "" {
			return nil, fmt.Errorf("version constraint %q: clause %q does not start with <, <=, >, >=, =, == or !=", s, part)
		}
		rest := strings.TrimSpace(part[len(op):])
		v, ok := parseVersion(rest)
		if !ok || !isPlainVersion(rest) {
			return nil, fmt.Errorf("version constraint %q: %q is not a dotted numeric version", s, rest)
		}
		if op == "==" {
			op = "="
		}
		c.clauses = append(c.clauses, versionClause{op: op, v: v})
	}
	return c, nil
}

// isPlainVersion: digits and single dots only, starting and ending with a
// digit (a constraint's own versions are strict).
func isPlainVersion(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	return strings.Trim(s, "0123456789.") == "" && strings.Count(s, ".") < maxVersionParts
}

// Allows reports whether version satisfies the constraint.
func (c *Constraint) Allows(version string) bool {
	v, ok := parseVersion(version)
	if !ok {
		return false
	}
	for _, cl := range c.clauses {
		r := compareVersions(v, cl.v)
		var sat bool
		switch cl.op {
		case "<":
			sat = r < 0
		case "<=":
			sat = r <= 0
		case ">":
			sat = r > 0
		case ">=":
			sat = r >= 0
		case "=":
			sat = r == 0
		case "!=":
			sat = r != 0
		}
		if !sat {
			return false
		}
	}
	return true
}

func (c *Constraint) String() string { return c.text }
