package ctlcmd

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/outpost-pki/outpost/controlplane/internal/apiclient"
	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

// maxLimit is the API's largest page.
const maxLimit = 500

// listFlags are the paging flags of every list command.
type listFlags struct {
	limit  int
	cursor string
	all    bool
}

func addListFlags(fs *flag.FlagSet) *listFlags {
	l := &listFlags{}
	fs.IntVar(&l.limit, "limit", 0, "show `N` results, 1-500 (default: the server's page size, 50); with --all, fetch pages of N (default 500)")
	fs.StringVar(&l.cursor, "cursor", "", "start at `cursor`, the next_cursor of a previous page")
	fs.BoolVar(&l.all, "all", false, "walk every page, not just the first")
	return l
}

// listSpec says how to fetch and print one kind of list.
type listSpec[T any] struct {
	header []string
	row    func(T) []string
	page   func(ctx context.Context, c *apiclient.Client, cursor string, limit int) (apitypes.Page[T], error)
	all    func(ctx context.Context, c *apiclient.Client, fn func(T) error) error
}

// runList prints one page, or with --all every page, as a table or as a
// JSON page ({"items": [...], "next_cursor": ...}). With --all the items
// are streamed, so a large registry is never held in memory whole.
func runList[T any](ctx context.Context, r *run, l *listFlags, spec listSpec[T]) error {
	if l.limit < 0 || l.limit > maxLimit {
		return usageErrorf("--limit must be between 1 and %d", maxLimit)
	}
	if l.all && l.cursor != "" {
		return usageErrorf("--all starts at the first page; drop --cursor")
	}
	var opts []apiclient.Option
	if l.all && l.limit > 0 {
		opts = append(opts, apiclient.WithPageSize(l.limit))
	}
	c, err := r.client(opts...)
	if err != nil {
		return err
	}
	if !l.all {
		page, err := spec.page(ctx, c, l.cursor, l.limit)
		if err != nil {
			return err
		}
		if page.Items == nil {
			page.Items = []T{}
		}
		if r.output == "json" {
			return writeJSON(r.stdout, page)
		}
		t := newTable(r.stdout, spec.header...)
		for _, it := range page.Items {
			t.row(spec.row(it)...)
		}
		if err := t.flush(); err != nil {
			return err
		}
		if page.NextCursor != "" {
			fmt.Fprintf(r.stderr, "more results: rerun with --cursor %s, or with --all\n", clean(page.NextCursor))
		}
		return nil
	}
	if r.output == "json" {
		return streamJSON(r.stdout, func(emit func(T) error) error { return spec.all(ctx, c, emit) })
	}
	t := newTable(r.stdout, spec.header...)
	err = spec.all(ctx, c, func(it T) error {
		t.row(spec.row(it)...)
		return nil
	})
	if ferr := t.flush(); err == nil {
		err = ferr
	}
	return err
}

// streamJSON writes the items produced by walk as an indented
// {"items": [...]} document, one item at a time.
func streamJSON[T any](w io.Writer, walk func(emit func(T) error) error) error {
	n := 0
	if _, err := io.WriteString(w, "{\n  \"items\": ["); err != nil {
		return err
	}
	err := walk(func(it T) error {
		b, err := json.MarshalIndent(it, "    ", "  ")
		if err != nil {
			return err
		}
		sep := ","
		if n == 0 {
			sep = ""
		}
		n++
		_, err = fmt.Fprintf(w, "%s\n    %s", sep, b)
		return err
	})
	end := "\n  ]\n}\n"
	if n == 0 {
		end = "]\n}\n"
	}
	if _, werr := io.WriteString(w, end); err == nil {
		err = werr
	}
	return err
}
