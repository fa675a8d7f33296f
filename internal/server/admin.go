package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/clinicbridge/clinicbridge/internal/metrics"
	"github.com/clinicbridge/clinicbridge/internal/reconcile"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// Admin serves the admin API and /metrics. Every request needs the bearer
// token; /metrics too, since queue depth by route is operational detail.
type Admin struct {
	Store store.Store
	// Reconcile runs a reconciler now and returns its report.
	Reconcile func(ctx context.Context, name, trigger string) (store.Run, error)
	Token   string
	Log     zerolog.Logger
	Metrics *metrics.Metrics
}

// CheckAdminListen refuses a non-loopback admin address without a token.
func CheckAdminListen(addr, token string) error {
	if token != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("admin.listen %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("admin.listen %q is not a loopback address: set admin.token", addr)
}

// Handler returns the admin mux.
func (a *Admin) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.Metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/events", a.events)
	mux.HandleFunc("GET /api/events/{source}/{id}", a.event)
	mux.HandleFunc("GET /api/deliveries", a.deliveries)
	mux.HandleFunc("GET /api/deliveries/{id}", a.delivery)
	mux.HandleFunc("POST /api/replay", a.replay)
	mux.HandleFunc("POST /api/reconcile/{name}/run", a.reconcileRun)
	mux.HandleFunc("GET /api/reconcile/runs", a.reconcileRuns)
	return a.auth(mux)
}

func (a *Admin) auth(next http.Handler) http.Handler {
	want := []byte("Bearer " + a.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.Token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong admin token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *Admin) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case errors.Is(err, store.ErrUnavailable):
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "store unavailable"})
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	}
}

func queryTime(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		if d, derr := time.ParseDuration(v); derr == nil {
			return time.Now().Add(-d), nil
		}
		return t, fmt.Errorf("%s: want RFC 3339 time or a duration ago (e.g. 24h)", name)
	}
	return t, nil
}

func (a *Admin) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, err := queryTime(r, "since")
	if err != nil {
		a.fail(w, err)
		return
	}
	limit, _ := strconv.Atoi(q.Get("limit"))
	evs, err := a.Store.Events(r.Context(), store.EventFilter{Source: q.Get("source"), Type: q.Get("type"), Since: since, Limit: limit})
	if err != nil {
		a.fail(w, err)
		return
	}
	// Lists never carry payloads; `events show` does, for the operator who asks.
	for i := range evs {
		evs[i].Payload = nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": nonNil(evs)})
}

func (a *Admin) event(w http.ResponseWriter, r *http.Request) {
	ev, err := a.Store.Event(r.Context(), r.PathValue("source"), r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	ds, err := a.Store.Deliveries(r.Context(), store.DeliveryFilter{Source: ev.Source, EventID: ev.ID})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"event": ev, "deliveries": nonNil(ds)})
}

func (a *Admin) deliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, err := queryTime(r, "since")
	if err != nil {
		a.fail(w, err)
		return
	}
	limit, _ := strconv.Atoi(q.Get("limit"))
	ds, err := a.Store.Deliveries(r.Context(), store.DeliveryFilter{Route: q.Get("route"), State: store.State(q.Get("state")), Source: q.Get("source"), Since: since, Limit: limit})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deliveries": nonNil(ds)})
}

func (a *Admin) delivery(w http.ResponseWriter, r *http.Request) {
	d, err := a.Store.Delivery(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"delivery": d})
}

// ReplayRequest selects deliveries to replay: ids, or a route's dead ones since a time.
type ReplayRequest struct {
	IDs   []string  `json:"ids,omitempty"`
	Route string    `json:"route,omitempty"`
	Since time.Time `json:"since,omitzero"`
}

func (a *Admin) replay(w http.ResponseWriter, r *http.Request) {
	var req ReplayRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		a.fail(w, fmt.Errorf("replay: body must be {\"ids\": [...]} or {\"route\": ..., \"since\": ...}: %w", err))
		return
	}
	if len(req.IDs) == 0 && req.Route == "" {
		a.fail(w, errors.New("replay: give ids, or a route"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	ids, err := a.Store.Replay(ctx, store.ReplayFilter{IDs: req.IDs, Route: req.Route, Since: req.Since})
	if err != nil {
		a.fail(w, err)
		return
	}
	a.Log.Info().Int("count", len(ids)).Str("route", req.Route).Msg("admin: replay")
	writeJSON(w, http.StatusOK, map[string]any{"replayed": nonNil(ids)})
}

func (a *Admin) reconcileRun(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	run, err := a.Reconcile(r.Context(), name, "manual")
	a.Log.Info().Str("reconciler", name).Str("run", run.ID).Msg("admin: reconcile run")
	if err != nil && run.ID == "" {
		if errors.Is(err, reconcile.ErrUnknown) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		}
		a.fail(w, err)
		return
	}
	// A run that failed midway is still a report: it says where and why.
	writeJSON(w, http.StatusOK, map[string]any{"run": run})
}

func (a *Admin) reconcileRuns(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	runs, err := a.Store.Runs(r.Context(), r.URL.Query().Get("name"), limit)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": nonNil(runs)})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
