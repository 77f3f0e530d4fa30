package ctlcmd

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// table prints aligned columns with a header row in capitals.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	caps := make([]string, len(header))
	for i, h := range header {
		caps[i] = strings.ToUpper(h)
	}
	t.row(caps...)
	return t
}

// row adds a row; cells are cleaned of control characters, empty ones
// shown as "-".
func (t *table) row(cells ...string) {
	for i, c := range cells {
		c = clean(c)
		if c == "" {
			c = "-"
		}
		cells[i] = c
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// fields prints a detail view: one "KEY  value" line per field.
func fields(w io.Writer, kv ...string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		v := clean(kv[i+1])
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\n", strings.ToUpper(kv[i]), v)
	}
	return tw.Flush()
}

// clean makes server-supplied text safe for a table cell on a terminal:
// tabs and newlines would break the columns, escape sequences could
// rewrite the screen.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// fmtTime formats a time as RFC 3339 UTC, "" for the zero time.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return fmtTime(*t)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// fmtMap formats labels or event details as sorted k=v pairs.
func fmtMap[V any](m map[string]V) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := any(m[k])
		switch x := v.(type) {
		case string:
			parts = append(parts, k+"="+x)
		default:
			b, err := json.Marshal(x)
			if err != nil {
				b = []byte(fmt.Sprint(x))
			}
			parts = append(parts, k+"="+string(b))
		}
	}
	return strings.Join(parts, " ")
}

// writeJSON prints v indented.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// show prints v as JSON or, for -o table, with the table function.
func (r *run) show(v any, tableFn func(w io.Writer) error) error {
	if r.output == "json" {
		return writeJSON(r.stdout, v)
	}
	return tableFn(r.stdout)
}

// shortHash abbreviates a hash for a table.
func shortHash(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return h
}
