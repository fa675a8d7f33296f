// Package pollfake is a generic JSON list API of the kind the `poll`
// connector reads (Cliniko-like): items with an id and an updated_at, a
// since filter, page-number and next-link paging, an RFC 8288 Link header,
// optional auth, and scripted failures. It stands in for the listed system
// in tests and in `clinicbridge fake poll`.
//
// Endpoints:
//
//	GET  /items        {"items": [...], "links": {"self", "next"}, "next_cursor", "total_entries"} + Link header
//	GET  /items/array  the items as a bare JSON array + Link header
//	POST /items        upsert one item (a JSON object with an "id"); its updated_at is set to now
//
// Query parameters of the GET endpoints:
//
//	updated_since=T   items with updated_at >= T (RFC 3339, a date, unix seconds or unix milliseconds)
//	q[]=updated_at:>T Cliniko-style filter (also >=, <, <=); other filters are answered 400
//	page=N            1-based page number (default 1)
//	per_page=N        page size (default 10, at most 100)
//	cursor=C          an opaque cursor from next_cursor, instead of page
//
// Items are listed oldest change first (updated_at, then id).
package pollfake

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Page sizes.
const (
	DefaultPerPage = 10
	MaxPerPage     = 100
)

// TimeLayout is how the fake writes updated_at and created_at: RFC 3339,
// UTC, milliseconds (as Cliniko does).
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// Recorded is one request the fake received.
type Recorded struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	// Page is the page number the request asked for (cursor requests included).
	Page   int
	Status int
}

// Server is the fake. It is an http.Handler; serve it with httptest.
type Server struct {
	log      io.Writer
	now      func() time.Time
	relative bool
	authName string
	authVal  string

	mu        sync.Mutex
	items     map[string]map[string]any
	last      time.Time
	failPages map[int]int
	limited   []time.Duration
	requests  []Recorded
}

// Option configures a Server.
type Option func(*Server)

// WithLog prints one line per request to w: method, path, page, item count
// and status. Never item values, queries or headers.
func WithLog(w io.Writer) Option { return func(s *Server) { s.log = w } }

// WithClock sets the clock Upsert stamps updated_at with (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithRelativeLinks makes next links (body and Link header) relative:
// path and query only.
func WithRelativeLinks() Option { return func(s *Server) { s.relative = true } }

// WithAuthHeader requires header name to equal value on every request (401 otherwise).
func WithAuthHeader(name, value string) Option {
	return func(s *Server) { s.authName, s.authVal = name, value }
}

// WithBearer requires `Authorization: Bearer token`.
func WithBearer(token string) Option { return WithAuthHeader("Authorization", "Bearer "+token) }

// WithBasic requires HTTP Basic credentials (Cliniko: the API key as user, empty password).
func WithBasic(user, password string) Option {
	return WithAuthHeader("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
}

// WithSampleItems starts the fake with a few made-up patients.
func WithSampleItems() Option {
	return func(s *Server) {
		for i, name := range []string{"Ada Example", "Ben Sample", "Cleo Test"} {
			first, last, _ := strings.Cut(name, " ")
			s.upsert(map[string]any{"id": strconv.Itoa(1001 + i), "first_name": first, "last_name": last})
		}
	}
}

// New returns a fake holding no items (unless an option adds some).
func New(opts ...Option) *Server {
	s := &Server{now: time.Now, items: map[string]map[string]any{}, failPages: map[int]int{}}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Upsert adds item, or replaces the stored item with the same "id", and
// stamps updated_at with the clock (always later than any earlier stamp, so
// each change is distinguishable) and created_at on first insert. It returns
// the stored copy.
func (s *Server) Upsert(item map[string]any) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return clone(s.upsert(item))
}

func (s *Server) upsert(item map[string]any) map[string]any {
	id := idOf(item)
	if id == "" {
		panic("pollfake: Upsert needs an item with an id")
	}
	t := s.now().UTC().Truncate(time.Millisecond)
	if !t.After(s.last) {
		t = s.last.Add(time.Millisecond)
	}
	s.last = t
	stored := clone(item)
	stored["updated_at"] = t.Format(TimeLayout)
	if prev, ok := s.items[id]; ok && prev["created_at"] != nil {
		stored["created_at"] = prev["created_at"]
	} else {
		stored["created_at"] = t.Format(TimeLayout)
	}
	s.items[id] = stored
	return stored
}

// Put stores item exactly as given (updated_at included, however it is
// written), replacing any item with the same "id": for old items and for
// data the connector must reject.
func (s *Server) Put(item map[string]any) {
	id := idOf(item)
	if id == "" {
		panic("pollfake: Put needs an item with an id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items[id] = clone(item)
}

// Items returns every stored item, in listing order.
func (s *Server) Items() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sorted()
	for i, it := range out {
		out[i] = clone(it)
	}
	return out
}

// FailPage makes the next request for page n (1-based, cursor requests
// included) answer status instead, once.
func (s *Server) FailPage(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failPages[n] = status
}

// RateLimitOnce makes the next list request answer 429 with Retry-After in
// whole seconds (no header when retryAfter is 0).
func (s *Server) RateLimitOnce(retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limited = append(s.limited, retryAfter)
}

// Requests returns every request received so far.
func (s *Server) Requests() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Recorded, len(s.requests))
	for i, r := range s.requests {
		r.Header = r.Header.Clone()
		r.Query = cloneValues(r.Query)
		out[i] = r
	}
	return out
}

// ServeHTTP answers the endpoints listed in the package doc.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := Recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone()}
	status, hdr, body, count := s.serve(r, &rec)
	rec.Status = status

	s.mu.Lock()
	s.requests = append(s.requests, rec)
	s.mu.Unlock()
	if s.log != nil {
		fmt.Fprintf(s.log, "%s %s %s page=%d items=%d -> %d\n", time.Now().Format(time.TimeOnly), r.Method, r.URL.Path, rec.Page, count, status)
	}
	for k, vs := range hdr {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func errorBody(msg string) []byte {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return b
}

func (s *Server) serve(r *http.Request, rec *Recorded) (status int, hdr http.Header, body []byte, count int) {
	hdr = http.Header{}
	if s.authName != "" && r.Header.Get(s.authName) != s.authVal {
		hdr.Set("WWW-Authenticate", `Basic realm="api"`)
		return http.StatusUnauthorized, hdr, errorBody("authentication required"), 0
	}
	array := false
	switch {
	case r.URL.Path == "/items" && r.Method == http.MethodPost:
		return s.post(r)
	case r.URL.Path == "/items" && r.Method == http.MethodGet:
	case r.URL.Path == "/items/array" && r.Method == http.MethodGet:
		array = true
	case r.URL.Path == "/items" || r.URL.Path == "/items/array":
		return http.StatusMethodNotAllowed, hdr, errorBody("method not allowed"), 0
	default:
		return http.StatusNotFound, hdr, errorBody("not found"), 0
	}

	q := r.URL.Query()
	perPage := DefaultPerPage
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return http.StatusBadRequest, hdr, errorBody("per_page must be a positive integer"), 0
		}
		perPage = min(n, MaxPerPage)
	}
	offset := 0
	switch {
	case q.Get("cursor") != "":
		n, ok := decodeCursor(q.Get("cursor"))
		if !ok {
			return http.StatusBadRequest, hdr, errorBody("invalid cursor"), 0
		}
		offset = n
	case q.Get("page") != "":
		n, err := strconv.Atoi(q.Get("page"))
		if err != nil || n < 1 {
			return http.StatusBadRequest, hdr, errorBody("page must be a positive integer"), 0
		}
		offset = (n - 1) * perPage
	}
	rec.Page = offset/perPage + 1
	filters, err := parseFilters(q)
	if err != nil {
		return http.StatusBadRequest, hdr, errorBody(err.Error()), 0
	}

	s.mu.Lock()
	if len(s.limited) > 0 {
		ra := s.limited[0]
		s.limited = s.limited[1:]
		s.mu.Unlock()
		if ra > 0 {
			hdr.Set("Retry-After", strconv.Itoa(int(ra/time.Second)))
		}
		return http.StatusTooManyRequests, hdr, errorBody("too many requests"), 0
	}
	if st, ok := s.failPages[rec.Page]; ok {
		delete(s.failPages, rec.Page)
		s.mu.Unlock()
		return st, hdr, errorBody(http.StatusText(st)), 0
	}
	var all []map[string]any
	for _, it := range s.sorted() {
		if filters.match(updatedAt(it)) {
			all = append(all, clone(it))
		}
	}
	s.mu.Unlock()

	page := []map[string]any{}
	if offset < len(all) {
		page = all[offset:min(offset+perPage, len(all))]
	}
	var next, cursor any
	if offset+perPage < len(all) {
		nq := cloneValues(q)
		nq.Del("cursor")
		if q.Get("cursor") != "" {
			nq.Set("cursor", encodeCursor(offset+perPage))
		} else {
			nq.Set("page", strconv.Itoa(rec.Page+1))
		}
		link := s.link(r, nq)
		next, cursor = link, encodeCursor(offset+perPage)
		hdr.Add("Link", fmt.Sprintf(`<%s>; rel="next"`, link))
	}
	hdr.Add("Link", fmt.Sprintf(`<%s>; rel="self"`, s.link(r, q)))
	var v any = page
	if !array {
		v = map[string]any{
			"items":         page,
			"links":         map[string]any{"self": s.link(r, q), "next": next},
			"next_cursor":   cursor,
			"total_entries": len(all),
		}
	}
	body, _ = json.Marshal(v)
	return http.StatusOK, hdr, body, len(page)
}

func (s *Server) post(r *http.Request) (int, http.Header, []byte, int) {
	var item map[string]any
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.UseNumber()
	if err := dec.Decode(&item); err != nil || idOf(item) == "" {
		return http.StatusBadRequest, http.Header{}, errorBody("want a JSON object with an id"), 0
	}
	s.mu.Lock()
	stored := clone(s.upsert(item))
	s.mu.Unlock()
	b, _ := json.Marshal(stored)
	return http.StatusCreated, http.Header{}, b, 1
}

// link is the request's URL with query q: absolute unless WithRelativeLinks.
func (s *Server) link(r *http.Request, q url.Values) string {
	u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
	if !s.relative {
		u.Scheme, u.Host = "http", r.Host
		if r.TLS != nil {
			u.Scheme = "https"
		}
	}
	return u.String()
}

// sorted lists the items by updated_at, then id. Callers hold s.mu.
func (s *Server) sorted() []map[string]any {
	out := make([]map[string]any, 0, len(s.items))
	for _, it := range s.items {
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool {
		ti, tj := updatedAt(out[i]), updatedAt(out[j])
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return idOf(out[i]) < idOf(out[j])
	})
	return out
}

// filter is one condition on updated_at.
type filter struct {
	op string // >, >=, <, <=
	t  time.Time
}

type filters []filter

func (fs filters) match(t time.Time) bool {
	for _, f := range fs {
		ok := false
		switch f.op {
		case ">":
			ok = t.After(f.t)
		case ">=":
			ok = !t.Before(f.t)
		case "<":
			ok = t.Before(f.t)
		case "<=":
			ok = !t.After(f.t)
		}
		if !ok {
			return false
		}
	}
	return true
}

func parseFilters(q url.Values) (filters, error) {
	var fs filters
	for _, v := range q["updated_since"] {
		t, ok := parseTime(v)
		if !ok {
			return nil, fmt.Errorf("updated_since: want RFC 3339, a date or unix time")
		}
		fs = append(fs, filter{">=", t})
	}
	for _, v := range q["q[]"] {
		rest, ok := strings.CutPrefix(v, "updated_at:")
		if !ok {
			return nil, fmt.Errorf("q[]: only updated_at filters are supported")
		}
		op := ""
		for _, o := range []string{">=", "<=", ">", "<"} {
			if strings.HasPrefix(rest, o) {
				op = o
				break
			}
		}
		t, tok := parseTime(strings.TrimPrefix(rest, op))
		if op == "" || !tok {
			return nil, fmt.Errorf("q[]: want updated_at:>TIME (or >=, <, <=) with an RFC 3339 time")
		}
		fs = append(fs, filter{op, t})
	}
	return fs, nil
}

func parseTime(v string) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, true
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, true
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if len(strings.TrimLeft(v, "-")) >= 13 {
			return time.UnixMilli(n).UTC(), true
		}
		return time.Unix(n, 0).UTC(), true
	}
	return time.Time{}, false
}

// updatedAt reads an item's updated_at; unreadable is the zero time.
func updatedAt(it map[string]any) time.Time {
	switch v := it["updated_at"].(type) {
	case string:
		t, _ := parseTime(v)
		return t
	case json.Number:
		t, _ := parseTime(v.String())
		return t
	case float64:
		return time.Unix(int64(v), 0).UTC()
	case int:
		return time.Unix(int64(v), 0).UTC()
	case int64:
		return time.Unix(v, 0).UTC()
	}
	return time.Time{}
}

func idOf(it map[string]any) string {
	if it == nil || it["id"] == nil {
		return ""
	}
	return fmt.Sprint(it["id"])
}

func encodeCursor(offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(offset)))
}

func decodeCursor(c string) (int, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, false
	}
	v, ok := strings.CutPrefix(string(b), "offset:")
	n, err := strconv.Atoi(v)
	return n, ok && err == nil && n >= 0
}

// clone copies an item deeply enough that callers cannot change the store.
func clone(it map[string]any) map[string]any {
	b, _ := json.Marshal(it)
	var out map[string]any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	_ = dec.Decode(&out)
	return out
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

var _ http.Handler = (*Server)(nil)
