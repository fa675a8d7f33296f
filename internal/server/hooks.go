// Package server is clinicbridge's HTTP surface: the public webhook listener
// (POST /hooks/{connector}, /healthz, /readyz) and the admin listener (admin
// API and /metrics), which never share a port.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/metrics"
)

// Acceptor stores events durably (pipeline.Pipeline) and applies delivery
// callbacks to the ledger.
type Acceptor interface {
	Accept(ctx context.Context, events []connectors.Event) ([]bool, error)
	UpdateReceipts(ctx context.Context, us []connectors.ReceiptUpdate) error
}

// Sources finds the source connector configured under a name.
type Sources func(name string) (connectors.Source, bool)

// Hooks serves the public listener.
type Hooks struct {
	Sources   Sources
	Accept    Acceptor
	Ready     func(ctx context.Context) error
	MaxBody   int64
	PublicURL string // server.public_url, for schemes that sign the URL
	Log       zerolog.Logger
	Metrics   *metrics.Metrics
	// Reconcile starts, in the background, the reconcilers that list the
	// named source (a source that noticed a gap asks for it).
	Reconcile func(source string)
}

// Handler returns the public mux.
func (h *Hooks) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/hooks/{connector}", h.hook)
	mux.HandleFunc("/hooks/{connector}/{rest...}", h.hook)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := h.Ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": "store unreachable"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return mux
}

type reply struct {
	Accepted   int    `json:"accepted"`
	Duplicates int    `json:"duplicates"`
	Error      string `json:"error,omitempty"`
}

func (h *Hooks) hook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("connector")
	src, ok := h.Sources(name)
	if !ok {
		// The name is caller-controlled: keep it out of metric labels.
		h.Metrics.Received.WithLabelValues("", "unknown_connector").Inc()
		writeJSON(w, http.StatusNotFound, reply{Error: "no source connector named " + strconvQuote(name)})
		return
	}
	outcome := func(o string) { h.Metrics.Received.WithLabelValues(name, o).Inc() }
	// Log lines name the connector; a sub-logger per request would cost an
	// allocation on the hot path, whether or not anything is logged.
	log := func(e *zerolog.Event) *zerolog.Event { return e.Str("connector", name) }

	body, err := readBody(w, r, h.MaxBody)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			outcome("too_large")
			log(h.Log.Warn()).Int64("limit", h.MaxBody).Msg("webhook rejected: body too large")
			writeJSON(w, http.StatusRequestEntityTooLarge, reply{Error: "body larger than server.max_body"})
			return
		}
		outcome("error")
		writeJSON(w, http.StatusBadRequest, reply{Error: "could not read the body"})
		return
	}
	req := &connectors.Request{Method: r.Method, URL: h.publicURL(r), Header: r.Header, Body: body, Subpath: r.PathValue("rest")}
	if err := src.Verify(req); err != nil {
		outcome("unauthorized")
		// The reason names the check that failed, never the secret or body.
		log(h.Log.Warn()).Str("reason", err.Error()).Msg("webhook rejected: signature")
		writeJSON(w, http.StatusUnauthorized, reply{Error: "signature verification failed"})
		return
	}
	in, err := src.Parse(req)
	if err != nil {
		outcome("malformed")
		log(h.Log.Warn()).Str("reason", err.Error()).Msg("webhook rejected: malformed")
		writeJSON(w, http.StatusBadRequest, reply{Error: err.Error()})
		return
	}
	for i := range in.Events {
		in.Events[i].Source = name
	}
	if err := h.Accept.UpdateReceipts(r.Context(), in.Receipts); err != nil {
		outcome("unavailable")
		log(h.Log.Error()).Err(err).Int("receipts", len(in.Receipts)).Msg("receipt update not stored; answered 503 so the sender retries")
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, reply{Error: "not stored; retry later"})
		return
	}
	if len(in.Receipts) > 0 {
		outcome("receipt")
	}
	fresh, err := h.Accept.Accept(r.Context(), in.Events)
	if err != nil {
		outcome("unavailable")
		log(h.Log.Error()).Err(err).Int("events", len(in.Events)).Msg("webhook not stored; answered 503 so the sender retries")
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, reply{Error: "not stored; retry later"})
		return
	}
	if in.Reconcile && h.Reconcile != nil {
		// After this request's own events are stored, so the run counts
		// only what the gap really lost.
		log(h.Log.Info()).Msg("source reported a gap: starting its reconcilers")
		h.Reconcile(name)
	}
	var rep reply
	for i, ok := range fresh {
		if ok {
			rep.Accepted++
			outcome("accepted")
			log(h.Log.Debug()).Str("event", in.Events[i].ID).Str("type", in.Events[i].Type).Msg("event accepted")
		} else {
			rep.Duplicates++
			outcome("duplicate")
		}
	}
	if in.Reply != nil {
		if in.Reply.ContentType != "" {
			w.Header().Set("Content-Type", in.Reply.ContentType)
		}
		w.WriteHeader(in.Reply.Status)
		_, _ = w.Write(in.Reply.Body)
		return
	}
	rep.write(w)
}

// write answers 200 with the counts; it is every accepted webhook's answer,
// so it is built by hand rather than through the JSON encoder.
func (rep reply) write(w http.ResponseWriter) {
	b := make([]byte, 0, 48)
	b = append(b, `{"accepted":`...)
	b = strconv.AppendInt(b, int64(rep.Accepted), 10)
	b = append(b, `,"duplicates":`...)
	b = strconv.AppendInt(b, int64(rep.Duplicates), 10)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// readBody reads the body, in one allocation when the sender gave its
// length. A body over limit fails with *http.MaxBytesError.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	rd := http.MaxBytesReader(w, r.Body, limit)
	if n := r.ContentLength; n >= 0 && n <= limit {
		// The server never reads past Content-Length.
		buf := make([]byte, n)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	return io.ReadAll(rd)
}

// publicURL is the URL the sender used: server.public_url plus the request's
// path and query, since behind a proxy r.Host is not what was signed.
func (h *Hooks) publicURL(r *http.Request) *url.URL {
	u := *r.URL
	if h.PublicURL != "" {
		if base, err := url.Parse(strings.TrimRight(h.PublicURL, "/")); err == nil {
			u.Scheme, u.Host = base.Scheme, base.Host
			u.Path = base.Path + r.URL.Path
			return &u
		}
	}
	u.Host = r.Host
	u.Scheme = "http"
	if r.TLS != nil {
		u.Scheme = "https"
	}
	return &u
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func strconvQuote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	b, _ := json.Marshal(s)
	return string(b)
}
