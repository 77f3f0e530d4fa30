package est

import (
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	long := strings.Repeat("a", MaxLabelLen)
	tests := []struct {
		path      string
		wantLabel string
		wantOp    string
		wantOK    bool
	}{
		{"/.well-known/est/cacerts", "", "cacerts", true},
		{"/.well-known/est/simpleenroll", "", "simpleenroll", true},
		{"/.well-known/est/simplereenroll", "", "simplereenroll", true},
		{"/.well-known/est/csrattrs", "", "csrattrs", true},
		{"/.well-known/est/serverkeygen", "", "serverkeygen", true},
		{"/.well-known/est/cacerts/", "", "cacerts", true},
		{"/.well-known/est/edge-1/simpleenroll", "edge-1", "simpleenroll", true},
		{"/.well-known/est/Edge_1.site-A/cacerts/", "Edge_1.site-A", "cacerts", true},
		{"/.well-known/est/" + long + "/csrattrs", long, "csrattrs", true},
		{"/.well-known/est/cacerts/cacerts", "cacerts", "cacerts", true},

		{"", "", "", false},
		{"/", "", "", false},
		{"/.well-known/est", "", "", false},
		{"/.well-known/est/", "", "", false},
		{"/.well-known/est//", "", "", false},
		{"/.well-known/est/fullcmc", "", "", false},
		{"/.well-known/est/CACerts", "", "", false},
		{"/.well-known/est/unknown", "", "", false},
		{"/.well-known/est/label/unknown", "", "", false},
		{"/.well-known/est//cacerts", "", "", false},
		{"/.well-known/est/cacerts//", "", "", false},
		{"/.well-known/est/a/b/cacerts", "", "", false},
		{"/.well-known/est/" + long + "a/cacerts", "", "", false},
		{"/.well-known/est/la bel/cacerts", "", "", false},
		{"/.well-known/est/la%2fbel/cacerts", "", "", false},
		{"/.well-known/est/läbel/cacerts", "", "", false},
		{"/.well-known/est/./cacerts", "", "", false},
		{"/.well-known/est/../cacerts", "", "", false},
		{"/.well-known/EST/cacerts", "", "", false},
		{".well-known/est/cacerts", "", "", false},
		{"/x/.well-known/est/cacerts", "", "", false},
		{"/.well-known/est/cacerts?x=1", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			label, op, ok := ParsePath(tt.path)
			if label != tt.wantLabel || op != tt.wantOp || ok != tt.wantOK {
				t.Errorf("got %q, %q, %v, want %q, %q, %v", label, op, ok, tt.wantLabel, tt.wantOp, tt.wantOK)
			}
		})
	}
}
