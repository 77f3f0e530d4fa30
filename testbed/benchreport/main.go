// Command benchreport turns `go test -bench` output into
// docs/BENCHMARKS.md: every figure as operations per second, the command
// that produced it, the machine it ran on, and side-by-side tables where
// benchmark families pair up (issuance next to the raw signature speed of
// the same key backend; Outpost next to a peer).
//
// Usage: go test -run '^$' -bench . ./... | benchreport -out docs/BENCHMARKS.md -cmd 'make bench'
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	out := flag.String("out", "docs/BENCHMARKS.md", "report to write")
	cmd := flag.String("cmd", "make bench", "command to name in the report")
	flag.Parse()
	res, env, err := parse(io.TeeReader(os.Stdin, os.Stdout))
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	if len(res) == 0 {
		fmt.Fprintln(os.Stderr, "benchreport: no benchmark results on stdin")
		os.Exit(1)
	}
	env["machine"] = machine()
	report := render(res, env, *cmd, time.Now().UTC())
	if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "benchreport: wrote %s (%d results)\n", *out, len(res))
}

// result is one benchmark line.
type result struct {
	Pkg     string
	Name    string // without the Benchmark prefix and the -GOMAXPROCS suffix
	N       int
	NsPerOp float64
	Metrics map[string]float64 // custom metrics, e.g. "sigs/s"
}

// OpsPerSec returns operations per second.
func (r result) OpsPerSec() float64 {
	if r.NsPerOp == 0 {
		return 0
	}
	return 1e9 / r.NsPerOp
}

var (
	benchLine = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+(\d+)\s+([\d.]+) ns/op(.*)$`)
	metricRE  = regexp.MustCompile(`([\d.]+) (\S+)`)
)

// parse reads go test -bench output; env collects goos/goarch/cpu lines.
func parse(r io.Reader) ([]result, map[string]string, error) {
	var res []result
	env := map[string]string{}
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, k := range []string{"goos", "goarch", "cpu", "pkg"} {
			if v, ok := strings.CutPrefix(line, k+": "); ok {
				if k == "pkg" {
					pkg = v
				} else {
					env[k] = v
				}
			}
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[3])
		ns, _ := strconv.ParseFloat(m[4], 64)
		r := result{Pkg: pkg, Name: m[1], N: n, NsPerOp: ns, Metrics: map[string]float64{}}
		for _, mm := range metricRE.FindAllStringSubmatch(m[5], -1) {
			v, _ := strconv.ParseFloat(mm[1], 64)
			r.Metrics[mm[2]] = v
		}
		res = append(res, r)
	}
	return res, env, sc.Err()
}

// latency declares a benchmark family reported as time per operation
// against a budget.
type latency struct {
	Title, Family, Note string
	BudgetMs            float64
}

var latencies = []latency{{
	Title:    "Dashboard pages: server time with the data set above",
	Family:   "UIPage",
	BudgetMs: 300,
	Note:     "Each page rendered by the control plane's handler for a logged-in admin (session lookup, token check, queries, template), against a database with the seeded certificates (OUTPOST_BENCH_CERTS, 1,000,000 in `make bench`) and 100,000 devices. `overview` reuses counts and charts computed at most 30 s earlier by the same replica; `overview_fresh` computes them in the request.",
}}

// pairing declares two benchmark families whose sub-benchmarks line up.
type pairing struct {
	Title, Left, Right, LeftCol, RightCol, Note string
}

var pairings = []pairing{
	{
		Title:    "Issuance next to raw signatures, per key backend",
		Left:     "Sign",
		Right:    "Issue",
		LeftCol:  "raw signatures/s",
		RightCol: "issuances/s",
		Note:     "An issuance is CSR parse and validation (1 signature verification) plus certificate creation (1 signature by the CA key in the backend, and the verification crypto/x509 does of its own signature). With a hardware-class backend the CA signature dominates, so issuance tracks the backend's signature rate.",
	},
	{
		Title:    "Outpost issuance next to a peer, same CA key (in memory), same CSRs",
		Left:     "PeerIssue",
		Right:    "OutpostIssue",
		LeftCol:  "peer issuances/s",
		RightCol: "Outpost issuances/s",
		Note:     "Peer: cloudflare/cfssl v1.6.5's local signer (the library behind `cfssl sign` and its API server), benchmarked in the same run from testbed/peers. Both sides take the same PEM CSRs and the same in-memory ECDSA P-256 CA key and certificate, check the CSR signature, and return a PEM certificate. Each issuance costs 2 signature verifications and 1 signature; crypto/x509.CreateCertificate's check of its own signature is one of those verifications, on both sides.",
	},
	certListingPairing(os.Getenv("OUTPOST_BENCH_CERTS")),
	{
		Title:    "Lifecycle sweep over the same data set: per-certificate loop vs set-based",
		Left:     "LoopSweep",
		Right:    "SetSweep",
		LeftCol:  "loop sweeps/s",
		RightCol: "set-based sweeps/s",
		Note:     "One sweep marks expired and about-to-expire certificates (30-day threshold, \"now\" 20 days ahead) and writes an event per transition, over every certificate of the data set above. The loop reads every certificate and updates (and records an event for) each one that changed, one statement at a time, as Lamassu IoT's daily status check does; Outpost runs one statement per transition. Both make the same transitions, give or take the few certificates that cross a boundary between the two runs (the transitions/op metric in the table below). Statuses are restored between iterations, outside the timer.",
	},
	{
		Title:    "EST enrollment in local mode next to the raw CSR-verify-plus-sign rate",
		Left:     "ESTRawIssue",
		Right:    "ESTLocalEnroll",
		LeftCol:  "raw verify+sign issuances/s",
		RightCol: "EST enrollments/s",
		Note:     "EST: 16 devices at once enroll fresh P-256 keys with the agent's EST server in local mode, authenticating with bootstrap client certificates (mutual TLS), over kept-alive connections or a new TLS connection per enrollment; the agent (its own process, file key store) parses and checks the CSR, signs with its edge CA and commits the certificate with its sync record (fsynced, group commit) before answering; the uplink is cut, and the clients run on the same 2 cores. Raw: the same CSR check and signing in process on every core, no TLS, HTTP or storage; one figure, shown on both rows.",
	},
	{
		Title:    "OCSP responses per second: openssl ocsp vs Outpost, same CA and certificates",
		Left:     "OpenSSLOCSP",
		Right:    "OutpostOCSP",
		LeftCol:  "openssl ocsp responses/s",
		RightCol: "Outpost responses/s",
		Note:     "POST requests (SHA-1 CertIDs, no nonce) cycling over 1,000 certificates of the data set's CA, one client, one request at a time. `openssl ocsp` serves an index.txt of the same certificates, signs every response with the CA key and closes the connection after each answer; Outpost serves responses pre-signed by its delegated responder. Outpost over a kept-alive connection is in the table below (OutpostOCSP/keep_alive); openssl has no keep-alive to compare it with.",
	},
}

// certListingPairing pairs the pagination benchmarks of testbed/bench.
// certs is OUTPOST_BENCH_CERTS, the table size they ran with (the same
// variable reaches both sides of the `make bench` pipe); empty means the
// benchmarks' default.
func certListingPairing(certs string) pairing {
	size := "1,000,000"
	if certs != "" {
		size = certs
		if n, err := strconv.ParseInt(certs, 0, 64); err == nil && n > 0 {
			size = groupThousands(n)
		}
	}
	return pairing{
		Title:    "Certificate listing with " + size + " certificates: page 1 vs page 10,000",
		Left:     "OffsetPage",
		Right:    "KeysetPage",
		LeftCol:  "OFFSET (Lamassu's approach) pages/s",
		RightCol: "keyset (Outpost) pages/s",
		Note:     "Pages of 50 certificates fetched per second, one query at a time, from the same table of " + size + " synthetic certificates (controlplane/internal/seed; set OUTPOST_BENCH_CERTS to change the size) in the same Postgres, in the same run. OFFSET, as Lamassu IoT pages, orders by (created_at, serial) and skips the 50*(page-1) rows before the page, so its cost grows with the page number. Keyset, as Outpost's registry pages, continues after the previous page's last (created_at, serial) through the index on those columns, so page 10,000 costs what page 1 does. Page 1 is the same query both ways, so its ratio is about 1.",
	}
}

// groupThousands formats n with commas: 1000000 -> "1,000,000".
func groupThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func render(res []result, env map[string]string, cmd string, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nGenerated by `%s` on %s (%s/%s, %s). Every figure below comes from that one run; rerun the command to refresh this file. Figures are operations per second (higher is better), computed from Go's ns/op.\n\n",
		cmd, now.Format("2006-01-02 15:04 UTC"), env["goos"], env["goarch"], orDefault(env["cpu"], "unknown CPU"))
	if m := env["machine"]; m != "" {
		fmt.Fprintf(&b, "Machine: %s.\n\n", m)
	}

	// Pairs are looked up within one package: two packages may both
	// have a BenchmarkIssue.
	byName := map[string]result{}
	for _, r := range res {
		byName[r.Pkg+" "+r.Name] = r
	}
	for _, p := range pairings {
		rows := pairRows(res, byName, p)
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(&b, "## %s\n\n%s\n\n| case | %s | %s | ratio |\n| --- | ---: | ---: | ---: |\n", p.Title, p.Note, p.LeftCol, p.RightCol)
		for _, row := range rows {
			ratio := "n/a"
			if row.left > 0 {
				ratio = fmt.Sprintf("%.2f", row.right/row.left)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", row.name, fmtOps(row.left), fmtOps(row.right), ratio)
		}
		b.WriteString("\n")
	}

	for _, l := range latencies {
		var rows []result
		for _, r := range res {
			if strings.HasPrefix(r.Name, l.Family+"/") {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(&b, "## %s\n\n%s\n\n| case | server time (ms) | within %g ms |\n| --- | ---: | --- |\n", l.Title, l.Note, l.BudgetMs)
		for _, r := range rows {
			ms := r.NsPerOp / 1e6
			ok := "yes"
			if ms > l.BudgetMs {
				ok = "**no**"
			}
			fmt.Fprintf(&b, "| %s | %.2f | %s |\n", strings.TrimPrefix(r.Name, l.Family+"/"), ms, ok)
		}
		b.WriteString("\n")
	}

	b.WriteString("## All results\n\n| package | benchmark | ops/s | ns/op | iterations | other metrics |\n| --- | --- | ---: | ---: | ---: | --- |\n")
	sorted := append([]result(nil), res...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].Pkg != sorted[j].Pkg {
			return sorted[i].Pkg < sorted[j].Pkg
		}
		return sorted[i].Name < sorted[j].Name
	})
	for _, r := range sorted {
		fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %d | %s |\n", strings.TrimPrefix(r.Pkg, "github.com/outpost-pki/outpost/"), r.Name, fmtOps(r.OpsPerSec()), r.NsPerOp, r.N, metricsOf(r))
	}
	return b.String()
}

// pairRow is one line of a side-by-side table.
type pairRow struct {
	name        string
	left, right float64 // ops/s
}

// pairRows returns a row for every sub-benchmark present in both families.
func pairRows(res []result, byName map[string]result, p pairing) []pairRow {
	var rows []pairRow
	for _, r := range res {
		sub, ok := strings.CutPrefix(r.Name, p.Right+"/")
		if !ok {
			continue
		}
		left, ok := byName[r.Pkg+" "+p.Left+"/"+sub]
		if !ok {
			continue
		}
		rows = append(rows, pairRow{name: sub, left: left.OpsPerSec(), right: r.OpsPerSec()})
	}
	return rows
}

func fmtOps(f float64) string {
	switch {
	case f >= 100:
		return strconv.FormatFloat(f, 'f', 0, 64)
	case f >= 1:
		return strconv.FormatFloat(f, 'f', 1, 64)
	default:
		return strconv.FormatFloat(f, 'f', 3, 64)
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// metricsOf lists a result's extra metrics (custom ones and -benchmem's),
// sorted by unit.
func metricsOf(r result) string {
	units := make([]string, 0, len(r.Metrics))
	for u := range r.Metrics {
		units = append(units, u)
	}
	sort.Strings(units)
	parts := make([]string, 0, len(units))
	for _, u := range units {
		parts = append(parts, strconv.FormatFloat(r.Metrics[u], 'f', -1, 64)+" "+u)
	}
	return strings.Join(parts, ", ")
}

// machine describes the host: CPU model, logical CPUs, memory (Linux
// /proc; what it cannot read it leaves out).
func machine() string {
	var parts []string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				parts = append(parts, strings.TrimSpace(v))
				break
			}
		}
	}
	parts = append(parts, fmt.Sprintf("%d logical CPUs", runtime.NumCPU()))
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64); err == nil {
					parts = append(parts, fmt.Sprintf("%.1f GiB memory", float64(kb)/(1<<20)))
				}
			}
		}
	}
	return strings.Join(parts, ", ")
}
