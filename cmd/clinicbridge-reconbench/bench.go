package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/internal/app"
	"github.com/clinicbridge/clinicbridge/internal/metrics"
	"github.com/clinicbridge/clinicbridge/internal/pipeline"
	"github.com/clinicbridge/clinicbridge/internal/reconcile"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// lookback is the reconciler's; the catalog's changes all fall inside it,
// so the run (a first run: since = now - lookback) lists every item.
const lookback = time.Hour

const configTemplate = `version: 1
server: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
store: {driver: sqlite, path: ./data/cb.db}
connectors:
  src: %s
  sink: {type: http, url: "%s/appointments/{{ doc.id }}", timeout: 10s}
reconcile:
  - {name: bench, from: src, schedule: "@every 24h", lookback: 1h}
routes:
%s`

const pollConnector = `
    type: poll
    url: "%s/items"
    items: body.items
    event: {id: item.id, updated_at: item.updated_at, type: '"appointment.updated"'}
    paging: {page_param: page, per_page_param: per_page, per_page: 100}
    max_pages: 100000
    timeout: 30s`

const route = `  - name: appointment-to-portal
    from: src
    events: [appointment.updated]
    map:
      fields:
        id: {from: payload.id, required: true}
        patient: {from: payload.patient_id}
        status: {from: payload.status}
        starts_at: {from: payload.starts_at}
    to: sink
`

func runOnce(ctx context.Context, o *options, progress io.Writer) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	res := result{Items: o.items, Lister: o.lister, Route: o.route}
	dir, err := os.MkdirTemp("", "clinicbridge-reconbench-")
	if err != nil {
		return res, err
	}
	if o.keep {
		fmt.Fprintln(progress, "keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: progress, NoColor: true}).Level(level(o.logLevel)).With().Timestamp().Logger()

	// The listed system: every change within the last 45 minutes.
	every := 0
	if o.unseenPct > 0 {
		every = int(100/o.unseenPct + 0.5)
	}
	now := time.Now()
	cat := &catalog{n: o.items, every: every, base: now.Add(-45 * time.Minute), step: 40 * time.Minute / time.Duration(o.items)}
	listURL, stopList, err := serve(cat)
	if err != nil {
		return res, err
	}
	defer stopList()
	sink := &fastSink{}
	sinkURL, stopSink, err := serve(sink)
	if err != nil {
		return res, err
	}
	defer stopSink()

	reg := all.Registry()
	src := fmt.Sprintf(pollConnector, listURL)
	if o.lister == "direct" {
		direct := &directLister{c: cat, page: 100}
		reg.Register(connectors.Type{Name: "benchlist", Doc: "the benchmark's in-process lister", Source: true, Lister: true,
			Build: func(*yaml.Node, connectors.Env) (any, error) { return direct, nil }})
		src = "{type: benchlist}"
	}
	routes := "  []\n"
	if o.route {
		routes = route
	}
	cfgPath := filepath.Join(dir, "clinicbridge.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(configTemplate, src, sinkURL, routes)), 0o600); err != nil {
		return res, err
	}
	a, err := app.Load(cfgPath, reg, config.Options{}, log)
	if err != nil {
		return res, err
	}
	defer a.Close()
	rc := a.Reconcilers[0]
	dbPath := a.Config.Store.Path

	// What the webhooks brought: the listing without the unseen items,
	// accepted as the webhook handler accepts (events only: no route).
	fmt.Fprintln(progress, "pre-storing the listing minus the unseen items ...")
	t0 := time.Now()
	cat.hiding.Store(true)
	if res.Prestored, err = prestore(ctx, dbPath, rc); err != nil {
		return res, fmt.Errorf("pre-store: %w", err)
	}
	cat.hiding.Store(false)
	res.PrestoreSec = time.Since(t0).Seconds()

	// Measure from here: give back what pre-storing used, reset the peak.
	runtime.GC()
	debug.FreeOSMemory()
	res.HWMReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	res.RSSStartMB, _ = memMB()

	m := metrics.New(nil)
	pl := pipeline.New(pipeline.Params{Routes: a.Routes, Limits: a.Limits, Logger: log, Metrics: m})
	eng := reconcile.New(a.Reconcilers, pl, log, m)
	st, err := store.Open(ctx, store.Params{Path: dbPath, Deliver: pl.Deliver, Reconciler: eng.Worker()})
	if err != nil {
		return res, err
	}
	defer st.Close()
	pl.SetStore(st)
	eng.SetStore(st)
	if err := st.Start(ctx); err != nil {
		return res, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = st.Stop(stopCtx)
	}()

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
	}
	fmt.Fprintln(progress, "running the reconciler ...")
	start := time.Now()
	run, err := eng.Run(ctx, rc.Name, "manual")
	res.RunSeconds = time.Since(start).Seconds()
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return res, fmt.Errorf("the run failed: %w", err)
	}
	res.Listed, res.Known, res.Recovered = run.Listed, run.Known, run.Recovered
	if o.route {
		for sink.n.Load() < int64(run.Recovered) {
			if ctx.Err() != nil {
				return res, fmt.Errorf("the sink got %d of %d deliveries", sink.n.Load(), run.Recovered)
			}
			time.Sleep(5 * time.Millisecond)
		}
		res.DeliveredSeconds = time.Since(start).Seconds()
	}
	if o.memProfile != "" {
		f, err := os.Create(o.memProfile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return res, err
		}
	}
	var hwm float64
	res.RSSEndMB, hwm = memMB()
	res.PeakRSSMB = hwm
	if fi, err := os.Stat(dbPath); err == nil {
		res.DBMB = float64(fi.Size()) / (1 << 20)
	}
	if want := o.items; run.Listed != want {
		return res, fmt.Errorf("listed %d, want %d", run.Listed, want)
	}
	if run.Known != res.Prestored {
		return res, fmt.Errorf("known %d, want %d (pre-stored)", run.Known, res.Prestored)
	}
	return res, nil
}

// prestore lists with the reconciler's lister, as the engine would, and
// accepts every page without routes: the events are stored, nothing is
// delivered.
func prestore(ctx context.Context, dbPath string, rc *reconcile.Reconciler) (int, error) {
	st, err := store.Open(ctx, store.Params{Path: dbPath})
	if err != nil {
		return 0, err
	}
	defer st.Close()
	pl := pipeline.New(pipeline.Params{})
	pl.SetStore(st)
	n := 0
	err = rc.Lister.List(ctx, connectors.ListParams{Since: time.Now().Add(-lookback), Types: rc.Types}, func(p connectors.Page) error {
		for i := range p.Events {
			p.Events[i].Source = rc.From
		}
		fresh, err := pl.Accept(ctx, p.Events)
		for _, f := range fresh {
			if f {
				n++
			}
		}
		return err
	})
	return n, err
}

// fastSink answers every delivery 200 at once and counts them.
type fastSink struct{ n atomic.Int64 }

func (s *fastSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	s.n.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"id":"1"}`)
}

// serve runs h on a loopback port.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// memMB reads VmRSS and VmHWM (the peak) of this process.
func memMB() (rss, hwm float64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			continue
		}
		if k == "VmRSS" {
			rss = kb / 1024
		} else {
			hwm = kb / 1024
		}
	}
	return rss, hwm
}

func level(s string) zerolog.Level {
	l, err := zerolog.ParseLevel(s)
	if err != nil || s == "" {
		return zerolog.WarnLevel
	}
	return l
}
