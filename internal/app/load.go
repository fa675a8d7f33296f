// Package app assembles an agent from a config: it compiles routes and
// mappings, builds connectors, and runs the servers, store and pipeline
// together. The CLI calls it; nothing here parses flags.
package app

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/pipeline"
	"github.com/clinicbridge/clinicbridge/internal/reconcile"
	"github.com/clinicbridge/clinicbridge/internal/store"
	"github.com/clinicbridge/clinicbridge/mapping"
)

// Agent is a loaded, checked config with its connectors built.
type Agent struct {
	Config     *config.Config
	Registry   *connectors.Registry
	Routes     []*pipeline.Route
	Sources    map[string]connectors.Source
	Listers    map[string]connectors.Lister
	Sinks      map[string]connectors.Sink
	Connectors map[string]connectors.Type // by connector name
	// Mappings are the mapping files the routes use, with their programs.
	Mappings    map[string]*mapping.Program
	Reconcilers []*reconcile.Reconciler
	// Limits protect sink connectors, by name.
	Limits map[string]pipeline.Limits
	// Warnings are problems that do not stop the agent.
	Warnings []string

	closers   []io.Closer
	closeOnce sync.Once
	// how it was loaded, so a reload can do it again
	path string
	opts config.Options
	// store is set by Run; connectors' State reaches it through lazyState.
	store atomic.Pointer[store.Store]
}

// Load reads the config at path, checks it, compiles every expression and
// mapping, and builds the connectors (no network). Problems come back as
// config.Errors, each with file:line:col.
func Load(path string, reg *connectors.Registry, opts config.Options, log zerolog.Logger) (*Agent, error) {
	cfg, err := config.Load(path, reg, opts)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		Config:     cfg,
		Registry:   reg,
		Sources:    map[string]connectors.Source{},
		Listers:    map[string]connectors.Lister{},
		Sinks:      map[string]connectors.Sink{},
		Connectors: map[string]connectors.Type{},
		Mappings:   map[string]*mapping.Program{},
		Limits:     map[string]pipeline.Limits{},
		path:       path,
		opts:       opts,
	}
	var errs config.Errors
	for _, c := range cfg.Connectors {
		t, _ := reg.Lookup(c.Type)
		a.Connectors[c.Name] = t
		inst, err := t.Build(c.Node, connectors.Env{
			Name:      c.Name,
			PublicURL: cfg.Server.PublicURL,
			Dir:       cfg.Dir,
			Logger:    log.With().Str("connector", c.Name).Logger(),
			State:     lazyState{scope: c.Name, st: &a.store},
		})
		if err != nil {
			errs = append(errs, config.Errorf(cfg.File, c.Node, "connectors."+c.Name, "%v", err))
			continue
		}
		if l, err := limits(c.Limits); err != nil {
			errs = append(errs, config.Errorf(cfg.File, config.ValueNode(c.Node, "rate"), "connectors."+c.Name+".rate", "%v", err))
		} else if l != (pipeline.Limits{}) {
			a.Limits[c.Name] = l
		}
		if cl, ok := inst.(connectors.Closer); ok {
			a.closers = append(a.closers, cl)
		}
		if s, ok := inst.(connectors.Source); ok && t.Source {
			a.Sources[c.Name] = s
		}
		if l, ok := inst.(connectors.Lister); ok && t.Lister {
			a.Listers[c.Name] = l
		}
		if s, ok := inst.(connectors.Sink); ok && t.Sink() {
			a.Sinks[c.Name] = s
		}
	}
	for i := range cfg.Routes {
		r, rerrs := a.compileRoute(i)
		errs = append(errs, rerrs...)
		if r != nil {
			a.Routes = append(a.Routes, r)
		}
	}
	for i, rc := range cfg.Reconcile {
		p := "reconcile[" + strconv.Itoa(i) + "]"
		if t, ok := a.Connectors[rc.From]; ok && !t.Lister {
			errs = append(errs, config.Errorf(cfg.File, config.ValueNode(rc.Node, "from"), p+".from", "connector %q (type %s) cannot list events for reconciliation", rc.From, t.Name))
			continue
		}
		sched, _ := config.CronParser.Parse(rc.Schedule) // checked by config
		a.Reconcilers = append(a.Reconcilers, &reconcile.Reconciler{
			Name: rc.Name, From: rc.From, Schedule: sched, Lookback: rc.Lookback.Std(),
			Lister: a.Listers[rc.From], Types: a.typesFrom(rc.From),
		})
	}
	if len(errs) > 0 {
		a.Close()
		return nil, errs
	}
	return a, nil
}

func (a *Agent) compileRoute(i int) (*pipeline.Route, []error) {
	cfg := a.Config
	rc := cfg.Routes[i]
	p := "routes[" + strconv.Itoa(i) + "]"
	var errs []error
	at := func(key string) *yaml.Node {
		if n := config.ValueNode(rc.Node, key); n != nil {
			return n
		}
		return rc.Node
	}
	r := &pipeline.Route{Name: rc.Name, From: rc.From, Events: rc.Events, CancelOn: rc.CancelOn, To: rc.To.Connector}
	if t, ok := a.Connectors[rc.From]; ok && !t.Source {
		errs = append(errs, config.Errorf(cfg.File, at("from"), p+".from", "connector %q (type %s) does not receive events", rc.From, t.Name))
	}
	t, ok := a.Connectors[rc.To.Connector]
	if ok {
		if !t.Sink() {
			errs = append(errs, config.Errorf(cfg.File, at("to"), p+".to", "connector %q (type %s) cannot deliver", rc.To.Connector, t.Name))
		} else {
			name := rc.To.Action
			if name == "" {
				name = t.Actions[0].Name
			}
			act, found := t.Action(name)
			if !found {
				var names []string
				for _, a := range t.Actions {
					names = append(names, a.Name)
				}
				errs = append(errs, config.Errorf(cfg.File, at("to"), p+".to.action", "%s has no action %q (actions: %v)", t.Name, name, names))
			}
			r.Action = act
			r.Sink = a.Sinks[rc.To.Connector]
		}
	}
	for _, f := range []struct {
		key string
		src string
		dst **mapping.Expr
	}{{"when", rc.When, &r.When}, {"key", rc.Key, &r.Key}, {"at", rc.At, &r.At}} {
		if f.src == "" {
			continue
		}
		e, err := mapping.CompileExprNode(at(f.key), cfg.File, p+"."+f.key)
		if err != nil {
			errs = append(errs, flatten(err)...)
			continue
		}
		*f.dst = e
	}
	prog, err := a.compileMapping(rc)
	if err != nil {
		if me := mappingErrors(err); len(me) > 0 {
			errs = append(errs, me...)
		} else {
			errs = append(errs, config.Errorf(cfg.File, at("map"), p+".map", "%v", err))
		}
	} else {
		r.Map = prog
		if r.Action.Name != "" {
			fields := prog.Fields()
			for _, req := range r.Action.Required {
				if !slices.Contains(fields, req) {
					errs = append(errs, config.Errorf(cfg.File, at("map"), p+".map", "the mapping does not produce %q, which %s action %s requires (it produces: %v)", req, t.Name, r.Action.Name, fields))
				}
			}
		}
		if len(prog.WholePayloadFields()) > 0 && ok && t.Name != "file" {
			a.Warnings = append(a.Warnings, fmt.Sprintf("%s: %s.map: fields %v send the whole payload to %s; list the fields that may leave instead", cfg.File, p, prog.WholePayloadFields(), rc.To.Connector))
		}
	}
	if n := rc.Needs; n != nil {
		nn := config.ValueNode(rc.Node, "needs")
		e, err := mapping.CompileExprNode(config.ValueNode(nn, "key"), cfg.File, p+".needs.key")
		if err != nil {
			errs = append(errs, flatten(err)...)
		} else {
			r.Needs = &pipeline.Needs{Route: n.Route, Key: e, Wait: n.Wait.Std()}
		}
	}
	r.SkipLate = rc.Late == "skip"
	if q := rc.Quiet; q != nil {
		start, _ := time.Parse("15:04", q.Start) // checked by config
		end, _ := time.Parse("15:04", q.End)
		loc, _ := time.LoadLocation(q.TZ)
		r.Quiet = &pipeline.Quiet{Start: sinceMidnight(start), End: sinceMidnight(end), Loc: loc}
	}
	r.Retry = pipeline.Retry{MaxAttempts: rc.Retry.MaxAttempts, MaxAge: rc.Retry.MaxAge.Std()}
	if r.Retry.MaxAttempts == 0 {
		r.Retry.MaxAttempts = pipeline.DefaultMaxAttempts
	}
	for _, b := range rc.Retry.Backoff {
		r.Retry.Backoff = append(r.Retry.Backoff, b.Std())
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return r, nil
}

func (a *Agent) compileMapping(rc config.Route) (*mapping.Program, error) {
	if rc.Map.Inline != nil {
		return mapping.CompileNode(rc.Map.Inline, a.Config.File)
	}
	if prog, ok := a.Mappings[rc.Map.File]; ok {
		return prog, nil
	}
	src, err := os.ReadFile(rc.Map.File)
	if err != nil {
		return nil, fmt.Errorf("cannot read mapping: %w", err)
	}
	prog, err := mapping.Compile(src, rc.Map.File)
	if err != nil {
		return nil, err
	}
	a.Mappings[rc.Map.File] = prog
	return prog, nil
}

// mappingErrors unpacks the mapping package's located errors.
func mappingErrors(err error) []error {
	var out []error
	var me *mapping.Error
	if errors.As(err, &me) {
		for _, e := range flatten(err) {
			if errors.As(e, &me) {
				out = append(out, me)
			}
		}
	}
	return out
}

func flatten(err error) []error {
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range u.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func limits(c config.SinkLimits) (pipeline.Limits, error) {
	var l pipeline.Limits
	if c.Rate != "" {
		r, err := pipeline.ParseRate(c.Rate)
		if err != nil {
			return l, err
		}
		l.Rate = r
	}
	l.Concurrency = c.Concurrency
	if b := c.Breaker; b != nil {
		l.Failures, l.Cooldown = b.Failures, b.Cooldown.Std()
	}
	return l, nil
}

func sinceMidnight(t time.Time) time.Duration {
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute
}

// typesFrom is every event type the routes from source act on, for listers
// that filter server-side; nil when some route takes every type.
func (a *Agent) typesFrom(source string) []string {
	var types []string
	for _, r := range a.Routes {
		if r.From != source {
			continue
		}
		if len(r.Events) == 0 {
			return nil
		}
		types = append(types, r.Events...)
		types = append(types, r.CancelOn...)
	}
	slices.Sort(types)
	return slices.Compact(types)
}

// Route returns the compiled route called name.
func (a *Agent) Route(name string) (*pipeline.Route, bool) {
	for _, r := range a.Routes {
		if r.Name == name {
			return r, true
		}
	}
	return nil, false
}

// Close releases the connectors; later calls do nothing.
func (a *Agent) Close() error {
	var errs []error
	a.closeOnce.Do(func() {
		for _, c := range a.closers {
			errs = append(errs, c.Close())
		}
	})
	return errors.Join(errs...)
}
