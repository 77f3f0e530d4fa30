package est

import (
	"strings"
	"testing"
)

// FuzzParsePath checks that ParsePath never panics and that what it
// accepts is exactly what its documentation allows: the input is
// PathPrefix, an optional label of 1 to MaxLabelLen characters from
// [A-Za-z0-9._-] other than "." and "..", a slash, one of the operations,
// and at most one trailing slash; so re-assembling label and op gives the
// input back.
func FuzzParsePath(f *testing.F) {
	for _, p := range []string{
		"/.well-known/est/cacerts", "/.well-known/est/cacerts/", "/.well-known/est/csrattrs",
		"/.well-known/est/simpleenroll", "/.well-known/est/simplereenroll", "/.well-known/est/serverkeygen",
		"/.well-known/est/edge-1/simpleenroll", "/.well-known/est/line_1.a/cacerts/",
		"/.well-known/est/" + strings.Repeat("a", MaxLabelLen) + "/cacerts",
		"/.well-known/est/" + strings.Repeat("a", MaxLabelLen+1) + "/cacerts",
		"/.well-known/est/../cacerts", "/.well-known/est/./cacerts", "/.well-known/est//cacerts",
		"/.well-known/est/cacerts//", "/.well-known/est/a/b/cacerts", "/.well-known/est/fullcmc",
		"/.well-known/est/CACERTS", "/.well-known/est/", "/.well-known/est", "/.well-known/est/a%2Fb/cacerts",
		"/.well-known/est/l\u00e9/cacerts", "/.well-known/est/a b/cacerts", "/.WELL-KNOWN/est/cacerts", "",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		label, op, ok := ParsePath(p)
		if !ok {
			if label != "" || op != "" {
				t.Fatalf("ParsePath(%q) = %q, %q, false: want empty results", p, label, op)
			}
			return
		}
		if !isOp(op) {
			t.Fatalf("ParsePath(%q): op %q is not an operation", p, op)
		}
		want := PathPrefix + op
		if label != "" {
			if !validLabel(label) || len(label) > MaxLabelLen || label == "." || label == ".." {
				t.Fatalf("ParsePath(%q): label %q is not a valid label", p, label)
			}
			for _, c := range label {
				if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", c) {
					t.Fatalf("ParsePath(%q): label %q holds %q", p, label, c)
				}
			}
			want = PathPrefix + label + "/" + op
		}
		if p != want && p != want+"/" {
			t.Fatalf("ParsePath(%q) = %q, %q: re-assembled %q", p, label, op, want)
		}
	})
}
