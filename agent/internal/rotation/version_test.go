package rotation

import (
	"strings"
	"testing"
)

func TestCompareVersions(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"1", "1", 0},
		{"2.1", "2.1.0", 0},
		{"10.12.3", "10.9", 1},
		{"2.1.3-rc1", "2.1.3", 0},
		{"v3.0", "3", 0},
		{"4.19.0-17-amd64", "4.19", 0},
		{"1.2", "1.10", -1},
		{"2.1 (build 7)", "2.1", 0},
		{"99999999999999999999999", "1", 1},
	} {
		t.Run(tt.a+"_"+tt.b, func(t *testing.T) {
			a, ok1 := parseVersion(tt.a)
			b, ok2 := parseVersion(tt.b)
			if !ok1 || !ok2 {
				t.Fatalf("parse: %v %v", ok1, ok2)
			}
			if got := compareVersions(a, b); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestConstraint(t *testing.T) {
	for _, tt := range []struct {
		constraint string
		version    string
		want       bool
	}{
		{">=2.1,<3", "2.1", true},
		{">=2.1,<3", "2.0.9", false},
		{">=2.1,<3", "2.99.1", true},
		{">=2.1,<3", "3", false},
		{">=2.1,<3", "3.0.0-beta", false},
		{">=2.1, <3", "2.5", true},
		{"<=1.0", "1.0.0", true},
		{"<=1.0", "1.0.1", false},
		{">1.0", "1.0.1", true},
		{">1.0", "1", false},
		{"=4.2", "4.2.0", true},
		{"==4.2", "4.2.1", false},
		{"!=4.0.1", "4.0.1", false},
		{"!=4.0.1", "4.0.2", true},
		{">=1", "", false},
		{">=1", "unknown", false},
		{"!=1", "unknown", false},
	} {
		t.Run(tt.constraint+"_"+tt.version, func(t *testing.T) {
			c, err := ParseConstraint(tt.constraint)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Allows(tt.version); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseConstraintErrors(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{">=", "not a dotted numeric version"},
		{">=2.x", "not a dotted numeric version"},
		{">=2..1", "not a dotted numeric version"},
		{">=2.1,", "empty clause"},
		{"~2.1", "does not start with"},
		{">=2.1,3", "does not start with"},
		{"=>2", "not a dotted numeric version"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			if _, err := ParseConstraint(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func FuzzConstraint(f *testing.F) {
	f.Add(">=2.1,<3", "2.5.1")
	f.Add("!=1", "v1.0-rc")
	f.Fuzz(func(t *testing.T, c, v string) {
		con, err := ParseConstraint(c)
		if err != nil {
			return
		}
		_ = con.Allows(v)
	})
}
