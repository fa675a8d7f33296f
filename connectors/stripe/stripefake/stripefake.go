// Package stripefake is a stateful stand-in for Stripe's events: it keeps an
// event store, delivers each new event as a signed webhook (dropping a
// seeded, reproducible share of them, as a flaky network would), and serves
// GET /v1/events as Stripe does (created filters, types[], limit,
// starting_after/ending_before, newest first, Bearer auth, Stripe's error
// JSON), with injectable failures. Tests use it as an httptest handler;
// `clinicbridge fake stripe` serves it with control endpoints under /_fake/.
package stripefake

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ListWindow is how long events stay listable (Stripe: 30 days).
const ListWindow = 30 * 24 * time.Hour

// Event is one event the fake holds.
type Event struct {
	ID      string
	Type    string
	Created time.Time
	// Body is the event's JSON, byte for byte what the webhook carried and
	// what GET /v1/events lists.
	Body []byte
	// Dropped says the webhook was never sent (DropShare); Status is the
	// receiver's answer when it was (0 when sending failed).
	Dropped bool
	Status  int
}

// Request is one API request the fake received.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	Status int
}

// Failure is a scripted answer.
type Failure struct {
	Status     int
	RetryAfter time.Duration
}

// Server is the fake. It is an http.Handler; serve it with httptest.
type Server struct {
	client *http.Client
	log    io.Writer

	mu        sync.Mutex
	apiKey    string
	now       func() time.Time
	rng       *rand.Rand
	seq       int
	events    []*Event
	hookURL   string
	secret    string
	dropShare float64
	next      []Failure
	pages     map[int]Failure
	page      int
	requests  []Request
}

// Option configures a Server.
type Option func(*Server)

// WithAPIKey makes the fake accept only this key (default: any key that
// starts with sk_test_, sk_live_ or rk_, as stripe-mock does).
func WithAPIKey(key string) Option { return func(s *Server) { s.apiKey = key } }

// WithWebhook sets where new events are posted and the endpoint's signing
// secret (whsec_...).
func WithWebhook(url, secret string) Option {
	return func(s *Server) { s.hookURL, s.secret = url, secret }
}

// WithClock sets the clock for created times, signatures and the 30-day window.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithSeed seeds event ids and DropShare's choices (default 1), so a run is
// reproducible.
func WithSeed(seed uint64) Option {
	return func(s *Server) { s.rng = rand.New(rand.NewPCG(seed, seed^0x5eed)) }
}

// WithLog prints one line per request and per emitted event to w: method,
// path, status; event id, type and delivery. Never bodies or keys.
func WithLog(w io.Writer) Option { return func(s *Server) { s.log = w } }

// WithHTTPClient sets the client webhooks are sent with.
func WithHTTPClient(c *http.Client) Option { return func(s *Server) { s.client = c } }

// New returns an empty fake.
func New(opts ...Option) *Server {
	s := &Server{
		client: &http.Client{Timeout: 30 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()},
		now:    time.Now,
		rng:    rand.New(rand.NewPCG(1, 1^0x5eed)),
		pages:  map[int]Failure{},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// SetWebhook changes where new events are posted and with which secret.
func (s *Server) SetWebhook(url, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hookURL, s.secret = url, secret
}

// DropShare makes the fake skip sending the webhook for about share (0..1)
// of the events emitted from now on. Which ones is decided by the seed, so
// a run is reproducible; Dropped reports them.
func (s *Server) DropShare(share float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropShare = share
}

// FailNext makes the next API requests answer the given failures, in order.
func (s *Server) FailNext(f ...Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = append(s.next, f...)
}

// FailPage makes page n (1 = the request without starting_after or
// ending_before) of the next listing answer status, once.
func (s *Server) FailPage(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pages[n] = Failure{Status: status}
}

// Events returns every event, oldest first.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Event, len(s.events))
	for i, e := range s.events {
		out[i] = *e
		out[i].Body = bytes.Clone(e.Body)
	}
	return out
}

// Dropped returns the ids of events whose webhook was never sent, oldest first.
func (s *Server) Dropped() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, e := range s.events {
		if e.Dropped {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// Requests returns the API requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	copy(out, s.requests)
	return out
}

// eventJSON is a Stripe event in Stripe's field order.
type eventJSON struct {
	ID              string          `json:"id"`
	Object          string          `json:"object"`
	APIVersion      string          `json:"api_version"`
	Created         int64           `json:"created"`
	Data            eventData       `json:"data"`
	Livemode        bool            `json:"livemode"`
	PendingWebhooks int             `json:"pending_webhooks"`
	Request         json.RawMessage `json:"request"`
	Type            string          `json:"type"`
}

type eventData struct {
	Object any `json:"object"`
}

const idChars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Emit records a new event of type typ about object (its data.object; nil
// means SampleObject(typ)) and, unless DropShare drops it or no webhook is
// set, posts it signed to the webhook URL and waits for the answer. The
// event is stored, and listable, whatever happens to the webhook.
func (s *Server) Emit(ctx context.Context, typ string, object map[string]any) (Event, error) {
	if object == nil {
		object = SampleObject(typ)
	}
	s.mu.Lock()
	s.seq++
	id := make([]byte, 24)
	for i := range id {
		id[i] = idChars[s.rng.IntN(len(idChars))]
	}
	now := s.now()
	body, err := json.Marshal(eventJSON{
		ID: "evt_" + string(id), Object: "event", APIVersion: APIVersion, Created: now.Unix(),
		Data: eventData{Object: object}, PendingWebhooks: 1, Type: typ,
		Request: json.RawMessage(`{"id":null,"idempotency_key":null}`),
	})
	if err != nil {
		s.mu.Unlock()
		return Event{}, fmt.Errorf("stripefake: object is not JSON-encodable: %w", err)
	}
	ev := &Event{ID: "evt_" + string(id), Type: typ, Created: time.Unix(now.Unix(), 0), Body: body}
	// Draw for every event, sent or not, so one seed always drops the same ones.
	drop := s.rng.Float64() < s.dropShare
	ev.Dropped = drop || s.hookURL == ""
	s.events = append(s.events, ev)
	hook, secret := s.hookURL, s.secret
	s.mu.Unlock()

	if ev.Dropped {
		s.logf("emit %s %s: webhook dropped", ev.ID, typ)
		return s.snapshot(ev), nil
	}
	status, err := s.post(ctx, hook, secret, now, body)
	s.mu.Lock()
	ev.Status = status
	s.mu.Unlock()
	s.logf("emit %s %s: webhook -> %d", ev.ID, typ, status)
	return s.snapshot(ev), err
}

// Resend posts an existing event's webhook again (as Stripe's retries and
// the Dashboard's "Resend" do), signed now.
func (s *Server) Resend(ctx context.Context, id string) (int, error) {
	s.mu.Lock()
	var ev *Event
	for _, e := range s.events {
		if e.ID == id {
			ev = e
		}
	}
	hook, secret, now := s.hookURL, s.secret, s.now()
	s.mu.Unlock()
	if ev == nil {
		return 0, fmt.Errorf("stripefake: no event %s", id)
	}
	if hook == "" {
		return 0, errors.New("stripefake: no webhook set")
	}
	return s.post(ctx, hook, secret, now, ev.Body)
}

func (s *Server) snapshot(ev *Event) Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := *ev
	out.Body = bytes.Clone(ev.Body)
	return out
}

func (s *Server) post(ctx context.Context, hook, secret string, now time.Time, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	t := strconv.FormatInt(now.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(t + "."))
	m.Write(body)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	req.Header.Set("Stripe-Signature", "t="+t+",v1="+hex.EncodeToString(m.Sum(nil)))
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}

func (s *Server) logf(format string, args ...any) {
	if s.log != nil {
		fmt.Fprintf(s.log, time.Now().Format(time.TimeOnly)+" "+format+"\n", args...)
	}
}

// ServeHTTP answers the API and the /_fake/ control endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/_fake/"):
		s.control(w, r)
		return
	case r.URL.Path == "/v1/events" || strings.HasPrefix(r.URL.Path, "/v1/events/"):
	default:
		s.answer(w, r, http.StatusNotFound, apiErr("invalid_request_error", "", "", "Unrecognized request URL ("+r.Method+": "+r.URL.Path+")."))
		return
	}
	if r.Method != http.MethodGet {
		s.answer(w, r, http.StatusMethodNotAllowed, apiErr("invalid_request_error", "", "", "Only GET is supported by this fake on "+r.URL.Path+"."))
		return
	}
	if status, body := s.authorize(r); status != 0 {
		s.answer(w, r, status, body)
		return
	}
	if id, ok := strings.CutPrefix(r.URL.Path, "/v1/events/"); ok {
		s.retrieve(w, r, id)
		return
	}
	s.list(w, r)
}

func (s *Server) authorize(r *http.Request) (int, []byte) {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		if u, _, basic := r.BasicAuth(); basic {
			key, ok = u, true
		}
	}
	if !ok || key == "" {
		return http.StatusUnauthorized, apiErr("invalid_request_error", "", "",
			"You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
	}
	s.mu.Lock()
	want := s.apiKey
	s.mu.Unlock()
	valid := key == want
	if want == "" {
		valid = strings.HasPrefix(key, "sk_test_") || strings.HasPrefix(key, "sk_live_") || strings.HasPrefix(key, "rk_")
	}
	if !valid {
		masked := key
		if len(masked) > 4 {
			masked = "****" + masked[len(masked)-4:]
		}
		return http.StatusUnauthorized, apiErr("invalid_request_error", "", "", "Invalid API Key provided: "+masked)
	}
	return 0, nil
}

func (s *Server) retrieve(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	var body []byte
	for _, e := range s.events {
		if e.ID == id {
			body = e.Body
		}
	}
	s.mu.Unlock()
	if body == nil {
		s.answer(w, r, http.StatusNotFound, apiErr("invalid_request_error", "resource_missing", "id", "No such event: '"+id+"'"))
		return
	}
	s.answer(w, r, http.StatusOK, body)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	if q.Get("starting_after") == "" && q.Get("ending_before") == "" {
		s.page = 1
	} else {
		s.page++
	}
	var fail *Failure
	if len(s.next) > 0 {
		fail = &s.next[0]
		s.next = s.next[1:]
	} else if f, ok := s.pages[s.page]; ok {
		fail = &f
		delete(s.pages, s.page)
	}
	s.mu.Unlock()
	if fail != nil {
		if fail.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(fail.RetryAfter/time.Second)))
		}
		typ, msg := "api_error", "An unknown error occurred while processing this request."
		if fail.Status == http.StatusTooManyRequests {
			typ, msg = "invalid_request_error", "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests."
		}
		code := ""
		if fail.Status == http.StatusTooManyRequests {
			code = "rate_limit"
		}
		s.answer(w, r, fail.Status, apiErr(typ, code, "", msg))
		return
	}

	filter, perr := parseFilter(q)
	if perr != nil {
		s.answer(w, r, http.StatusBadRequest, apiErr("invalid_request_error", "parameter_invalid", perr.param, perr.msg))
		return
	}
	s.mu.Lock()
	floor := s.now().Add(-ListWindow).Unix()
	var matched []*Event
	for i := len(s.events) - 1; i >= 0; i-- { // newest first among equal created
		e := s.events[i]
		if e.Created.Unix() >= floor && filter.match(e) {
			matched = append(matched, e)
		}
	}
	sort.SliceStable(matched, func(i, j int) bool { return matched[i].Created.After(matched[j].Created) })
	var page []*Event
	hasMore := false
	switch {
	case filter.startingAfter != "":
		i := indexOf(matched, filter.startingAfter)
		if i < 0 {
			s.mu.Unlock()
			s.answer(w, r, http.StatusBadRequest, apiErr("invalid_request_error", "resource_missing", "starting_after", "No such event: '"+filter.startingAfter+"'"))
			return
		}
		rest := matched[i+1:]
		page, hasMore = rest[:min(filter.limit, len(rest))], len(rest) > filter.limit
	case filter.endingBefore != "":
		i := indexOf(matched, filter.endingBefore)
		if i < 0 {
			s.mu.Unlock()
			s.answer(w, r, http.StatusBadRequest, apiErr("invalid_request_error", "resource_missing", "ending_before", "No such event: '"+filter.endingBefore+"'"))
			return
		}
		from := max(0, i-filter.limit)
		page, hasMore = matched[from:i], from > 0
	default:
		page, hasMore = matched[:min(filter.limit, len(matched))], len(matched) > filter.limit
	}
	data := make([]json.RawMessage, len(page))
	for i, e := range page {
		data[i] = bytes.Clone(e.Body)
	}
	s.mu.Unlock()
	body, _ := json.Marshal(struct {
		Object  string            `json:"object"`
		Data    []json.RawMessage `json:"data"`
		HasMore bool              `json:"has_more"`
		URL     string            `json:"url"`
	}{"list", data, hasMore, "/v1/events"})
	s.answer(w, r, http.StatusOK, body)
}

func indexOf(evs []*Event, id string) int {
	for i, e := range evs {
		if e.ID == id {
			return i
		}
	}
	return -1
}

type filter struct {
	gte, gt, lte, lt *int64
	types            map[string]bool
	typePattern      string
	delivery         *bool
	limit            int
	startingAfter    string
	endingBefore     string
}

type paramErr struct{ param, msg string }

func parseFilter(q url.Values) (filter, *paramErr) {
	f := filter{limit: 10}
	for _, c := range []struct {
		name string
		dst  **int64
	}{{"created[gte]", &f.gte}, {"created[gt]", &f.gt}, {"created[lte]", &f.lte}, {"created[lt]", &f.lt}, {"created", &f.gte}} {
		v := q.Get(c.name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return f, &paramErr{c.name, "Invalid integer: " + v}
		}
		if c.name == "created" {
			f.gte, f.lte = &n, &n
			continue
		}
		*c.dst = &n
	}
	types := q["types[]"]
	if t := q.Get("type"); t != "" {
		if len(types) > 0 {
			return f, &paramErr{"types", "You may only specify one of these parameters: type, types."}
		}
		f.typePattern = t
	}
	if len(types) > 20 {
		return f, &paramErr{"types", "Invalid array: types must have at most 20 elements."}
	}
	if len(types) > 0 {
		f.types = map[string]bool{}
		for _, t := range types {
			f.types[t] = true
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return f, &paramErr{"limit", "Invalid limit: must be between 1 and 100"}
		}
		f.limit = n
	}
	if v := q.Get("delivery_success"); v != "" {
		b := v == "true"
		if v != "true" && v != "false" {
			return f, &paramErr{"delivery_success", "Invalid boolean: " + v}
		}
		f.delivery = &b
	}
	f.startingAfter, f.endingBefore = q.Get("starting_after"), q.Get("ending_before")
	if f.startingAfter != "" && f.endingBefore != "" {
		return f, &paramErr{"starting_after", "You may only specify one of these parameters: ending_before, starting_after."}
	}
	return f, nil
}

func (f filter) match(e *Event) bool {
	c := e.Created.Unix()
	switch {
	case f.gte != nil && c < *f.gte, f.gt != nil && c <= *f.gt, f.lte != nil && c > *f.lte, f.lt != nil && c >= *f.lt:
		return false
	case f.types != nil && !f.types[e.Type]:
		return false
	case f.typePattern != "" && !matchType(f.typePattern, e.Type):
		return false
	case f.delivery != nil && *f.delivery != (!e.Dropped && e.Status >= 200 && e.Status < 300):
		return false
	}
	return true
}

// matchType matches Stripe's type filter, where * stands for any text.
func matchType(pattern, typ string) bool {
	prefix, rest, wild := strings.Cut(pattern, "*")
	if !wild {
		return pattern == typ
	}
	return strings.HasPrefix(typ, prefix) && strings.HasSuffix(typ[len(prefix):], rest)
}

func apiErr(typ, code, param, msg string) []byte {
	e := map[string]any{"type": typ, "message": msg}
	if code != "" {
		e["code"] = code
		e["doc_url"] = "https://stripe.com/docs/error-codes/" + strings.ReplaceAll(code, "_", "-")
	}
	if param != "" {
		e["param"] = param
	}
	b, _ := json.Marshal(map[string]any{"error": e})
	return b
}

func (s *Server) answer(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Status: status})
	s.mu.Unlock()
	s.logf("%s %s -> %d", r.Method, r.URL.Path, status)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake"+strconv.Itoa(int(time.Now().UnixNano()%1e9)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// control serves the /_fake/ endpoints that `clinicbridge fake stripe`
// offers instead of the Dashboard:
//
//	POST /_fake/webhook {"url": "...", "secret": "whsec_..."}   where to send events
//	POST /_fake/emit    {"type": "payment_intent.succeeded", "object": {...}}   create an event
//	POST /_fake/drop    {"share": 0.2}   drop a share of webhooks
func (s *Server) control(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var in struct {
		URL    string         `json:"url"`
		Secret string         `json:"secret"`
		Type   string         `json:"type"`
		Object map[string]any `json:"object"`
		Share  float64        `json:"share"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		http.Error(w, "body must be JSON", http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/_fake/webhook":
		if in.URL == "" || in.Secret == "" {
			http.Error(w, "url and secret are required", http.StatusBadRequest)
			return
		}
		s.SetWebhook(in.URL, in.Secret)
		s.logf("webhook endpoint set to %s", in.URL)
		w.WriteHeader(http.StatusNoContent)
	case "/_fake/drop":
		s.DropShare(in.Share)
		w.WriteHeader(http.StatusNoContent)
	case "/_fake/emit":
		if in.Type == "" {
			http.Error(w, "type is required", http.StatusBadRequest)
			return
		}
		ev, err := s.Emit(r.Context(), in.Type, in.Object)
		out := map[string]any{"id": ev.ID, "type": ev.Type, "created": ev.Created.Unix(), "dropped": ev.Dropped, "status": ev.Status}
		if err != nil {
			out["error"] = "sending the webhook failed"
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	default:
		http.NotFound(w, r)
	}
}

var _ http.Handler = (*Server)(nil)
