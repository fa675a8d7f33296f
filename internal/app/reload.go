package app

import (
	"context"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/pipeline"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// live is the config an agent is running: swapped whole on a reload, so a
// request or delivery sees either the old config or the new one, never a mix.
type live struct {
	cur   atomic.Pointer[Agent]
	first *Agent // closed by whoever loaded it
	pl    *pipeline.Pipeline
	st    store.Store
	log   zerolog.Logger
	mu    sync.Mutex // one reload at a time
}

// closeGrace is how long replaced connectors stay open for deliveries that
// started on the old config (a delivery attempt is bounded by 90 s).
const closeGrace = 2 * time.Minute

func (l *live) source(name string) (connectors.Source, bool) {
	s, ok := l.cur.Load().Sources[name]
	return s, ok
}

// reload loads the config again. An invalid config is rejected with the
// same errors as `validate` and the running one stays. Settings that need a
// restart (listeners, store, log, reconcile schedules, sink limits) are
// reported and keep their old values.
func (l *live) reload(ctx context.Context, actor string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.cur.Load()
	next, err := Load(old.path, old.Registry, old.opts, l.log)
	outcome := "ok"
	if err != nil {
		for _, e := range config.AsErrors(err) {
			l.log.Error().Str("error", e.Error()).Msg("config reload rejected; the running config stays")
		}
		outcome = "rejected: " + err.Error()
	} else {
		for _, w := range restartOnly(old, next) {
			l.log.Warn().Str("setting", w).Msg("config reload: this setting changes only at restart")
		}
		next.store.Store(old.store.Load())
		l.pl.SetRoutes(next.Routes)
		l.cur.Store(next)
		if old != l.first {
			time.AfterFunc(closeGrace, func() { old.Close() })
		}
		l.log.Info().Int("routes", len(next.Routes)).Str("by", actor).Msg("config reloaded")
	}
	if aerr := l.st.Audit(context.WithoutCancel(ctx), store.AuditEntry{Actor: actor, Action: "reload", Target: old.path, Outcome: outcome}); aerr != nil {
		l.log.Error().Err(aerr).Msg("could not write the audit log")
	}
	return err
}

// restartOnly names the settings that differ but are not applied live.
func restartOnly(old, next *Agent) []string {
	var out []string
	a, b := old.Config, next.Config
	for name, pair := range map[string][2]any{
		"server": {a.Server, b.Server}, "admin": {a.Admin, b.Admin}, "store": {a.Store, b.Store},
		"log": {a.Log, b.Log}, "reconcile": {names(a.Reconcile), names(b.Reconcile)}, "connector limits": {old.Limits, next.Limits},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			out = append(out, name)
		}
	}
	return out
}

func names(rs []config.Reconcile) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name+" "+r.From+" "+r.Schedule+" "+r.Lookback.Std().String())
	}
	return out
}

// watch reloads when the config file or a mapping it uses changes. It
// watches the folders (editors replace files by renaming) and waits for
// writes to settle before reloading.
func (l *live) watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	var mu sync.Mutex // add runs from reload timers too
	files := map[string]bool{}
	dirs := map[string]bool{}
	watched := func(p string) bool {
		mu.Lock()
		defer mu.Unlock()
		return files[filepath.Clean(p)]
	}
	add := func(p string) {
		abs, err := filepath.Abs(p)
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		files[abs] = true
		if !dirs[filepath.Dir(abs)] {
			dirs[filepath.Dir(abs)] = true
			if err := w.Add(filepath.Dir(abs)); err != nil {
				l.log.Warn().Err(err).Msg("cannot watch a config folder; use SIGHUP to reload")
			}
		}
	}
	cur := l.cur.Load()
	add(cur.path)
	for f := range cur.Mappings {
		add(f)
	}
	go func() {
		defer w.Close()
		var timer *time.Timer
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if !watched(ev.Name) || ev.Op == fsnotify.Chmod {
					continue
				}
				if timer != nil {
					timer.Stop()
				}
				timer = time.AfterFunc(300*time.Millisecond, func() {
					if err := l.reload(ctx, "file-watch"); err == nil {
						// A reload may use new mapping files: watch them too.
						for f := range l.cur.Load().Mappings {
							add(f)
						}
					}
				})
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				l.log.Warn().Err(err).Msg("config watch")
			}
		}
	}()
	return nil
}
