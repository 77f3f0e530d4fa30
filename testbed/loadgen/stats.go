package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome names shared by the modes. A failure's outcome is its reason.
const (
	outcomeOK        = "ok"
	outcomeTransport = "transport"
	outcomeTimeout   = "timeout"
)

// recorder collects the outcomes and latencies of one run's operations.
// It is safe for concurrent use.
type recorder struct {
	start time.Time

	done, ok, failed atomic.Int64

	mu       sync.Mutex
	lat      []time.Duration
	outcomes map[string]int
	samples  map[string]string // first error message per outcome
	retries  map[string]int
}

func newRecorder(now time.Time) *recorder {
	return &recorder{start: now, outcomes: map[string]int{}, samples: map[string]string{}, retries: map[string]int{}}
}

// record counts one finished operation. ok says whether it succeeded;
// lat, if positive, is its latency; err, if not nil, is kept as the
// example of its outcome when it is the first.
func (r *recorder) record(outcome string, ok bool, lat time.Duration, err error) {
	r.done.Add(1)
	if ok {
		r.ok.Add(1)
	} else {
		r.failed.Add(1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outcomes[outcome]++
	if lat > 0 {
		r.lat = append(r.lat, lat)
	}
	if err != nil {
		if _, seen := r.samples[outcome]; !seen {
			r.samples[outcome] = err.Error()
		}
	}
}

// retry counts one retried request, by why (e.g. "202", "429").
func (r *recorder) retry(why string) {
	r.mu.Lock()
	r.retries[why]++
	r.mu.Unlock()
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// percentile returns the q-th quantile (0 < q <= 1) of sorted by the
// nearest-rank method: the smallest value with at least q of the values
// at or below it. It returns 0 for no values.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// latencyOf summarises durations (in any order; the slice is sorted in
// place).
func latencyOf(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	ms := func(v time.Duration) float64 { return math.Round(float64(v)/float64(time.Microsecond)) / 1000 }
	return Latency{P50: ms(percentile(d, 0.50)), P90: ms(percentile(d, 0.90)), P99: ms(percentile(d, 0.99)), Max: ms(d[len(d)-1]),
		Mean: ms(sum / time.Duration(len(d)))}
}

// Summary is what a run reports at the end (and, with --json, prints on
// stdout).
type Summary struct {
	Mode string `json:"mode"`
	// Settings are the run's flags that matter for its figures.
	Settings map[string]any `json:"settings"`
	// Requested is -n (0: as many as --duration allows); Done the
	// operations that finished, OK and Failed their split.
	Requested int `json:"requested"`
	Done      int `json:"done"`
	OK        int `json:"ok"`
	Failed    int `json:"failed"`
	// Outcomes counts every finished operation by outcome: "ok" or a
	// failure reason (est), or the OCSP answer (ocsp).
	Outcomes map[string]int `json:"outcomes"`
	// Errors is the first error message of each failure reason.
	Errors map[string]string `json:"errors,omitempty"`
	// Retries counts requests sent again: "202" (Retry-After on a queued
	// enrollment) and "429" (rate limited).
	Retries map[string]int `json:"retries,omitempty"`
	// ElapsedSec is the load phase's wall time; Throughput Done per
	// second of it.
	ElapsedSec float64 `json:"elapsed_s"`
	Throughput float64 `json:"throughput_per_s"`
	// Latency is over successful operations (est: from the first request
	// to the certificate, Retry-After waits included) or over every
	// answered query (ocsp).
	Latency Latency `json:"latency_ms"`
	// Interrupted is set when Ctrl-C (or a deadline) ended the run early:
	// the figures are partial.
	Interrupted bool `json:"interrupted,omitempty"`
	// Backlog is the sync-backlog mode's drain measurement.
	Backlog *Backlog `json:"sync_backlog,omitempty"`
	// Notes are remarks for the reader (e.g. why a status dominates).
	Notes []string `json:"notes,omitempty"`
}

// summary builds the Summary of what r recorded until end.
func (r *recorder) summary(mode string, requested int, end time.Time) *Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	elapsed := end.Sub(r.start)
	s := &Summary{Mode: mode, Settings: map[string]any{}, Requested: requested, Done: int(r.done.Load()), OK: int(r.ok.Load()), Failed: int(r.failed.Load()),
		Outcomes: maps.Clone(r.outcomes), ElapsedSec: round3(elapsed.Seconds()), Latency: latencyOf(slices.Clone(r.lat))}
	if len(r.samples) > 0 {
		s.Errors = maps.Clone(r.samples)
	}
	if len(r.retries) > 0 {
		s.Retries = maps.Clone(r.retries)
	}
	if elapsed > 0 {
		s.Throughput = round3(float64(s.Done) / elapsed.Seconds())
	}
	return s
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// writeJSON prints s as indented JSON.
func (s *Summary) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// writeText prints s for a person.
func (s *Summary) writeText(w io.Writer) {
	var b strings.Builder
	title := "loadgen " + s.Mode
	if s.Interrupted {
		title += " (interrupted: partial figures)"
	}
	fmt.Fprintf(&b, "%s\n", title)
	if len(s.Settings) > 0 {
		keys := slices.Sorted(maps.Keys(s.Settings))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%v", k, s.Settings[k])
		}
		fmt.Fprintf(&b, "  settings    %s\n", strings.Join(parts, " "))
	}
	req := fmt.Sprint(s.Done) + " (until --duration)"
	if s.Requested > 0 {
		req = fmt.Sprintf("%d of %d", s.Done, s.Requested)
	}
	if s.Mode == "ocsp" {
		fmt.Fprintf(&b, "  done        %s: %d with a certificate status, %d without\n", req, s.OK, s.Failed)
	} else {
		fmt.Fprintf(&b, "  done        %s: %d ok, %d failed\n", req, s.OK, s.Failed)
	}
	for _, o := range sortedByCount(s.Outcomes) {
		fmt.Fprintf(&b, "    %-22s %d\n", o, s.Outcomes[o])
	}
	if len(s.Retries) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(s.Retries)) {
			parts = append(parts, fmt.Sprintf("%s: %d", k, s.Retries[k]))
		}
		fmt.Fprintf(&b, "  retries     %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "  elapsed     %.2f s, %.1f/s\n", s.ElapsedSec, s.Throughput)
	l := s.Latency
	fmt.Fprintf(&b, "  latency     p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (mean %.1f ms)\n", l.P50, l.P90, l.P99, l.Max, l.Mean)
	if bl := s.Backlog; bl != nil {
		fmt.Fprintf(&b, "  backlog     %d records queued (queue_depth %d after enrolling, uplink cut for %.2f s)\n", bl.Records, bl.QueueDepthCut, bl.CutSec)
		fmt.Fprintf(&b, "  registry    %d before, %d after (+%d)\n", bl.RegistryBefore, bl.RegistryAfter, bl.RegistryAfter-bl.RegistryBefore)
		if bl.ReconnectSec > 0 {
			fmt.Fprintf(&b, "  reconnect   %.2f s after the restore\n", bl.ReconnectSec)
		}
		switch {
		case bl.Drained:
			fmt.Fprintf(&b, "  drained     %.2f s after the restore: %.1f records/s (%.1f/s from reconnect)\n", bl.DrainSec, bl.DrainRate, bl.DrainRateFromOnline)
		case s.Interrupted:
			fmt.Fprintf(&b, "  drained     not measured (interrupted)\n")
		default:
			fmt.Fprintf(&b, "  drained     no: the registry did not reach %d\n", bl.RegistryBefore+bl.Records)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Errors)) {
		fmt.Fprintf(&b, "  first %s: %s\n", k, s.Errors[k])
	}
	for _, n := range s.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	_, _ = io.WriteString(w, b.String())
}

// sortedByCount returns m's keys, most frequent first (ties by name).
func sortedByCount(m map[string]int) []string {
	keys := slices.Collect(maps.Keys(m))
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

// progress prints a line to w every interval until stop is called, from
// what line returns; stop waits for the printer to end.
func progress(w io.Writer, every time.Duration, line func() string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintln(w, line())
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done); <-finished })
	}
}

// rateLine is the progress line of a recorder: done/total, average and
// last-interval rate, failures.
type rateLine struct {
	r        *recorder
	what     string
	total    int // 0: unbounded
	prevDone int64
	prevAt   time.Time
}

func (p *rateLine) String() string {
	now := time.Now()
	done := p.r.done.Load()
	if p.prevAt.IsZero() {
		p.prevAt = p.r.start
	}
	var recent float64
	if dt := now.Sub(p.prevAt).Seconds(); dt > 0 {
		recent = float64(done-p.prevDone) / dt
	}
	p.prevDone, p.prevAt = done, now
	var avg float64
	if el := now.Sub(p.r.start).Seconds(); el > 0 {
		avg = float64(done) / el
	}
	total := "?"
	if p.total > 0 {
		total = fmt.Sprint(p.total)
	}
	return fmt.Sprintf("loadgen %s: %d/%s done, %d ok, %d failed, %.1f/s (last second %.1f/s)", p.what, done, total, p.r.ok.Load(), p.r.failed.Load(), avg, recent)
}
