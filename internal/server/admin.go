package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/internal/metrics"
	"github.com/clinicbridge/clinicbridge/internal/reconcile"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// Admin serves the admin API and /metrics. Every request needs a bearer
// token with the endpoint's scope; /metrics too, since queue depth by route
// is operational detail. Actions that change anything go to the audit log
// with the token's name.
type Admin struct {
	Store store.Store
	// Reconcile runs a reconciler now and returns its report.
	Reconcile func(ctx context.Context, name, trigger string) (store.Run, error)
	// Connectors reports whether a connector name exists (state writes).
	Connectors func(name string) bool
	// Reload re-reads the config (POST /api/reload).
	Reload func(ctx context.Context, actor string) error
	// Tokens are the accepted tokens; none means no auth (loopback only,
	// which CheckAdminListen enforces).
	Tokens  []config.AdminToken
	Log     zerolog.Logger
	Metrics *metrics.Metrics
}

// CheckAdminListen refuses a non-loopback admin address without a token.
func CheckAdminListen(addr string, tokens int) error {
	if tokens > 0 {
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
	read, replay := config.ScopeRead, config.ScopeReplay
	mux.Handle("GET /metrics", a.auth(read, promhttp.HandlerFor(a.Metrics.Registry, promhttp.HandlerOpts{})))
	mux.Handle("GET /api/events", a.auth(read, http.HandlerFunc(a.events)))
	mux.Handle("GET /api/events/{source}/{id}", a.auth(read, http.HandlerFunc(a.event)))
	mux.Handle("GET /api/deliveries", a.auth(read, http.HandlerFunc(a.deliveries)))
	mux.Handle("GET /api/deliveries/{id}", a.auth(read, http.HandlerFunc(a.delivery)))
	mux.Handle("GET /api/reconcile/runs", a.auth(read, http.HandlerFunc(a.reconcileRuns)))
	mux.Handle("GET /api/audit", a.auth(read, http.HandlerFunc(a.auditLog)))
	mux.Handle("GET /api/audit/verify", a.auth(read, http.HandlerFunc(a.auditVerify)))
	mux.Handle("POST /api/replay", a.auth(replay, http.HandlerFunc(a.replay)))
	mux.Handle("POST /api/reconcile/{name}/run", a.auth(replay, http.HandlerFunc(a.reconcileRun)))
	mux.Handle("POST /api/purge", a.auth(config.ScopeAdmin, http.HandlerFunc(a.purge)))
	mux.Handle("POST /api/rekey", a.auth(config.ScopeAdmin, http.HandlerFunc(a.rekey)))
	mux.Handle("POST /api/reload", a.auth(config.ScopeAdmin, http.HandlerFunc(a.reload)))
	mux.Handle("PUT /api/connectors/{name}/state/{key}", a.auth(config.ScopeAdmin, http.HandlerFunc(a.putState)))
	// Profiles show code paths, not data; still admin-only.
	mux.Handle("GET /debug/pprof/", a.auth(config.ScopeAdmin, http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/profile", a.auth(config.ScopeAdmin, http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/trace", a.auth(config.ScopeAdmin, http.HandlerFunc(pprof.Trace)))
	return mux
}

type actorKey struct{}

// actor is the name of the token that made the request.
func actor(r *http.Request) string {
	if s, ok := r.Context().Value(actorKey{}).(string); ok {
		return s
	}
	return "anonymous"
}

// grants says whether scopes include need: admin includes replay, which includes read.
func grants(scopes []string, need string) bool {
	rank := map[string]int{config.ScopeRead: 1, config.ScopeReplay: 2, config.ScopeAdmin: 3}
	for _, s := range scopes {
		if rank[s] >= rank[need] {
			return true
		}
	}
	return false
}

// auth finds the caller's token (comparing with every configured token in
// constant time, so timing tells nothing about which one nearly matched),
// then checks its scope: 401 without a known token, 403 without the scope.
func (a *Admin) auth(need string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(a.Tokens) == 0 {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, "local")))
			return
		}
		got := []byte(r.Header.Get("Authorization"))
		var who *config.AdminToken
		for i := range a.Tokens {
			if subtle.ConstantTimeCompare(got, []byte("Bearer "+a.Tokens[i].Token)) == 1 {
				who = &a.Tokens[i]
			}
		}
		if who == nil {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong admin token"})
			return
		}
		if !grants(who.Scopes, need) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": fmt.Sprintf("token %q lacks the %s scope", who.Name, need)})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, who.Name)))
	})
}

// audit records an admin action; a failure to record is logged, and the
// action's own answer stands (it already happened).
func (a *Admin) audit(r *http.Request, action, target string, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error: " + err.Error()
	}
	if aerr := a.Store.Audit(context.WithoutCancel(r.Context()), store.AuditEntry{Actor: actor(r), Action: action, Target: target, Outcome: outcome}); aerr != nil {
		a.Log.Error().Err(aerr).Str("action", action).Msg("could not write the audit log")
	}
}

func (a *Admin) auditLog(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	entries, err := a.Store.AuditLog(r.Context(), limit)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": nonNil(entries)})
}

func (a *Admin) auditVerify(w http.ResponseWriter, r *http.Request) {
	n, err := a.Store.VerifyAudit(r.Context())
	var broken *store.AuditBroken
	if errors.As(err, &broken) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "seq": broken.Seq, "error": broken.Error()})
		return
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "entries": n})
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
	target := fmt.Sprintf("ids=%v", req.IDs)
	if req.Route != "" {
		target = fmt.Sprintf("route=%s since=%s", req.Route, req.Since.Format(time.RFC3339))
	}
	a.audit(r, "replay", fmt.Sprintf("%s replayed=%d", target, len(ids)), err)
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
	a.audit(r, "reconcile_run", name+" "+run.ID, err)
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

// PurgeRequest erases one subject's payloads (a patient id, a booking uid).
type PurgeRequest struct {
	Subject string `json:"subject"`
}

func (a *Admin) purge(w http.ResponseWriter, r *http.Request) {
	var req PurgeRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil || req.Subject == "" {
		a.fail(w, errors.New(`purge: body must be {"subject": "KEY"}`))
		return
	}
	n, err := a.Store.Purge(r.Context(), store.PurgeFilter{Subject: req.Subject})
	// The subject is an identifier (booking uid, patient id), not a payload value.
	a.audit(r, "purge", fmt.Sprintf("subject=%s purged=%d", req.Subject, n), err)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"purged": n})
}

func (a *Admin) rekey(w http.ResponseWriter, r *http.Request) {
	n, err := a.Store.Rekey(r.Context())
	a.audit(r, "rekey", fmt.Sprintf("resealed=%d", n), err)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"resealed": n})
}

func (a *Admin) reload(w http.ResponseWriter, r *http.Request) {
	// Audited by Reload itself, which SIGHUP and the file watch share.
	if err := a.Reload(r.Context(), actor(r)); err != nil {
		var problems []string
		for _, e := range config.AsErrors(err) {
			problems = append(problems, e.Error())
		}
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": "the new config was rejected; the running one stays:\n" + strings.Join(problems, "\n")})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"reloaded": true})
}

// putState stores a connector's state value (e.g. the OAuth token that
// `clinicbridge xero connect` obtained), so a CLI can hand it to a running
// agent that holds the store. The body is the raw value; it is sealed at rest
// like all connector state, never logged, and the action is audited by key.
func (a *Admin) putState(w http.ResponseWriter, r *http.Request) {
	name, key := r.PathValue("name"), r.PathValue("key")
	if a.Connectors != nil && !a.Connectors(name) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no connector named " + strconvQuote(name)})
		return
	}
	value, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
	if err != nil {
		a.fail(w, fmt.Errorf("state value: %w", err))
		return
	}
	err = a.Store.State(name).Put(r.Context(), key, value)
	a.audit(r, "connector_state", name+"/"+key, err)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"stored": true})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
