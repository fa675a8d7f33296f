// Package fhirfake is an in-memory, versioned FHIR R4 server for tests and
// `clinicbridge fake fhir`: create, read, vread, update with If-Match,
// conditional create (If-None-Exist) and conditional update, delete,
// transaction and batch Bundles, search (_id, _lastUpdated, identifier,
// patient, subject, status, _count, _sort) with opaque paging links,
// _history with _since, OperationOutcome errors, ETag/Location/Last-Modified
// headers, bearer auth and a SMART Backend Services token endpoint,
// injectable failures, and a Subscription notifier (classic rest-hook and
// topic-based notification Bundles in R4 Backport, R4B and R5 shapes).
//
// It follows the R4 RESTful API (http://hl7.org/fhir/R4/http.html) where
// tests depend on it, and HAPI's choices where the specification leaves
// room: ids are server-assigned on create, an update whose content equals
// the current version creates no new version, unknown search parameters
// are rejected with 400.
package fhirfake

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ContentType is the FHIR JSON media type.
const ContentType = "application/fhir+json"

// MaxBody is the largest request body the fake reads (413 beyond it).
const MaxBody = 10 << 20

// instantLayout is how the fake writes meta.lastUpdated: milliseconds, UTC.
const instantLayout = "2006-01-02T15:04:05.000Z07:00"

var (
	typeRE = regexp.MustCompile(`^[A-Z][A-Za-z]{1,63}$`)
	idRE   = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)
)

// Recorded is one request the fake received.
type Recorded struct {
	Method string
	Path   string
	Query  string // raw query, without '?'
	Header http.Header
	Body   []byte
	Status int // what the fake answered
}

// version is one immutable version of a resource.
type version struct {
	vid         int
	lastUpdated time.Time
	res         map[string]any // with id and meta; nil for a deletion
	deleted     bool
	method      string // POST, PUT or DELETE: how it was made
	created     bool   // the first version after none or a deletion
}

type record struct {
	typ, id  string
	seq      int
	versions []*version
}

func (r *record) current() *version { return r.versions[len(r.versions)-1] }
func (r *record) live() bool        { return !r.current().deleted }

type histRef struct {
	rec *record
	v   *version
}

// Server is the fake. It is an http.Handler; serve it with httptest and
// call SetBaseURL with the server's URL.
type Server struct {
	log          io.Writer
	now          func() time.Time
	notifyClient *http.Client
	tokenTTL     time.Duration

	mu         sync.Mutex
	base       string
	lastTime   time.Time
	bearer     map[string]bool
	data       map[string]map[string]*record
	history    []histRef
	seq        int
	writes     int
	pages      map[string]pageRef
	pageOrder  []string
	failures   []*Failure
	requests   []Recorded
	clients    map[string]Client
	issued     map[string]time.Time
	jtis       map[string]bool
	assertions []Assertion
	subs       map[string]*subscription
	subOrder   []string
	sent       []Notification
}

// Option configures a Server.
type Option func(*Server)

// WithLog prints one line per request and notification to w: method, path,
// status. Never bodies, queries (identifiers) or headers.
func WithLog(w io.Writer) Option { return func(s *Server) { s.log = w } }

// WithBearer requires `Authorization: Bearer <token>` with one of tokens (or
// a token the SMART endpoint issued) on every request but /metadata and
// the token endpoint.
func WithBearer(tokens ...string) Option {
	return func(s *Server) {
		for _, t := range tokens {
			s.bearer[t] = true
		}
	}
}

// WithClock sets the clock for meta.lastUpdated, token expiry and
// assertion checks (default time.Now). lastUpdated always moves forward by
// at least a millisecond per write, so versions are strictly ordered.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithNotifyClient sets the HTTP client notifications are sent with.
func WithNotifyClient(c *http.Client) Option { return func(s *Server) { s.notifyClient = c } }

// WithTokenTTL sets the lifetime of issued access tokens (default 5m).
func WithTokenTTL(d time.Duration) Option { return func(s *Server) { s.tokenTTL = d } }

// New returns an empty server.
func New(opts ...Option) *Server {
	s := &Server{
		now:          time.Now,
		notifyClient: &http.Client{Timeout: 10 * time.Second},
		tokenTTL:     5 * time.Minute,
		bearer:       map[string]bool{},
		data:         map[string]map[string]*record{},
		pages:        map[string]pageRef{},
		clients:      map[string]Client{},
		issued:       map[string]time.Time{},
		jtis:         map[string]bool{},
		subs:         map[string]*subscription{},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// SetBaseURL sets [base], used in Location headers, fullUrls, paging
// links, notifications and the token endpoint's audience. Until it is set,
// the base is taken from each request's Host.
func (s *Server) SetBaseURL(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.base = strings.TrimRight(u, "/")
}

// BaseURL returns [base] ("" until known).
func (s *Server) BaseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.base
}

// Requests returns every request received so far.
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

// Writes is the number of versions written (creates, updates, deletes):
// the effects a client caused.
func (s *Server) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// Count is the number of live (not deleted) resources of type typ.
func (s *Server) Count(typ string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.data[typ] {
		if r.live() {
			n++
		}
	}
	return n
}

// Read returns the current version of Type/id, as the server would serve it.
func (s *Server) Read(typ, id string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.data[typ][id]
	if r == nil || !r.live() {
		return nil, false
	}
	return cloneMap(r.current().res), true
}

// Versions returns how many versions Type/id has (deletions included).
func (s *Server) Versions(typ, id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.data[typ][id]; r != nil {
		return len(r.versions)
	}
	return 0
}

// Create stores res as a new resource (server-assigned id), as POST
// [base]/Type would, notifying subscriptions. It returns the stored resource.
func (s *Server) Create(res map[string]any) (map[string]any, error) {
	res = normalize(res)
	typ, _ := res["resourceType"].(string)
	s.mu.Lock()
	if oo := validate(typ, res); oo != nil {
		s.mu.Unlock()
		return nil, oo
	}
	_, v, _, jobs := s.put(typ, newID(), res, http.MethodPost)
	out := cloneMap(v.res)
	s.mu.Unlock()
	s.deliver(jobs)
	return out, nil
}

// Update stores res (which must have an id) as a new version of its
// resource, or creates it under that id, as PUT [base]/Type/id would.
func (s *Server) Update(res map[string]any) (map[string]any, error) {
	res = normalize(res)
	typ, _ := res["resourceType"].(string)
	id, _ := res["id"].(string)
	s.mu.Lock()
	if oo := validate(typ, res); oo != nil {
		s.mu.Unlock()
		return nil, oo
	}
	if !idRE.MatchString(id) {
		s.mu.Unlock()
		return nil, outcome(http.StatusBadRequest, "required", "Resource has no id")
	}
	_, v, _, jobs := s.put(typ, id, res, http.MethodPut)
	out := cloneMap(v.res)
	s.mu.Unlock()
	s.deliver(jobs)
	return out, nil
}

// Delete deletes Type/id (a new, deleted version).
func (s *Server) Delete(typ, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.data[typ][id]
	if r == nil || !r.live() {
		return false
	}
	s.remove(r)
	return true
}

// tick returns the next lastUpdated: the clock, but strictly after the last.
func (s *Server) tick() time.Time {
	t := s.now().UTC().Truncate(time.Millisecond)
	if !t.After(s.lastTime) {
		t = s.lastTime.Add(time.Millisecond)
	}
	s.lastTime = t
	return t
}

// put writes res as the next version of typ/id (creating the record when
// needed) and returns the notification jobs it triggers. An update whose
// content equals the current version writes nothing. Called with mu held.
func (s *Server) put(typ, id string, res map[string]any, method string) (*record, *version, bool, []job) {
	byID := s.data[typ]
	if byID == nil {
		byID = map[string]*record{}
		s.data[typ] = byID
	}
	rec := byID[id]
	if rec == nil {
		s.seq++
		rec = &record{typ: typ, id: id, seq: s.seq}
		byID[id] = rec
	} else if rec.live() && sameContent(rec.current().res, res) {
		return rec, rec.current(), false, nil
	}
	created := len(rec.versions) == 0 || rec.current().deleted
	v := &version{vid: len(rec.versions) + 1, lastUpdated: s.tick(), method: method, created: created}
	res = cloneMap(res)
	res["id"] = id
	meta, _ := res["meta"].(map[string]any)
	meta = cloneMap(meta)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["versionId"] = strconv.Itoa(v.vid)
	meta["lastUpdated"] = v.lastUpdated.Format(instantLayout)
	res["meta"] = meta
	v.res = res
	rec.versions = append(rec.versions, v)
	s.history = append(s.history, histRef{rec, v})
	s.writes++
	if typ == "Subscription" {
		s.registerClassic(id, res)
	}
	return rec, v, true, s.matchSubscriptions(rec, v)
}

// remove writes a deletion. Deletions are not notified (R4 rest-hooks
// notify create and update only).
func (s *Server) remove(rec *record) *version {
	v := &version{vid: len(rec.versions) + 1, lastUpdated: s.tick(), deleted: true, method: http.MethodDelete}
	rec.versions = append(rec.versions, v)
	s.history = append(s.history, histRef{rec, v})
	s.writes++
	return v
}

// sameContent compares two resources without id and meta.
func sameContent(a, b map[string]any) bool {
	strip := func(m map[string]any) map[string]any {
		m = cloneMap(m)
		delete(m, "id")
		delete(m, "meta")
		return m
	}
	return reflect.DeepEqual(strip(a), strip(b))
}

func (s *Server) baseFor(r *http.Request) string {
	if s.base != "" {
		return s.base
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	s.base = scheme + "://" + r.Host
	return s.base
}

// ServeHTTP serves the FHIR REST API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	rw := &recorder{ResponseWriter: w}
	var jobs []job
	s.mu.Lock()
	base := s.baseFor(r)
	s.requests = append(s.requests, Recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body})
	idx := len(s.requests) - 1
	switch {
	case err != nil:
		writeOutcome(rw, outcome(http.StatusBadRequest, "structure", "could not read the body"))
	case len(body) > MaxBody:
		writeOutcome(rw, outcome(http.StatusRequestEntityTooLarge, "too-costly", "body too large"))
	default:
		jobs = s.serve(rw, r, body, base)
	}
	s.requests[idx].Status = rw.status
	if s.log != nil {
		fmt.Fprintf(s.log, "fhirfake: %s %s -> %d\n", r.Method, r.URL.Path, rw.status)
	}
	s.mu.Unlock()
	// Notifications go out after the write is committed and before the
	// client gets its answer, so tests see them in order.
	s.deliver(jobs)
	rw.flush()
}

// recorder buffers the answer so notifications can be sent first.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(code int) { r.status = code }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.ResponseWriter.WriteHeader(r.status)
	_, _ = r.ResponseWriter.Write(r.body.Bytes())
}

// serve routes one request. Called with mu held.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, body []byte, base string) []job {
	path := strings.Trim(r.URL.Path, "/")
	if path == "auth/token" {
		if f := s.failure(r, 0); f != nil {
			writeFailure(w, f)
			return nil
		}
		s.token(w, r, body, base)
		return nil
	}
	if path == "metadata" && r.Method == http.MethodGet {
		s.capability(w)
		return nil
	}
	if f := s.failure(r, 0); f != nil {
		writeFailure(w, f)
		return nil
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="fhirfake"`)
		writeOutcome(w, outcome(http.StatusUnauthorized, "login", "Authentication required"))
		return nil
	}
	q := r.URL.Query()
	var seg []string
	if path != "" {
		seg = strings.Split(path, "/")
	}
	switch {
	case len(seg) == 0 && r.Method == http.MethodGet && q.Has("_getpages"):
		s.page(w, r, q.Get("_getpages"), base)
	case len(seg) == 0 && r.Method == http.MethodPost:
		return s.bundle(w, body, base)
	case len(seg) == 1 && seg[0] == "_history" && r.Method == http.MethodGet:
		s.historySearch(w, r, "", "", base)
	case len(seg) >= 1 && !typeRE.MatchString(seg[0]):
		writeOutcome(w, outcome(http.StatusNotFound, "not-supported", "Unknown resource type"))
	case len(seg) == 1 && r.Method == http.MethodGet:
		s.search(w, r, seg[0], q, base)
	case len(seg) == 1 && r.Method == http.MethodPost:
		return s.httpCreate(w, r, seg[0], body, base)
	case len(seg) == 1 && r.Method == http.MethodPut:
		return s.httpConditionalUpdate(w, r, seg[0], body, base)
	case len(seg) == 2 && seg[1] == "_history" && r.Method == http.MethodGet:
		s.historySearch(w, r, seg[0], "", base)
	case len(seg) == 2 && !idRE.MatchString(seg[1]):
		writeOutcome(w, outcome(http.StatusBadRequest, "invalid", "Invalid resource id"))
	case len(seg) == 2 && r.Method == http.MethodGet:
		s.httpRead(w, seg[0], seg[1], "", base)
	case len(seg) == 2 && r.Method == http.MethodPut:
		return s.httpUpdate(w, r, seg[0], seg[1], body, base)
	case len(seg) == 2 && r.Method == http.MethodDelete:
		s.httpDelete(w, seg[0], seg[1])
	case len(seg) == 3 && seg[2] == "_history" && r.Method == http.MethodGet:
		s.historySearch(w, r, seg[0], seg[1], base)
	case len(seg) == 4 && seg[2] == "_history" && r.Method == http.MethodGet:
		s.httpRead(w, seg[0], seg[1], seg[3], base)
	default:
		writeOutcome(w, outcome(http.StatusMethodNotAllowed, "not-supported", "Operation not supported"))
	}
	return nil
}

func (s *Server) authorized(r *http.Request) bool {
	if len(s.bearer) == 0 && len(s.clients) == 0 {
		return true
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	if s.bearer[tok] {
		return true
	}
	exp, ok := s.issued[tok]
	return ok && s.now().Before(exp)
}

// decodeResource reads a JSON object body with numbers kept exact.
func decodeResource(body []byte) (map[string]any, *Outcome) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var res map[string]any
	if err := dec.Decode(&res); err != nil || res == nil || dec.More() {
		return nil, outcome(http.StatusBadRequest, "structure", "Failed to parse request body as JSON resource")
	}
	return res, nil
}

func (s *Server) httpCreate(w http.ResponseWriter, r *http.Request, typ string, body []byte, base string) []job {
	res, oo := decodeResource(body)
	if oo == nil {
		oo = checkType(typ, res)
	}
	if oo == nil {
		oo = validate(typ, res)
	}
	if oo != nil {
		writeOutcome(w, oo)
		return nil
	}
	if crit := r.Header.Get("If-None-Exist"); crit != "" {
		matches, oo := s.conditional(typ, strings.TrimPrefix(crit, "?"))
		switch {
		case oo != nil:
			writeOutcome(w, oo)
			return nil
		case len(matches) > 1:
			writeOutcome(w, outcome(http.StatusPreconditionFailed, "multiple-matches",
				fmt.Sprintf("Failed to create resource: If-None-Exist matched %d resources", len(matches))))
			return nil
		case len(matches) == 1:
			s.writeResource(w, r, http.StatusOK, matches[0], matches[0].current(), base)
			return nil
		}
	}
	rec, v, _, jobs := s.put(typ, newID(), res, http.MethodPost)
	s.writeResource(w, r, http.StatusCreated, rec, v, base)
	return jobs
}

func (s *Server) httpUpdate(w http.ResponseWriter, r *http.Request, typ, id string, body []byte, base string) []job {
	res, oo := decodeResource(body)
	if oo == nil {
		oo = checkType(typ, res)
	}
	if oo == nil {
		if bid, _ := res["id"].(string); bid == "" {
			oo = outcome(http.StatusBadRequest, "required", "Can not update resource, resource body must contain an ID element for update (PUT) operation")
		} else if bid != id {
			oo = outcome(http.StatusBadRequest, "invalid", "Can not update resource, resource body ID does not match the URL ID")
		}
	}
	if oo == nil {
		oo = validate(typ, res)
	}
	if oo != nil {
		writeOutcome(w, oo)
		return nil
	}
	rec := s.data[typ][id]
	if im := r.Header.Get("If-Match"); im != "" {
		want := etagVersion(im)
		if rec == nil || !rec.live() || strconv.Itoa(rec.current().vid) != want {
			writeOutcome(w, outcome(http.StatusPreconditionFailed, "conflict",
				"Version mismatch: If-Match does not name the current version"))
			return nil
		}
	}
	rec, v, wrote, jobs := s.put(typ, id, res, http.MethodPut)
	status := http.StatusOK
	if wrote && v.created {
		status = http.StatusCreated // update as create
	}
	s.writeResource(w, r, status, rec, v, base)
	return jobs
}

func (s *Server) httpConditionalUpdate(w http.ResponseWriter, r *http.Request, typ string, body []byte, base string) []job {
	if r.URL.RawQuery == "" {
		writeOutcome(w, outcome(http.StatusBadRequest, "invalid", "Conditional update needs search criteria, or use PUT [type]/[id]"))
		return nil
	}
	res, oo := decodeResource(body)
	if oo == nil {
		oo = checkType(typ, res)
	}
	if oo == nil {
		oo = validate(typ, res)
	}
	if oo != nil {
		writeOutcome(w, oo)
		return nil
	}
	matches, oo := s.conditional(typ, r.URL.RawQuery)
	if oo != nil {
		writeOutcome(w, oo)
		return nil
	}
	bid, _ := res["id"].(string)
	switch len(matches) {
	case 0:
		id := newID()
		if bid != "" {
			if !idRE.MatchString(bid) {
				writeOutcome(w, outcome(http.StatusBadRequest, "invalid", "Invalid resource id"))
				return nil
			}
			id = bid
		}
		rec, v, _, jobs := s.put(typ, id, res, http.MethodPut)
		s.writeResource(w, r, http.StatusCreated, rec, v, base)
		return jobs
	case 1:
		m := matches[0]
		if bid != "" && bid != m.id {
			writeOutcome(w, outcome(http.StatusBadRequest, "invalid", "Resource ID in the body does not match the resource found by the conditional URL"))
			return nil
		}
		rec, v, _, jobs := s.put(typ, m.id, res, http.MethodPut)
		s.writeResource(w, r, http.StatusOK, rec, v, base)
		return jobs
	default:
		writeOutcome(w, outcome(http.StatusPreconditionFailed, "multiple-matches",
			fmt.Sprintf("Failed to update resource: the conditional URL matched %d resources", len(matches))))
		return nil
	}
}

func (s *Server) httpRead(w http.ResponseWriter, typ, id, vid, base string) {
	rec := s.data[typ][id]
	if rec == nil {
		writeOutcome(w, outcome(http.StatusNotFound, "not-found", fmt.Sprintf("Resource %s/%s is not known", typ, id)))
		return
	}
	v := rec.current()
	if vid != "" {
		n, err := strconv.Atoi(vid)
		if err != nil || n < 1 || n > len(rec.versions) {
			writeOutcome(w, outcome(http.StatusNotFound, "not-found", fmt.Sprintf("Version %s of %s/%s is not known", vid, typ, id)))
			return
		}
		v = rec.versions[n-1]
	}
	if v.deleted {
		writeOutcome(w, outcome(http.StatusGone, "deleted", fmt.Sprintf("Resource %s/%s was deleted", typ, id)))
		return
	}
	setVersionHeaders(w, v)
	writeJSON(w, http.StatusOK, v.res)
}

func (s *Server) httpDelete(w http.ResponseWriter, typ, id string) {
	rec := s.data[typ][id]
	if rec == nil {
		writeOutcome(w, outcome(http.StatusNotFound, "not-found", fmt.Sprintf("Resource %s/%s is not known", typ, id)))
		return
	}
	if rec.live() {
		v := s.remove(rec)
		w.Header().Set("ETag", fmt.Sprintf(`W/"%d"`, v.vid))
	}
	w.WriteHeader(http.StatusNoContent)
}

// conditional runs the search criteria of a conditional create or update.
func (s *Server) conditional(typ, query string) ([]*record, *Outcome) {
	q, err := url.ParseQuery(query)
	if err != nil || len(q) == 0 {
		return nil, outcome(http.StatusBadRequest, "invalid", "Invalid conditional criteria")
	}
	sp, oo := parseSearch(typ, q)
	if oo != nil {
		return nil, oo
	}
	return s.match(typ, sp), nil
}

func (s *Server) writeResource(w http.ResponseWriter, r *http.Request, status int, rec *record, v *version, base string) {
	setVersionHeaders(w, v)
	w.Header().Set("Location", fmt.Sprintf("%s/%s/%s/_history/%d", base, rec.typ, rec.id, v.vid))
	switch prefer(r) {
	case "minimal":
		w.WriteHeader(status)
	case "OperationOutcome":
		oo := outcome(status, "informational", "Operation succeeded")
		oo.Issue[0].Severity = "information"
		writeJSON(w, status, oo)
	default:
		writeJSON(w, status, v.res)
	}
}

func prefer(r *http.Request) string {
	for _, p := range strings.Split(r.Header.Get("Prefer"), ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && k == "return" {
			return strings.Trim(v, `"`)
		}
	}
	return "representation"
}

func setVersionHeaders(w http.ResponseWriter, v *version) {
	w.Header().Set("ETag", fmt.Sprintf(`W/"%d"`, v.vid))
	w.Header().Set("Last-Modified", v.lastUpdated.Format(http.TimeFormat))
}

func etagVersion(s string) string {
	return strings.Trim(strings.TrimPrefix(strings.TrimSpace(s), "W/"), `"`)
}

func checkType(typ string, res map[string]any) *Outcome {
	if rt, _ := res["resourceType"].(string); rt != typ {
		return outcome(http.StatusBadRequest, "invalid", fmt.Sprintf("Resource type in the body does not match the URL (%s)", typ))
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"fatal","code":"exception"}]}`)
	}
	w.Header().Set("Content-Type", ContentType+"; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (s *Server) capability(w http.ResponseWriter) {
	writeJSON(w, http.StatusOK, map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"kind":         "instance",
		"fhirVersion":  "4.0.1",
		"format":       []any{"json"},
		"software":     map[string]any{"name": "clinicbridge fhirfake"},
		"rest": []any{map[string]any{
			"mode": "server",
			"interaction": []any{
				map[string]any{"code": "transaction"}, map[string]any{"code": "batch"}, map[string]any{"code": "history-system"},
			},
		}},
	})
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// normalize round-trips v through JSON with exact numbers, so resources
// given as Go values compare like decoded ones.
func normalize(v map[string]any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	out, _ := decodeResource(b)
	if out == nil {
		return v
	}
	return out
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	return cloneValue(m).(map[string]any)
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = cloneValue(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = cloneValue(x)
		}
		return out
	default:
		return v
	}
}
