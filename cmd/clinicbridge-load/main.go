// Command clinicbridge-load measures clinicbridge: how many signed webhooks
// per second it stores and acknowledges, how fast they reach a sink, how
// much memory it uses, and how it compares with a bare net/http handler
// measured in the same run by the same client. See docs/load.md.
//
// It either starts agents itself (the default: builds ./cmd/clinicbridge,
// writes a config in a temp dir, runs a local HTTP sink) or loads agents
// already running (--target). It only ever talks to loopback addresses, and
// every run is bounded in count and time.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors/webhook"
	"github.com/clinicbridge/clinicbridge/internal/crashtest/agentproc"
)

// Bounds: a load tool that can be pointed at anything with any numbers is a
// traffic generator; these keep every run short and local.
const (
	maxDuration    = 10 * time.Minute
	maxCount       = 10_000_000
	maxConcurrency = 4096
	maxRate        = 200_000
	maxAgents      = 8
	maxRepeat      = 10
	maxBody        = 1 << 20
)

type options struct {
	agentBin    string
	targets     []string
	sinkListen  string
	secret      string
	connector   string
	store       string
	postgresURL string
	agents      int
	concurrency int
	rate        float64
	duration    time.Duration
	count       int64
	bodySize    int
	phase       string
	drain       time.Duration
	repeat      int
	jsonOut     bool
	ceiling     bool
	keep        bool
	logLevel    string
	settle      time.Duration
	cpuProfile  string
}

func main() {
	// The tool shares the machine with the agent it measures: collect
	// garbage rarely, so what it takes from the agent is its real work. (The
	// agent it starts keeps its own GOGC: this does not pass to children.)
	debug.SetGCPercent(400)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "clinicbridge-load:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return usageError{err}
	}
	if o == nil {
		return nil // -h
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	progress := stderr
	if o.jsonOut {
		progress = io.Discard
	}
	var runs []*runResult
	var sink *agentproc.Sink
	if len(o.targets) > 0 && o.sinkListen != "" {
		// One sink for all runs: the operator's config points at a fixed
		// address. Each run's marker keeps its deliveries apart.
		if sink, err = agentproc.StartSink(agentproc.SinkOptions{Addr: o.sinkListen, Fast: o.phase != "all"}); err != nil {
			return fmt.Errorf("--sink-listen: %w", err)
		}
		defer sink.Close()
	}
	bin := o.agentBin
	if len(o.targets) == 0 && bin == "" {
		dir, err := os.MkdirTemp("", "clinicbridge-load-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(progress, "building", agentproc.MainPackage, "...")
		if bin, err = agentproc.Build(ctx, dir); err != nil {
			return fmt.Errorf("%w\n(run from inside the clinicbridge module, or pass --agent PATH)", err)
		}
	}
	for i := 1; i <= o.repeat; i++ {
		var r *runResult
		if len(o.targets) > 0 {
			r, err = o.runTargets(ctx, i, sink, progress)
		} else {
			r, err = o.runAgents(ctx, i, bin, progress)
		}
		if err != nil {
			return fmt.Errorf("run %d: %w", i, err)
		}
		runs = append(runs, r)
	}
	if o.jsonOut {
		return writeJSON(stdout, report{Settings: o.settings(), Runs: runs, Median: medians(runs)})
	}
	writeTable(stdout, o.title(), runs)
	return nil
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("clinicbridge-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var targets, bodySize string
	fs.StringVar(&o.agentBin, "agent", "", "agent binary to start (default: go build ./cmd/clinicbridge into a temp dir)")
	fs.StringVar(&targets, "target", "", "comma-separated URLs of running agents to load instead of starting one (loopback only; a bare http://host:port gets /hooks/<connector>)")
	fs.StringVar(&o.sinkListen, "sink-listen", "", "with --target: address for the recording sink your agents' http connector points at (http://ADDR/deliver); without it only ingest is measured")
	// The environment is read after parsing, not as the flag's default, so
	// -h never prints the secret.
	fs.StringVar(&o.secret, "secret", "", "with --target: the source's whsec_ secret (default $CLINICBRIDGE_LOAD_SECRET)")
	fs.StringVar(&o.connector, "connector", "inbox", "with --target: the webhook connector's name")
	fs.StringVar(&o.store, "store", "sqlite", "store of the started agent: sqlite or postgres")
	fs.StringVar(&o.postgresURL, "postgres-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "with --store postgres: a URL allowed to CREATE DATABASE; each run gets cb_load_<pid>_<n>, dropped after")
	fs.IntVar(&o.agents, "agents", 1, "agents to start, sharing one Postgres database, loaded round-robin")
	fs.IntVar(&o.concurrency, "concurrency", 64, "workers posting back to back (with --rate: the most requests in flight)")
	fs.Float64Var(&o.rate, "rate", 0, "requests per second, open loop (0: closed loop at --concurrency)")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "how long to send")
	fs.Int64Var(&o.count, "count", 0, "send exactly this many webhooks instead of for --duration")
	fs.StringVar(&bodySize, "body-size", "1KB", "approximate webhook body size (B, KB=KiB, MB=MiB)")
	fs.StringVar(&o.phase, "phase", "all", "all: ingest and end-to-end together; ingest: the sink answers 200 at once and only ingest is reported, with deliveries running beside it; accept: the started agent's route has `when: \"false\"`, so each event and its ledger row (skipped) are stored durably and nothing is sent: the accept path alone")
	fs.DurationVar(&o.drain, "drain", 60*time.Second, "after sending, how long to wait for every accepted event to reach the sink")
	fs.IntVar(&o.repeat, "repeat", 1, "runs, each with a fresh agent and store; the table adds the median")
	fs.BoolVar(&o.jsonOut, "json", false, "print JSON instead of a table")
	fs.BoolVar(&o.ceiling, "ceiling", true, "also measure a bare net/http handler with the same client and load")
	fs.BoolVar(&o.keep, "keep", false, "keep each run's temp dir (config, database, agent log) and print where")
	fs.StringVar(&o.logLevel, "agent-log-level", "info", "log level of the started agent (info logs one line per delivery, as in production)")
	fs.DurationVar(&o.settle, "settle", time.Second, "wait after the agent is ready before reading idle RSS")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the load tool's own CPU profile here (what it takes from the agent on a shared machine)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.secret == "" {
		o.secret = os.Getenv("CLINICBRIDGE_LOAD_SECRET")
	}
	n, err := parseSize(bodySize)
	if err != nil {
		return nil, fmt.Errorf("--body-size: %w", err)
	}
	o.bodySize = n
	for t := range strings.SplitSeq(targets, ",") {
		if t = strings.TrimSpace(t); t != "" {
			u, err := hookURL(t, o.connector)
			if err != nil {
				return nil, fmt.Errorf("--target %s: %w", t, err)
			}
			o.targets = append(o.targets, u)
		}
	}
	return o, o.validate()
}

func (o *options) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(o.concurrency >= 1 && o.concurrency <= maxConcurrency, "--concurrency: 1..%d", maxConcurrency)
	check(o.rate >= 0 && o.rate <= maxRate, "--rate: 0..%d", maxRate)
	check(o.count >= 0 && o.count <= maxCount, "--count: 0..%d", maxCount)
	check(o.count > 0 || o.duration > 0 && o.duration <= maxDuration, "--duration: up to %s (or use --count)", maxDuration)
	check(o.bodySize >= 0 && o.bodySize <= maxBody, "--body-size: at most 1MiB (the agent's max_body)")
	check(o.phase == "all" || o.phase == "ingest" || o.phase == "accept", "--phase: all, ingest or accept")
	check(o.drain >= 0 && o.drain <= maxDuration, "--drain: up to %s", maxDuration)
	check(o.repeat >= 1 && o.repeat <= maxRepeat, "--repeat: 1..%d", maxRepeat)
	check(o.agents >= 1 && o.agents <= maxAgents, "--agents: 1..%d", maxAgents)
	check(o.store == "sqlite" || o.store == "postgres", "--store: sqlite or postgres")
	check(o.agents == 1 || o.store == "postgres", "--agents > 1 needs --store postgres (agents share one database)")
	if len(o.targets) > 0 {
		check(o.agentBin == "", "--agent and --target exclude each other")
		check(o.phase != "accept", "--phase accept configures the agents it starts; against --target, give the route `when: \"false\"` and use --phase ingest without --sink-listen")
		check(strings.HasPrefix(o.secret, "whsec_"), "--target needs --secret whsec_... (the source's webhook_secret)")
		if o.sinkListen != "" {
			check(loopbackHostPort(o.sinkListen), "--sink-listen must be a loopback address")
		}
	} else {
		check(o.sinkListen == "", "--sink-listen is for --target; a started agent gets its own sink")
	}
	if o.store == "postgres" && len(o.targets) == 0 {
		u, err := url.Parse(o.postgresURL)
		check(err == nil && (u.Hostname() == "" || isLoopback(u.Hostname())), "--postgres-url must point at a loopback or unix-socket server")
	}
	return errors.Join(errs...)
}

// hookURL accepts http://host:port (the webhook path is added) or a full
// webhook URL; only loopback hosts are allowed.
func hookURL(s, connector string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return "", errors.New("want http://HOST:PORT[/hooks/NAME]")
	}
	if !isLoopback(u.Hostname()) {
		return "", errors.New("only loopback addresses may be loaded (127.0.0.0/8, ::1, localhost)")
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/hooks/" + connector
	}
	return u.String(), nil
}

func loopbackHostPort(hp string) bool {
	h, _, err := net.SplitHostPort(hp)
	return err == nil && isLoopback(h)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseSize reads 512, 512B, 1KB, 1KiB, 2MB; K and KiB are both 1024.
func parseSize(s string) (int, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"K", 1 << 10}, {"M", 1 << 20}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	return int(n * float64(mult)), nil
}

func (o *options) shape(targets []string, runID int64) shape {
	return shape{
		targets: targets, secret: o.secret, concurrency: o.concurrency, rate: o.rate,
		duration: o.duration, count: o.count, bodySize: o.bodySize,
		marker: fmt.Sprintf("LOAD-MARKER-%d", runID), runID: runID,
	}
}

func (o *options) title() string {
	var b strings.Builder
	if len(o.targets) > 0 {
		fmt.Fprintf(&b, "clinicbridge-load: %d target(s)", len(o.targets))
	} else {
		fmt.Fprintf(&b, "clinicbridge-load: %d agent(s) on %s", o.agents, o.store)
	}
	if o.rate > 0 {
		fmt.Fprintf(&b, ", open loop %.0f req/s (at most %d in flight)", o.rate, o.concurrency)
	} else {
		fmt.Fprintf(&b, ", concurrency %d", o.concurrency)
	}
	if o.count > 0 {
		fmt.Fprintf(&b, ", %d webhooks", o.count)
	} else {
		fmt.Fprintf(&b, ", %s", o.duration)
	}
	fmt.Fprintf(&b, ", body ~%d B, phase %s", o.bodySize, o.phase)
	return b.String()
}

func (o *options) settings() map[string]any {
	return map[string]any{
		"targets": o.targets, "store": o.store, "agents": o.agents, "concurrency": o.concurrency,
		"rate": o.rate, "duration": o.duration.String(), "count": o.count, "body_size": o.bodySize,
		"phase": o.phase, "drain": o.drain.String(), "repeat": o.repeat, "ceiling": o.ceiling,
		"agent_log_level": o.logLevel,
	}
}

// runAgents is one run against agents this tool starts.
func (o *options) runAgents(ctx context.Context, n int, bin string, progress io.Writer) (res *runResult, err error) {
	dir, err := os.MkdirTemp("", fmt.Sprintf("clinicbridge-load-%d-", n))
	if err != nil {
		return nil, err
	}
	defer func() {
		if o.keep {
			fmt.Fprintln(progress, "run", n, "kept in", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	sink, err := agentproc.StartSink(agentproc.SinkOptions{Fast: o.phase != "all"})
	if err != nil {
		return nil, err
	}
	defer sink.Close()

	var db *pgDatabase
	if o.store == "postgres" {
		if db, err = createDatabase(ctx, o.postgresURL, n); err != nil {
			return nil, err
		}
		defer func() {
			if derr := db.drop(); derr != nil {
				err = errors.Join(err, fmt.Errorf("drop database %s: %w", db.name, derr))
			}
		}()
	}

	secret := webhook.GenerateSecret()
	var procs []*agentproc.Proc
	var logs []*os.File
	defer func() {
		for _, p := range procs {
			if serr := p.Stop(30 * time.Second); serr != nil {
				fmt.Fprintf(progress, "agent %d: %v\n", p.PID(), serr)
			}
		}
		// Only after the agents are gone: they log until they exit.
		for _, f := range logs {
			f.Close()
		}
	}()
	// Started one after another: the first migrates a fresh database, the
	// others find it migrated.
	for i := range o.agents {
		adir := fmt.Sprintf("%s/agent-%d", dir, i+1)
		if err := os.MkdirAll(adir, 0o700); err != nil {
			return nil, err
		}
		cfg := agentproc.Config{Store: o.store, Secret: secret, SinkURL: sink.URL, LogLevel: o.logLevel}
		if o.phase == "accept" {
			cfg.When = "false"
		}
		if db != nil {
			cfg.PostgresURL = db.URL
		}
		var sopts agentproc.Options
		if o.logLevel != "info" && o.logLevel != "debug" && o.logLevel != "trace" {
			// The running line is logged at info; fix the ports instead.
			if cfg.Listen, err = agentproc.FreePort(); err != nil {
				return nil, err
			}
			if cfg.Admin, err = agentproc.FreePort(); err != nil {
				return nil, err
			}
			sopts.Listen, sopts.Admin = cfg.Listen, cfg.Admin
		}
		path, err := agentproc.WriteConfig(adir, cfg)
		if err != nil {
			return nil, err
		}
		logf, err := os.Create(adir + "/agent.log")
		if err != nil {
			return nil, err
		}
		logs = append(logs, logf)
		sopts.Stderr = logf
		p, err := agentproc.Start(ctx, bin, path, sopts)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	fmt.Fprintf(progress, "run %d: %d agent(s) ready (%s)\n", n, len(procs), o.store)

	select {
	case <-time.After(o.settle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res = &runResult{Run: n}
	idle := make([]int64, len(procs))
	for i, p := range procs {
		if idle[i], _, err = p.Memory(); err != nil {
			return nil, err
		}
	}
	// Peak RSS: the kernel's high-water mark, cross-checked by sampling
	// VmRSS every 100 ms (VmHWM includes start-up, which is part of the peak).
	samplers := make([]*rssSampler, len(procs))
	for i, p := range procs {
		samplers[i] = sampleRSS(p)
	}

	if o.ceiling {
		if res.Ceiling, err = o.measureCeiling(ctx, n, progress); err != nil {
			return nil, err
		}
	}

	var targets []string
	for _, p := range procs {
		targets = append(targets, p.HooksURL())
	}
	sh := o.shape(targets, time.Now().UnixNano())
	sh.secret = secret
	fmt.Fprintf(progress, "run %d: loading the agent...\n", n)
	res.LoadAvg = loadAvg()
	cpu0 := make([]time.Duration, len(procs))
	for i, p := range procs {
		cpu0[i], _ = p.CPU()
	}
	tool0 := selfCPU()
	recv0 := sink.Received()
	pass, err := sh.run(ctx)
	if err != nil {
		return nil, err
	}
	res.ToolCPUSeconds = (selfCPU() - tool0).Seconds()
	o.fill(res, pass, targets)
	switch o.phase {
	case "all":
		res.E2E = o.drainSink(ctx, sink, sh.marker, pass, progress, n)
	case "ingest":
		res.Backlog = o.waitBacklog(ctx, sink, recv0, res, progress, n)
	case "accept":
		// Agents on Postgres share one ledger: any of them counts it.
		if res.LedgerRows, err = ledgerRows(ctx, procs[0].AdminAddr, "skipped"); err != nil {
			return nil, fmt.Errorf("counting the ledger: %w", err)
		}
		if res.LedgerRows < res.Accepted {
			return nil, fmt.Errorf("the ledger holds %d skipped rows for %d accepted events: accepted events were lost", res.LedgerRows, res.Accepted)
		}
	}
	for i, p := range procs {
		// Through the drain: delivering is part of what each event costs.
		cpu, _ := p.CPU()
		res.AgentCPUSeconds += (cpu - cpu0[i]).Seconds()
	}
	if res.Accepted > 0 {
		res.AgentCPUPerEventUs = res.AgentCPUSeconds / float64(res.Accepted) * 1e6
	}
	for i, p := range procs {
		peak := samplers[i].stop()
		_, hwm, err := p.Memory()
		if err == nil {
			peak = max(peak, hwm)
		}
		lines, warns, errs := p.LogCounts()
		res.Agents = append(res.Agents, agentResult{
			PID: p.PID(), IdleRSSMB: mb(idle[i]), PeakRSSMB: mb(peak),
			LogLines: lines, LogWarns: warns, LogErrors: errs,
		})
	}
	if res.Ceiling != nil && res.Ceiling.PerSec > 0 {
		res.Ceiling.Ratio = res.AcceptedPerSec / res.Ceiling.PerSec
	}
	return res, nil
}

// runTargets is one run against agents someone else started.
func (o *options) runTargets(ctx context.Context, n int, sink *agentproc.Sink, progress io.Writer) (*runResult, error) {
	res := &runResult{Run: n}
	var err error
	if o.ceiling {
		if res.Ceiling, err = o.measureCeiling(ctx, n, progress); err != nil {
			return nil, err
		}
	}
	sh := o.shape(o.targets, time.Now().UnixNano())
	if sink != nil {
		sink.Reset()
	}
	fmt.Fprintf(progress, "run %d: loading %d target(s)...\n", n, len(o.targets))
	res.LoadAvg = loadAvg()
	tool0 := selfCPU()
	var recv0 int64
	if sink != nil {
		recv0 = sink.Received()
	}
	pass, err := sh.run(ctx)
	if err != nil {
		return nil, err
	}
	res.ToolCPUSeconds = (selfCPU() - tool0).Seconds()
	o.fill(res, pass, o.targets)
	switch {
	case sink != nil && o.phase == "all":
		res.E2E = o.drainSink(ctx, sink, sh.marker, pass, progress, n)
	case sink != nil:
		res.Backlog = o.waitBacklog(ctx, sink, recv0, res, progress, n)
	}
	if res.Ceiling != nil && res.Ceiling.PerSec > 0 {
		res.Ceiling.Ratio = res.AcceptedPerSec / res.Ceiling.PerSec
	}
	return res, nil
}

// measureCeiling loads a bare handler with the same client settings, shape
// and signing work, so the ratio isolates what the agent adds.
func (o *options) measureCeiling(ctx context.Context, n int, progress io.Writer) (*ceilingResult, error) {
	u, stop, err := ceilingServer()
	if err != nil {
		return nil, err
	}
	defer stop()
	fmt.Fprintf(progress, "run %d: measuring the bare-handler ceiling...\n", n)
	sh := o.shape([]string{u}, time.Now().UnixNano())
	sh.rate = 0 // a ceiling is closed loop, whatever the agent's shape
	if !strings.HasPrefix(sh.secret, "whsec_") {
		sh.secret = webhook.GenerateSecret()
	}
	pass, err := sh.run(ctx)
	if err != nil {
		return nil, err
	}
	t := pass.total()
	secs := pass.end.Sub(pass.start).Seconds()
	return &ceilingResult{PerSec: float64(t.accepted) / secs, P99Ms: percentileMs(t.latNs, 99)}, nil
}

func (o *options) fill(res *runResult, pass *passResult, targets []string) {
	secs := pass.end.Sub(pass.start).Seconds()
	t := pass.total()
	res.Seconds = secs
	res.Sent, res.Accepted, res.Duplicates, res.Errors = t.sent, t.accepted, t.duplicates, t.errors
	res.AcceptedPerSec = float64(t.accepted) / secs
	res.AckP50Ms, res.AckP99Ms = percentileMs(t.latNs, 50), percentileMs(t.latNs, 99)
	res.LateSends = pass.late
	for i, ts := range pass.targets {
		res.Targets = append(res.Targets, targetResult{
			URL: targets[i], Sent: ts.sent, Accepted: ts.accepted, Errors: ts.errors,
			AcceptedPerSec: float64(ts.accepted) / secs,
			AckP50Ms:       percentileMs(ts.latNs, 50), AckP99Ms: percentileMs(ts.latNs, 99),
		})
	}
}

// waitBacklog, in the ingest phase, counts what the sink received while the
// load ran and then waits (up to --drain) until it has received as many
// requests as were accepted: deliveries the agent put off while webhooks
// were waiting are part of what the run cost, in time and in agent CPU.
// The fast sink does not read documents, so these are request counts.
func (o *options) waitBacklog(ctx context.Context, sink *agentproc.Sink, recv0 int64, res *runResult, progress io.Writer, n int) *backlogResult {
	end := time.Now()
	during := sink.Received() - recv0
	b := &backlogResult{DeliveredPerSec: float64(during) / res.Seconds}
	if during < res.Accepted {
		fmt.Fprintf(progress, "run %d: %d of %d delivered during the load; waiting up to %s for the rest...\n", n, during, res.Accepted, o.drain)
	}
	deadline := end.Add(o.drain)
	for sink.Received()-recv0 < res.Accepted && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	b.CatchUpSeconds = time.Since(end).Seconds()
	b.Undelivered = max(0, res.Accepted-(sink.Received()-recv0))
	return b
}

// drainSink waits until every accepted event reached the sink (or --drain
// passes) and computes the end-to-end figures from the first delivery of
// each seq.
func (o *options) drainSink(ctx context.Context, sink *agentproc.Sink, marker string, pass *passResult, progress io.Writer, n int) *e2eResult {
	fmt.Fprintf(progress, "run %d: sent %d; waiting up to %s for deliveries...\n", n, len(pass.acked), o.drain)
	deadline := time.Now().Add(o.drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		// The cheap count first; the exact check only when it could pass.
		if sink.Distinct(marker) >= len(pass.acked) && len(sink.Missing(marker, pass.acked)) == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	missing := sink.Missing(marker, pass.acked)
	acked := make(map[int64]bool, len(pass.acked))
	for _, s := range pass.acked {
		acked[s] = true
	}
	first := map[int64]int64{} // seq -> first arrival
	var lat []int64
	var last int64
	e := &e2eResult{Missing: int64(len(missing)), SinkConns: sink.Conns()}
	for _, d := range sink.Deliveries() {
		if d.Marker != marker {
			continue
		}
		if _, seen := first[d.Seq]; seen {
			e.SinkDuplicates++
			continue
		}
		first[d.Seq] = d.AtNs
		lat = append(lat, d.AtNs-d.SentNs)
		last = max(last, d.AtNs)
		if !acked[d.Seq] {
			e.Unacked++
		}
	}
	e.Delivered = int64(len(first))
	if last > 0 {
		span := float64(last-pass.start.UnixNano()) / 1e9
		e.DeliveredPerSec = float64(e.Delivered) / span
		e.DrainSeconds = max(float64(last-pass.end.UnixNano())/1e9, 0)
	}
	e.P50Ms, e.P99Ms = percentileMs(lat, 50), percentileMs(lat, 99)
	return e
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// selfCPU is this process's user+system CPU time: the client's (and the
// in-process sink's) share of the two cores the agent also runs on.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg is the 1-minute load average when a run starts: a figure from a
// machine already busy with other work is not comparable.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

type rssSampler struct {
	done chan struct{}
	peak chan int64
}

func sampleRSS(p *agentproc.Proc) *rssSampler {
	s := &rssSampler{done: make(chan struct{}), peak: make(chan int64, 1)}
	go func() {
		var peak int64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, _, err := p.Memory(); err == nil {
				peak = max(peak, rss)
			}
			select {
			case <-s.done:
				s.peak <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) stop() int64 {
	close(s.done)
	return <-s.peak
}

// ledgerRows reads the agent's count of ledger rows in state from its
// metrics, as an operator's scraper would: the clinicbridge_deliveries gauge
// counts the ledger itself.
func ledgerRows(ctx context.Context, adminAddr, state string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	prefix := `clinicbridge_deliveries{state="` + state + `"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int64(f), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("GET /metrics: no %s line", strings.TrimSpace(prefix))
}
