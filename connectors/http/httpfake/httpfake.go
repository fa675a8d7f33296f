// Package httpfake is a recording HTTP endpoint that behaves like a
// well-behaved JSON API: it answers 200 {"id":"<n>"} by default, can be
// scripted to fail, and dedupes by idempotency key. It stands in for the
// target of the `http` sink in tests and in `clinicbridge fake http`.
package httpfake

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// DefaultIdempotencyHeader is the header the fake dedupes by.
const DefaultIdempotencyHeader = "Idempotency-Key"

// MaxBody is the largest request body the fake accepts (413 beyond it).
const MaxBody = 10 << 20

// Recorded is one request the fake received.
type Recorded struct {
	Method string
	Path   string
	Query  string // raw query, without '?'
	Header http.Header
	Body   []byte
	// Status is what the fake answered.
	Status int
	// At is when the request arrived (tests check retry spacing with it).
	At time.Time
	// Replay is set when the request repeated an idempotency key that had
	// already succeeded and was answered from the stored response.
	Replay bool
}

// Response is a scripted answer.
type Response struct {
	Status int // 0 means 200
	Header http.Header
	Body   []byte
}

// Server is the fake. It is an http.Handler; serve it with httptest.
type Server struct {
	idemHeader string
	log        io.Writer

	mu       sync.Mutex
	script   []Response
	requests []Recorded
	byKey    map[string]stored
	effects  int
	replays  int
}

type stored struct {
	resp Response
	body []byte // request body, to refuse a reused key with a different body
}

// Option configures a Server.
type Option func(*Server)

// WithLog prints one line per request to w: method, path, idempotency key,
// body size and the answer. Never the body or other headers.
func WithLog(w io.Writer) Option { return func(s *Server) { s.log = w } }

// WithIdempotencyHeader dedupes by another header (default Idempotency-Key).
func WithIdempotencyHeader(name string) Option { return func(s *Server) { s.idemHeader = name } }

// New returns an empty fake.
func New(opts ...Option) *Server {
	s := &Server{idemHeader: DefaultIdempotencyHeader, byKey: map[string]stored{}}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Script queues answers for the next len(responses) requests that are not
// replays, in order; after them the default answer resumes.
func (s *Server) Script(responses ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, responses...)
}

// Requests returns every request received so far, replays included.
func (s *Server) Requests() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Recorded, len(s.requests))
	for i, r := range s.requests {
		r.Header = r.Header.Clone()
		r.Body = bytes.Clone(r.Body)
		out[i] = r
	}
	return out
}

// Unique is the number of effects: 2xx answers that were not replays.
func (s *Server) Unique() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.effects
}

// Replays is the number of requests answered from a stored response.
func (s *Server) Replays() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replays
}

// Reset forgets requests, keys and the script.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script, s.requests, s.byKey, s.effects, s.replays = nil, nil, map[string]stored{}, 0, 0
}

// ServeHTTP records the request and answers it. A key that already
// succeeded gets the first answer again (a replay, no new effect); the same
// key with a different body gets 422, as Stripe-like APIs answer. Failures
// are not stored, so a retry after a scripted 500 reaches the script again.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		http.Error(w, "reading body failed", http.StatusBadRequest)
		return
	}
	key := r.Header.Get(s.idemHeader)
	rec := Recorded{At: time.Now(), Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}

	s.mu.Lock()
	var resp Response
	switch prev, seen := s.byKey[key]; {
	case len(body) > MaxBody:
		resp = Response{Status: http.StatusRequestEntityTooLarge, Body: []byte(`{"error":"body too large"}`)}
	case key != "" && seen && !bytes.Equal(prev.body, body):
		resp = Response{Status: http.StatusUnprocessableEntity, Body: []byte(`{"error":"idempotency key reused with a different body"}`)}
	case key != "" && seen:
		resp = prev.resp
		rec.Replay = true
		s.replays++
	default:
		if len(s.script) > 0 {
			resp, s.script = s.script[0], s.script[1:]
		}
		if resp.Status == 0 {
			resp.Status = http.StatusOK
		}
		if resp.Status >= 200 && resp.Status < 300 {
			s.effects++
			if resp.Body == nil {
				resp.Body = []byte(`{"id":"` + strconv.Itoa(s.effects) + `"}`)
			}
			if key != "" {
				s.byKey[key] = stored{resp: resp, body: body}
			}
		}
	}
	rec.Status = resp.Status
	s.requests = append(s.requests, rec)
	s.mu.Unlock()

	if s.log != nil {
		replay := ""
		if rec.Replay {
			replay = " (replay)"
		}
		fmt.Fprintf(s.log, "%s %s %s key=%q size=%d -> %d%s\n",
			time.Now().Format(time.TimeOnly), r.Method, r.URL.Path, key, len(body), resp.Status, replay)
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	if len(resp.Body) > 0 && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

var _ http.Handler = (*Server)(nil)
