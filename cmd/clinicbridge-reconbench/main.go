// Command clinicbridge-reconbench measures one reconcile run over a large
// listing of which a small share was never seen (its webhooks were lost):
// how long the run takes and the process's peak RSS. See docs/reconcile.md.
//
// Everything runs in this process, on loopback: a list API serving N
// appointments made on the fly (or, with --lister direct, a Go lister
// without HTTP), the store on a temp SQLite file, the pipeline with one
// route to a local HTTP sink that answers 200 at once, and the reconcile
// engine. Before the measured run, the listing minus the unseen share is
// accepted into the store (events, no deliveries: what the webhooks
// brought). Then the process's memory high-water mark is reset, the store
// is opened as the agent opens it, and one run lists everything.
//
//	go run ./cmd/clinicbridge-reconbench                      # 100,000 items, 1 % unseen, 3 runs, medians
//	go run ./cmd/clinicbridge-reconbench --repeat 1 --cpuprofile cpu.pprof
//
// With --repeat above 1 each run is a fresh child process, so one run's
// memory never counts towards the next one's peak.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"
)

// Bounds keep a run local and short.
const (
	maxItems  = 2_000_000
	maxRepeat = 10
)

type options struct {
	items      int
	unseenPct  float64
	lister     string
	route      bool
	repeat     int
	jsonOut    bool
	keep       bool
	cpuProfile string
	memProfile string
	timeout    time.Duration
	logLevel   string
}

// result is one run's figures.
type result struct {
	Items     int    `json:"items"`
	Lister    string `json:"lister"`
	Route     bool   `json:"route"`
	Prestored int    `json:"prestored"`
	Listed    int    `json:"listed"`
	Known     int    `json:"known"`
	Recovered int    `json:"recovered"`
	// RunSeconds is Engine.Run from start to return: listing every page and
	// storing it (events plus, for the new ones, deliveries and their jobs).
	RunSeconds float64 `json:"run_seconds"`
	// DeliveredSeconds is from the run's start until the sink had every
	// recovered delivery (0 without a route).
	DeliveredSeconds float64 `json:"delivered_seconds"`
	// PeakRSSMB is VmHWM after the run, the high-water mark having been reset
	// just before the store was opened for it.
	PeakRSSMB   float64 `json:"peak_rss_mb"`
	RSSStartMB  float64 `json:"rss_start_mb"`
	RSSEndMB    float64 `json:"rss_end_mb"`
	HWMReset    bool    `json:"hwm_reset"`
	PrestoreSec float64 `json:"prestore_seconds"`
	DBMB        float64 `json:"db_mb"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "clinicbridge-reconbench:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("clinicbridge-reconbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.items, "items", 100_000, "items the source lists")
	fs.Float64Var(&o.unseenPct, "unseen", 1, "percent of them never seen before the run (0, or 0.1 to 50)")
	fs.StringVar(&o.lister, "lister", "poll", "poll: the poll connector over HTTP and JSON; direct: a Go lister (engine and store alone)")
	fs.BoolVar(&o.route, "route", true, "one route from the source to a local HTTP sink (false: events only)")
	fs.IntVar(&o.repeat, "repeat", 3, "runs, each in a fresh child process; medians are printed")
	fs.BoolVar(&o.jsonOut, "json", false, "print JSON (every run and the medians)")
	fs.BoolVar(&o.keep, "keep", false, "keep each run's folder (config, database)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured run (needs --repeat 1)")
	fs.StringVar(&o.memProfile, "memprofile", "", "write a heap profile after the measured run (needs --repeat 1)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up on a run after this long")
	fs.StringVar(&o.logLevel, "log-level", "warn", "the pieces' log level (info logs every delivery)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	case o.items < 1 || o.items > maxItems:
		return nil, fmt.Errorf("--items: 1 to %d", maxItems)
	case o.unseenPct != 0 && (o.unseenPct < 0.1 || o.unseenPct > 50):
		return nil, errors.New("--unseen: 0, or 0.1 to 50 (percent)")
	case o.lister != "poll" && o.lister != "direct":
		return nil, errors.New("--lister: poll or direct")
	case o.repeat < 1 || o.repeat > maxRepeat:
		return nil, fmt.Errorf("--repeat: 1 to %d", maxRepeat)
	case (o.cpuProfile != "" || o.memProfile != "") && o.repeat != 1:
		return nil, errors.New("--cpuprofile and --memprofile need --repeat 1")
	case o.timeout <= 0 || o.timeout > 30*time.Minute:
		return nil, errors.New("--timeout: up to 30m")
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return usageError{err}
	}
	if o == nil {
		return nil // -h
	}
	var results []result
	if o.repeat == 1 {
		r, err := runOnce(ctx, o, stderr)
		if err != nil {
			return err
		}
		results = append(results, r)
	} else {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		for i := 1; i <= o.repeat; i++ {
			r, err := runChild(ctx, exe, args, stderr)
			if err != nil {
				return fmt.Errorf("run %d: %w", i, err)
			}
			fmt.Fprintf(stderr, "run %d: %.2f s, peak RSS %.1f MB\n", i, r.RunSeconds, r.PeakRSSMB)
			results = append(results, r)
		}
	}
	med := median(results)
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"runs": results, "median": med})
	}
	report(stdout, results, med)
	return nil
}

// runChild runs this command again as one run and reads its JSON.
func runChild(ctx context.Context, exe string, args []string, stderr io.Writer) (result, error) {
	child := append(slices.Clone(args), "--repeat=1", "--json")
	cmd := exec.CommandContext(ctx, exe, child...)
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, err
	}
	var doc struct{ Runs []result }
	if err := json.Unmarshal(out, &doc); err != nil || len(doc.Runs) != 1 {
		return result{}, fmt.Errorf("unreadable child output: %v", err)
	}
	return doc.Runs[0], nil
}

func median(rs []result) result {
	m := rs[0]
	pick := func(get func(result) float64) float64 {
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = get(r)
		}
		slices.Sort(vs)
		if len(vs)%2 == 1 {
			return vs[len(vs)/2]
		}
		return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
	}
	m.RunSeconds = pick(func(r result) float64 { return r.RunSeconds })
	m.DeliveredSeconds = pick(func(r result) float64 { return r.DeliveredSeconds })
	m.PeakRSSMB = pick(func(r result) float64 { return r.PeakRSSMB })
	m.RSSStartMB = pick(func(r result) float64 { return r.RSSStartMB })
	m.RSSEndMB = pick(func(r result) float64 { return r.RSSEndMB })
	m.PrestoreSec = pick(func(r result) float64 { return r.PrestoreSec })
	m.DBMB = pick(func(r result) float64 { return r.DBMB })
	return m
}

func report(w io.Writer, rs []result, med result) {
	r0 := rs[0]
	fmt.Fprintf(w, "one reconcile run over %d listed items (%d pre-stored, lister %s, route %v), SQLite\n\n",
		r0.Items, r0.Prestored, r0.Lister, r0.Route)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tlisted\tknown\trecovered\trun s\tdelivered s\tpeak RSS MB\tRSS start MB\tRSS end MB\tDB MB\tpre-store s\t")
	line := func(name string, r result) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", name, r.Listed, r.Known, r.Recovered,
			r.RunSeconds, r.DeliveredSeconds, r.PeakRSSMB, r.RSSStartMB, r.RSSEndMB, r.DBMB, r.PrestoreSec)
	}
	for i, r := range rs {
		line(fmt.Sprint(i+1), r)
	}
	if len(rs) > 1 {
		line("median", med)
	}
	tw.Flush()
	if !r0.HWMReset {
		fmt.Fprintln(w, "\nnote: could not reset VmHWM (/proc/self/clear_refs); the peak includes the pre-store phase")
	}
	fmt.Fprintln(w, "\ngoal: run <= 30 s, peak RSS <= 100 MB")
}
