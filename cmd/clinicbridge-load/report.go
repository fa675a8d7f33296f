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
	"text/tabwriter"
)

// runResult is one run. Figures that a run did not measure are nil or
// empty (no ceiling with --ceiling=false, no end-to-end in --phase ingest,
// no RSS against --target agents).
type runResult struct {
	Run            int              `json:"run"`
	Seconds        float64          `json:"seconds"` // first send to last answer
	Sent           int64            `json:"sent"`
	Accepted       int64            `json:"accepted"`
	Duplicates     int64            `json:"duplicates"`
	Errors         map[string]int64 `json:"errors"`
	AcceptedPerSec float64          `json:"accepted_per_sec"`
	AckP50Ms       float64          `json:"ack_p50_ms"`
	AckP99Ms       float64          `json:"ack_p99_ms"`
	LateSends      int64            `json:"late_sends,omitempty"`
	Targets        []targetResult   `json:"targets"`
	E2E            *e2eResult       `json:"e2e,omitempty"`
	Backlog        *backlogResult   `json:"backlog,omitempty"`     // ingest phase
	LedgerRows     int64            `json:"ledger_rows,omitempty"` // accept phase: skipped rows stored
	Ceiling        *ceilingResult   `json:"ceiling,omitempty"`
	Agents         []agentResult    `json:"agents,omitempty"`
	// AgentCPUSeconds is the agents' CPU time from the first send to the end
	// of the drain; per accepted event it is the figure least disturbed by
	// other work on the machine.
	AgentCPUSeconds    float64 `json:"agent_cpu_seconds,omitempty"`
	AgentCPUPerEventUs float64 `json:"agent_cpu_per_event_us,omitempty"`
	ToolCPUSeconds     float64 `json:"tool_cpu_seconds"` // this process during the load pass: client, plus sink
	LoadAvg            float64 `json:"load_avg_1m"`      // the machine's, as the run started
}

type targetResult struct {
	URL            string           `json:"url"`
	Sent           int64            `json:"sent"`
	Accepted       int64            `json:"accepted"`
	Errors         map[string]int64 `json:"errors"`
	AcceptedPerSec float64          `json:"accepted_per_sec"`
	AckP50Ms       float64          `json:"ack_p50_ms"`
	AckP99Ms       float64          `json:"ack_p99_ms"`
}

type e2eResult struct {
	Delivered       int64   `json:"delivered"` // distinct seqs of this run at the sink
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	DrainSeconds    float64 `json:"drain_seconds"` // last answer to last first delivery
	P50Ms           float64 `json:"p50_ms"`
	P99Ms           float64 `json:"p99_ms"`
	SinkDuplicates  int64   `json:"sink_duplicates"`
	Missing         int64   `json:"missing"`
	Unacked         int64   `json:"unacked_delivered"` // delivered though the sender got no 2xx
	SinkConns       int64   `json:"sink_connections"`
}

// backlogResult is what the ingest phase saw of deliveries.
type backlogResult struct {
	DeliveredPerSec float64 `json:"delivered_per_sec"` // sink requests during the load
	CatchUpSeconds  float64 `json:"catch_up_seconds"`  // last answer until the sink had them all
	Undelivered     int64   `json:"undelivered"`       // still short when --drain ran out
}

type ceilingResult struct {
	PerSec float64 `json:"per_sec"`
	P99Ms  float64 `json:"p99_ms"`
	Ratio  float64 `json:"ratio"` // accepted/s over ceiling/s
}

type agentResult struct {
	PID       int     `json:"pid"`
	IdleRSSMB float64 `json:"idle_rss_mb"`
	PeakRSSMB float64 `json:"peak_rss_mb"`
	LogLines  int64   `json:"log_lines"`
	LogWarns  int64   `json:"log_warnings"`
	LogErrors int64   `json:"log_errors"`
}

// percentileMs is the nearest-rank percentile of ns samples, in ms.
func percentileMs(ns []int64, p float64) float64 {
	if len(ns) == 0 {
		return 0
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i]) / 1e6
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// metric is one row of the table: how to read it from a run and print it.
type metric struct {
	key, label string
	prec       int
	get        func(r *runResult) (float64, bool)
}

func maxAgent(r *runResult, f func(a agentResult) float64) (float64, bool) {
	if len(r.Agents) == 0 {
		return 0, false
	}
	m := 0.0
	for _, a := range r.Agents {
		m = max(m, f(a))
	}
	return m, true
}

var metrics = []metric{
	{"accepted_per_sec", "accepted/s", 0, func(r *runResult) (float64, bool) { return r.AcceptedPerSec, true }},
	{"ack_p50_ms", "ack p50 (ms, 2xx)", 2, func(r *runResult) (float64, bool) { return r.AckP50Ms, r.Accepted > 0 }},
	{"ack_p99_ms", "ack p99 (ms, 2xx)", 2, func(r *runResult) (float64, bool) { return r.AckP99Ms, r.Accepted > 0 }},
	{"errors", "errors (all kinds)", 0, func(r *runResult) (float64, bool) {
		var n int64
		for _, v := range r.Errors {
			n += v
		}
		return float64(n), true
	}},
	{"ceiling_per_sec", "bare handler ceiling/s", 0, func(r *runResult) (float64, bool) {
		return of(r.Ceiling, func(c *ceilingResult) float64 { return c.PerSec })
	}},
	{"ceiling_p99_ms", "ceiling p99 (ms)", 2, func(r *runResult) (float64, bool) {
		return of(r.Ceiling, func(c *ceilingResult) float64 { return c.P99Ms })
	}},
	{"ratio", "accepted/ceiling", 3, func(r *runResult) (float64, bool) {
		return of(r.Ceiling, func(c *ceilingResult) float64 { return c.Ratio })
	}},
	{"delivered_per_sec", "delivered/s (sink)", 0, func(r *runResult) (float64, bool) {
		return of(r.E2E, func(e *e2eResult) float64 { return e.DeliveredPerSec })
	}},
	{"drain_seconds", "drain after last ack (s)", 2, func(r *runResult) (float64, bool) {
		return of(r.E2E, func(e *e2eResult) float64 { return e.DrainSeconds })
	}},
	{"backlog_delivered_per_sec", "delivered/s during load (sink)", 0, func(r *runResult) (float64, bool) {
		return of(r.Backlog, func(b *backlogResult) float64 { return b.DeliveredPerSec })
	}},
	{"backlog_catch_up_seconds", "deliveries caught up after (s)", 2, func(r *runResult) (float64, bool) {
		return of(r.Backlog, func(b *backlogResult) float64 { return b.CatchUpSeconds })
	}},
	{"backlog_undelivered", "undelivered after --drain", 0, func(r *runResult) (float64, bool) {
		return of(r.Backlog, func(b *backlogResult) float64 { return float64(b.Undelivered) })
	}},
	{"ledger_rows", "ledger rows stored (skipped)", 0, func(r *runResult) (float64, bool) {
		return float64(r.LedgerRows), r.LedgerRows > 0
	}},
	{"e2e_p50_ms", "end-to-end p50 (ms)", 1, func(r *runResult) (float64, bool) {
		return of(r.E2E, func(e *e2eResult) float64 { return e.P50Ms })
	}},
	{"e2e_p99_ms", "end-to-end p99 (ms)", 1, func(r *runResult) (float64, bool) {
		return of(r.E2E, func(e *e2eResult) float64 { return e.P99Ms })
	}},
	{"sink_duplicates", "duplicates at sink", 0, func(r *runResult) (float64, bool) {
		return of(r.E2E, func(e *e2eResult) float64 { return float64(e.SinkDuplicates) })
	}},
	{"missing", "missing (acked, not delivered)", 0, func(r *runResult) (float64, bool) {
		return of(r.E2E, func(e *e2eResult) float64 { return float64(e.Missing) })
	}},
	{"sink_connections", "connections to sink", 0, func(r *runResult) (float64, bool) {
		return of(r.E2E, func(e *e2eResult) float64 { return float64(e.SinkConns) })
	}},
	{"agent_cpu_per_event_us", "agent CPU per event (µs)", 0, func(r *runResult) (float64, bool) {
		return r.AgentCPUPerEventUs, r.AgentCPUPerEventUs > 0
	}},
	{"agent_cpu_cores", "agent CPU (cores, load+drain)", 2, func(r *runResult) (float64, bool) {
		if r.AgentCPUSeconds == 0 || r.Seconds == 0 {
			return 0, false
		}
		span := r.Seconds
		if r.E2E != nil {
			span += r.E2E.DrainSeconds
		}
		if r.Backlog != nil {
			span += r.Backlog.CatchUpSeconds
		}
		return r.AgentCPUSeconds / span, true
	}},
	{"tool_cpu_cores", "load tool CPU (cores)", 2, func(r *runResult) (float64, bool) {
		return r.ToolCPUSeconds / r.Seconds, r.Seconds > 0
	}},
	{"load_avg_1m", "machine load avg at start", 2, func(r *runResult) (float64, bool) { return r.LoadAvg, true }},
	{"idle_rss_mb", "idle RSS (MB)", 1, func(r *runResult) (float64, bool) {
		return maxAgent(r, func(a agentResult) float64 { return a.IdleRSSMB })
	}},
	{"peak_rss_mb", "peak RSS (MB)", 1, func(r *runResult) (float64, bool) {
		return maxAgent(r, func(a agentResult) float64 { return a.PeakRSSMB })
	}},
}

// of reads a figure from a part of the result a run may not have.
func of[T any](part *T, f func(*T) float64) (float64, bool) {
	if part == nil {
		return 0, false
	}
	return f(part), true
}

// medians is each figure's median over the runs that measured it.
func medians(runs []*runResult) map[string]float64 {
	out := map[string]float64{}
	for _, m := range metrics {
		var xs []float64
		for _, r := range runs {
			if v, ok := m.get(r); ok {
				xs = append(xs, v)
			}
		}
		if len(xs) > 0 {
			out[m.key] = median(xs)
		}
	}
	return out
}

type report struct {
	Settings map[string]any     `json:"settings"`
	Runs     []*runResult       `json:"runs"`
	Median   map[string]float64 `json:"median"`
}

func writeJSON(w io.Writer, rep report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// writeTable prints one column per run and, with more than one run, the
// median.
func writeTable(w io.Writer, title string, runs []*runResult) {
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"figure"}
	for _, r := range runs {
		head = append(head, fmt.Sprintf("run %d", r.Run))
	}
	if len(runs) > 1 {
		head = append(head, "median")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	med := medians(runs)
	for _, m := range metrics {
		row := []string{m.label}
		seen := false
		for _, r := range runs {
			if v, ok := m.get(r); ok {
				row = append(row, fmt.Sprintf("%.*f", m.prec, v))
				seen = true
			} else {
				row = append(row, "-")
			}
		}
		if !seen {
			continue
		}
		if len(runs) > 1 {
			row = append(row, fmt.Sprintf("%.*f", m.prec, med[m.key]))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	for _, r := range runs {
		if len(r.Errors) > 0 {
			fmt.Fprintf(w, "run %d errors by status: %s\n", r.Run, fmtErrors(r.Errors))
		}
		if r.LateSends > 0 {
			fmt.Fprintf(w, "run %d: %d sends left after their slot: all %s workers were waiting on answers (the agent fell behind the rate, or --concurrency is too low for its latency)\n", r.Run, r.LateSends, "--concurrency")
		}
		if len(r.Targets) > 1 {
			for _, t := range r.Targets {
				fmt.Fprintf(w, "run %d target %s: accepted/s %.0f, ack p50 %.2f ms, p99 %.2f ms, errors %s\n",
					r.Run, t.URL, t.AcceptedPerSec, t.AckP50Ms, t.AckP99Ms, fmtErrors(t.Errors))
			}
		}
		for i, a := range r.Agents {
			if a.LogErrors > 0 || a.LogWarns > 0 {
				fmt.Fprintf(w, "run %d agent %d logged %d warnings and %d errors (of %d lines)\n", r.Run, i+1, a.LogWarns, a.LogErrors, a.LogLines)
			}
		}
		if r.E2E != nil && r.E2E.Unacked > 0 {
			fmt.Fprintf(w, "run %d: %d delivered events had no 2xx (client timeout or error after the agent stored them)\n", r.Run, r.E2E.Unacked)
		}
	}
}

func fmtErrors(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
