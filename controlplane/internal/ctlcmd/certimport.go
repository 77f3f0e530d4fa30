package ctlcmd

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apiclient"
	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

type importOptions struct {
	deviceID, dmsID string
	parallel        int
}

// certExtensions are the file name endings a directory walk picks up.
// Files named on the command line are read whatever their name.
var certExtensions = []string{".pem", ".crt", ".cer"}

// importCounts are the totals of a bulk import. A certificate already
// recorded (409) is skipped, not failed; an unreadable file, a file
// without certificates and a certificate that does not parse each count
// as one failure.
type importCounts struct {
	filesDone, files          int
	imported, skipped, failed int
}

// importer runs a bulk import; its methods are safe for concurrent use.
type importer struct {
	client *apiclient.Client
	opts   importOptions
	stderr io.Writer

	mu     sync.Mutex
	counts importCounts
	prog   *progress
}

// importCertificates records every PEM certificate in paths (files, and
// directories walked recursively), file by file with opts.parallel
// workers. It goes on past failures, prints a summary line on stdout and
// a progress bar on stderr when stderr is a terminal, and fails if
// anything failed.
func importCertificates(ctx context.Context, r *run, paths []string, opts importOptions) error {
	c, err := r.client()
	if err != nil {
		return err
	}
	files, walkErrs := collectFiles(paths)
	im := &importer{
		client: c,
		opts:   opts,
		stderr: r.stderr,
		counts: importCounts{files: len(files)},
		prog:   &progress{w: r.stderr, enabled: r.env.isTerminal(r.stderr), now: r.env.now},
	}
	for _, e := range walkErrs {
		im.fail(e.path, 0, e.err)
	}

	jobs := make(chan string)
	var wg sync.WaitGroup
	for range opts.parallel {
		wg.Go(func() {
			for f := range jobs {
				im.importFile(ctx, f)
			}
		})
	}
feed:
	for _, f := range files {
		select {
		case jobs <- f:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()

	im.mu.Lock()
	n := im.counts
	im.prog.finish(n)
	im.mu.Unlock()
	fmt.Fprintf(r.stdout, "imported %d, skipped %d already present, failed %d\n", n.imported, n.skipped, n.failed)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted after %d of %d files: %w", n.filesDone, n.files, err)
	}
	if n.failed > 0 {
		return fmt.Errorf("%d failed (see above)", n.failed)
	}
	return nil
}

// importFile imports the certificates of one file.
func (im *importer) importFile(ctx context.Context, path string) {
	defer im.fileDone()
	data, err := readFileCapped(path, maxCertFileSize)
	if err != nil {
		im.fail(path, 0, err)
		return
	}
	n := 0
	for rest := data; ctx.Err() == nil; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue // keys or CSRs kept next to certificates are not ours
		}
		n++
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			im.fail(path, n, err)
			continue
		}
		_, err := im.client.ImportCertificate(ctx, apitypes.ImportCertificateRequest{
			CertificatePEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes})),
			DeviceID:       im.opts.deviceID,
			DMSID:          im.opts.dmsID,
		})
		switch {
		case err == nil:
			im.add(func(c *importCounts) { c.imported++ })
		case apiclient.IsConflict(err):
			im.add(func(c *importCounts) { c.skipped++ })
		default:
			im.fail(path, n, err)
		}
	}
	if n == 0 && ctx.Err() == nil {
		im.fail(path, 0, errors.New("no PEM certificate found"))
	}
}

func (im *importer) add(f func(*importCounts)) {
	im.mu.Lock()
	defer im.mu.Unlock()
	f(&im.counts)
	im.prog.update(im.counts, false)
}

func (im *importer) fileDone() {
	im.add(func(c *importCounts) { c.filesDone++ })
}

// fail counts a failure and reports it on stderr; n is the certificate's
// position in its file, 0 when the failure is the file's.
func (im *importer) fail(path string, n int, err error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.counts.failed++
	im.prog.clear()
	what := path
	if n > 0 {
		what = fmt.Sprintf("%s: certificate %d", path, n)
	}
	fmt.Fprintf(im.stderr, "%s: %s\n", clean(what), describe(err))
	im.prog.update(im.counts, true)
}

// describe formats an error for a per-item report: API problems as
// "title: detail".
func describe(err error) string {
	var apiErr *apiclient.Error
	if errors.As(err, &apiErr) {
		return apiFailure{apiErr}.Error()
	}
	return clean(err.Error())
}

type pathError struct {
	path string
	err  error
}

// collectFiles expands paths into the files to import: files as given,
// directories walked recursively for certExtensions (symbolic links to
// directories are not followed). Paths that cannot be read are returned
// as errors, so the import can go on without them.
func collectFiles(paths []string) ([]string, []pathError) {
	var files []string
	var errs []pathError
	seen := map[string]bool{}
	add := func(p string) {
		if c := filepath.Clean(p); !seen[c] {
			seen[c] = true
			files = append(files, p)
		}
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			errs = append(errs, pathError{p, err})
			continue
		}
		if !st.IsDir() {
			add(p)
			continue
		}
		filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				errs = append(errs, pathError{path, err})
				return nil
			}
			if d.IsDir() || !hasCertExtension(path) {
				return nil
			}
			if d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0 {
				add(path)
			}
			return nil
		})
	}
	return files, errs
}

func hasCertExtension(path string) bool {
	ext := strings.ToLower(filepath.Ext(path))
	for _, e := range certExtensions {
		if ext == e {
			return true
		}
	}
	return false
}

// progress draws a one-line progress bar on a terminal, redrawn in place
// with a carriage return at most every progressInterval. Its methods are
// called with the importer's lock held.
type progress struct {
	w       io.Writer
	enabled bool
	now     func() time.Time
	last    time.Time
	drawn   bool
}

const progressInterval = 100 * time.Millisecond

func (p *progress) update(c importCounts, force bool) {
	if !p.enabled {
		return
	}
	now := p.now()
	if !force && p.drawn && now.Sub(p.last) < progressInterval && c.filesDone < c.files {
		return
	}
	p.last = now
	p.drawn = true
	fmt.Fprint(p.w, "\r\033[K"+progressLine(c, 30))
}

// clear erases the bar so that a message can be printed on its line.
func (p *progress) clear() {
	if p.enabled && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// finish draws the final state and ends the line.
func (p *progress) finish(c importCounts) {
	if !p.enabled {
		return
	}
	p.update(c, true)
	fmt.Fprintln(p.w)
}

// progressLine renders e.g.
// "[===============>              ] 12/24 files  imported 30  skipped 2  failed 1".
func progressLine(c importCounts, width int) string {
	filled := width
	if c.files > 0 {
		filled = c.filesDone * width / c.files
	}
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	return fmt.Sprintf("[%s] %d/%d files  imported %d  skipped %d  failed %d",
		bar, c.filesDone, c.files, c.imported, c.skipped, c.failed)
}
