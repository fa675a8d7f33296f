// Package reconcile pulls sources' list APIs and feeds what they list through
// the same Accept as webhooks, so a missed webhook becomes a late delivery:
// dedupe on (source, event id) makes a second run a no-op. Runs are River
// periodic jobs, so with several agents only the leader schedules them.
package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/rs/zerolog"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/metrics"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// Reconciler is one configured `reconcile:` entry.
type Reconciler struct {
	Name     string
	From     string // source connector name
	Schedule river.PeriodicSchedule
	Lookback time.Duration
	Lister   connectors.Lister
	// Types are the event types routes from this source use (nil: all).
	Types []string
}

// Acceptor stores events as webhooks are stored (pipeline.Pipeline).
type Acceptor interface {
	Accept(ctx context.Context, events []connectors.Event) ([]bool, error)
}

// Engine runs reconcilers.
type Engine struct {
	store   store.Store
	accept  Acceptor
	log     zerolog.Logger
	metrics *metrics.Metrics
	now     func() time.Time
	byName  map[string]*Reconciler
	order   []*Reconciler
	// running serializes runs of one reconciler within this agent, so a
	// manual run and a scheduled one do not list the same pages twice.
	running sync.Map // name -> *sync.Mutex
}

// New returns an engine; Accept is normally the pipeline. Call SetStore
// before running (the store needs the engine's worker to open).
func New(rs []*Reconciler, accept Acceptor, log zerolog.Logger, m *metrics.Metrics) *Engine {
	e := &Engine{accept: accept, log: log, metrics: m, now: time.Now, byName: map[string]*Reconciler{}, order: rs}
	for _, r := range rs {
		e.byName[r.Name] = r
	}
	return e
}

// SetStore attaches the store.
func (e *Engine) SetStore(s store.Store) { e.store = s }

// ErrUnknown is returned for a reconciler name not in the config.
var ErrUnknown = errors.New("no reconciler by that name")

// Run lists the source from the stored watermark minus the lookback, page by
// page, accepts every listed event, and records the run. The watermark moves
// only when the whole run succeeded, so a run that fails midway is repeated
// from the same place next time.
func (e *Engine) Run(ctx context.Context, name, trigger string) (store.Run, error) {
	r, ok := e.byName[name]
	if !ok {
		return store.Run{}, fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	mu, _ := e.running.LoadOrStore(name, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	run := store.Run{ID: newRunID(), Name: name, Trigger: trigger, StartedAt: e.now()}
	wm, err := e.store.Watermark(ctx, name)
	if err != nil {
		return run, err
	}
	run.WatermarkBefore = wm
	since := wm.Add(-r.Lookback)
	if wm.IsZero() {
		since = run.StartedAt.Add(-r.Lookback) // first run: only the recent past
	}
	newest := wm
	listErr := r.Lister.List(ctx, connectors.ListParams{Since: since, Types: r.Types}, func(p connectors.Page) error {
		for i := range p.Events {
			p.Events[i].Source = r.From
		}
		fresh, err := e.accept.Accept(ctx, p.Events)
		if err != nil {
			return fmt.Errorf("storing listed events: %w", err)
		}
		run.Listed += len(p.Events)
		for _, isNew := range fresh {
			if isNew {
				run.Recovered++
			} else {
				run.Known++
			}
		}
		if p.Newest.After(newest) {
			newest = p.Newest
		}
		return nil
	})
	run.FinishedAt = e.now()
	outcome := "ok"
	if listErr != nil {
		run.Error, outcome = listErr.Error(), "error"
	} else {
		run.WatermarkAfter = newest
		if floor := run.StartedAt.Add(-r.Lookback); newest.Before(floor) {
			// Nothing changed lately: move up to the lookback horizon, so
			// windows stay bounded while the lookback still covers clock skew.
			run.WatermarkAfter = floor
		}
	}
	if err := e.store.FinishRun(context.WithoutCancel(ctx), run); err != nil {
		return run, err
	}
	e.metrics.ReconcileRecovered.WithLabelValues(name).Add(float64(run.Recovered))
	e.metrics.ReconcileRuns.WithLabelValues(name, outcome).Inc()
	e.metrics.ReconcileDuration.WithLabelValues(name).Observe(run.FinishedAt.Sub(run.StartedAt).Seconds())
	ev := e.log.Info()
	if listErr != nil {
		ev = e.log.Warn().Str("error", run.Error)
	}
	ev.Str("reconciler", name).Str("trigger", trigger).Int("listed", run.Listed).Int("known", run.Known).
		Int("recovered", run.Recovered).Dur("took", run.FinishedAt.Sub(run.StartedAt)).
		Time("watermark_before", run.WatermarkBefore).Time("watermark_after", run.WatermarkAfter).Msg("reconcile run")
	if listErr != nil {
		return run, listErr
	}
	return run, nil
}

// RunSource starts, in the background, every reconciler that lists source
// (trigger "gap"). Runs of one reconciler are serialized, and dedupe makes an
// extra run harmless.
func (e *Engine) RunSource(source string) {
	for _, r := range e.order {
		if r.From != source {
			continue
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			_, _ = e.Run(ctx, r.Name, "gap") // recorded and logged by Run
		}()
	}
}

func newRunID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "run_" + hex.EncodeToString(b)
}

// Periodic returns one River periodic job per reconciler. River's leader
// inserts them, so each slot runs once however many agents share Postgres.
func (e *Engine) Periodic() []*river.PeriodicJob {
	var jobs []*river.PeriodicJob
	for _, r := range e.order {
		name := r.Name
		jobs = append(jobs, river.NewPeriodicJob(r.Schedule, func() (river.JobArgs, *river.InsertOpts) {
			// A run is idempotent; one attempt per slot is enough, the next slot retries.
			return store.ReconcileArgs{Name: name}, &river.InsertOpts{MaxAttempts: 1}
		}, &river.PeriodicJobOpts{ID: "reconcile:" + name}))
	}
	return jobs
}

// Worker runs scheduled reconcile jobs.
func (e *Engine) Worker() river.Worker[store.ReconcileArgs] { return &worker{e: e} }

type worker struct {
	river.WorkerDefaults[store.ReconcileArgs]
	e *Engine
}

// Timeout: a long listing is fine; it is bounded by the source's paging.
func (w *worker) Timeout(*river.Job[store.ReconcileArgs]) time.Duration { return 30 * time.Minute }

func (w *worker) Work(ctx context.Context, job *river.Job[store.ReconcileArgs]) error {
	_, err := w.e.Run(ctx, job.Args.Name, "schedule")
	if errors.Is(err, ErrUnknown) {
		return river.JobCancel(err) // removed from the config since it was scheduled
	}
	if err != nil {
		// Recorded in the run; the next slot starts from the same watermark.
		return river.JobCancel(err)
	}
	return nil
}
