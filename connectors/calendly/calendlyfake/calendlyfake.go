// Package calendlyfake is a stateful stand-in for Calendly. It keeps
// scheduled events and their invitees and serves them as Calendly's API does
// (GET /scheduled_events and GET /scheduled_events/{uuid}/invitees: Bearer
// token, organization scope, start-time window, status filter, count and
// page_token paging with next_page, a per-token rate limit with
// X-RateLimit-* headers). Helpers book, reschedule and cancel the way
// Calendly does (a reschedule cancels the old invitee with rescheduled: true
// and creates a new one whose old_invitee points back) and post the signed
// webhooks Calendly would send, optionally dropping a deterministic share.
// Failures can be injected per page. It is an http.Handler: serve it with
// httptest in tests, or with `clinicbridge fake calendly`.
//
// The package does not import the connector: it signs and shapes webhooks on
// its own, so the connector is tested against an independent implementation.
package calendlyfake

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
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

	"github.com/clinicbridge/clinicbridge/internal/fakehttp"
)

// Defaults.
const (
	// URIBase is the host every resource URI names, wherever the fake is served.
	URIBase             = "https://api.calendly.com"
	DefaultToken        = "calendly_pat_test_0123456789abcdef"
	DefaultOrganization = URIBase + "/organizations/AAAAAAAAAAAAAAAA"
	// DefaultRateLimit is Calendly's limit on paid plans: 500 requests a minute per user.
	DefaultRateLimit = 500
	hostURI          = URIBase + "/users/BDHGHFGKK4ZCLW2B"
	timeFormat       = "2006-01-02T15:04:05.000000Z"
)

// Statuses of events and invitees.
const (
	StatusActive   = "active"
	StatusCanceled = "canceled"
)

// QA is one answer on the booking form.
type QA struct {
	Question string
	Answer   string
}

// Cancellation says who canceled and why.
type Cancellation struct {
	CanceledBy   string
	Reason       string
	CancelerType string // invitee | host
	CreatedAt    time.Time
}

// Event is a scheduled event.
type Event struct {
	UUID          string
	Name          string
	Status        string
	Start, End    time.Time
	Location      string
	InviteesLimit int // 1 for one-on-one; more for a group event
	Cancellation  *Cancellation
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// URI is the event's canonical reference.
func (e Event) URI() string { return URIBase + "/scheduled_events/" + e.UUID }

// Invitee is someone booked into an event.
type Invitee struct {
	UUID               string
	EventUUID          string
	Name               string
	Email              string
	Timezone           string
	TextReminderNumber string
	Questions          []QA
	Status             string
	Rescheduled        bool
	OldInvitee         string // URI
	NewInvitee         string // URI
	Cancellation       *Cancellation
	CreatedAt          time.Time
	UpdatedAt          time.Time
}

// URI is the invitee's canonical reference (the connector's event key).
func (i Invitee) URI() string {
	return URIBase + "/scheduled_events/" + i.EventUUID + "/invitees/" + i.UUID
}

// Booking is what Create books.
type Booking struct {
	Name     string
	Email    string
	Timezone string
	// Phone is the invitee's text_reminder_number.
	Phone     string
	EventName string
	Start     time.Time
	Duration  time.Duration
	Questions []QA
	// GroupLimit > 1 makes a group event with that many seats.
	GroupLimit int
	// Event, when set, books into this existing group event (its URI)
	// instead of creating one. As a safeguard test, the event's updated_at
	// does not move.
	Event string
}

// Delivery is one webhook the fake sent, or dropped.
type Delivery struct {
	Event   string // invitee.created, invitee.canceled
	Invitee string // URI
	Header  http.Header
	Body    []byte
	Dropped bool
	Status  int
	Err     string
}

// Request is one API request the fake answered.
type Request struct {
	Method string
	Path   string
	Query  string
	Status int
}

// Server is the fake. Create it with New.
type Server struct {
	log    io.Writer
	client *http.Client

	mu           sync.Mutex
	now          func() time.Time
	tokens       map[string]bool
	anyToken     bool
	organization string
	limit        int
	buckets      map[string]*bucket
	events       []*Event
	eventByUUID  map[string]*Event
	invitees     []*Invitee
	inviteeByURI map[string]*Invitee
	ids          *rand.Rand
	drops        *rand.Rand
	dropShare    float64
	hookURL      string
	key          string
	fails        map[int]int
	// reqMu guards requests alone: answers are written while mu is held.
	reqMu      sync.Mutex
	requests   []Request
	deliveries []Delivery
}

type bucket struct {
	start time.Time
	count int
}

// Option configures a Server.
type Option func(*Server)

// WithToken makes token (also) accepted; without any, DefaultToken is.
func WithToken(token string) Option { return func(s *Server) { s.tokens[token] = true } }

// AcceptAnyToken accepts any non-empty Bearer token (`clinicbridge fake`).
func AcceptAnyToken() Option { return func(s *Server) { s.anyToken = true } }

// WithOrganization sets the organization URI the token may list (default DefaultOrganization).
func WithOrganization(uri string) Option { return func(s *Server) { s.organization = uri } }

// WithRateLimit sets the requests a token may make per minute (default 500).
func WithRateLimit(perMinute int) Option { return func(s *Server) { s.limit = perMinute } }

// WithClock sets the fake's clock (timestamps, the rate-limit window).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithLog prints one line per API request and per webhook to w. Never
// headers or invitee data.
func WithLog(w io.Writer) Option { return func(s *Server) { s.log = w } }

// WithWebhook makes the helpers post signed webhooks to url, as a webhook
// subscription with that callback URL and signing key would.
func WithWebhook(url, signingKey string) Option {
	return func(s *Server) { s.hookURL, s.key = url, signingKey }
}

// WithSeed seeds the UUIDs the fake makes and which webhooks DropShare drops.
func WithSeed(seed uint64) Option {
	return func(s *Server) {
		s.ids = rand.New(rand.NewPCG(seed, 0x5eed))
		s.drops = rand.New(rand.NewPCG(seed, 0xd209))
	}
}

// WithHTTPClient sends webhooks with c (default: 15 s timeout, as Calendly's read timeout).
func WithHTTPClient(c *http.Client) Option { return func(s *Server) { s.client = c } }

// New returns an empty fake.
func New(opts ...Option) *Server {
	s := &Server{
		client:       &http.Client{Timeout: 15 * time.Second},
		now:          time.Now,
		tokens:       map[string]bool{},
		organization: DefaultOrganization,
		limit:        DefaultRateLimit,
		buckets:      map[string]*bucket{},
		eventByUUID:  map[string]*Event{},
		inviteeByURI: map[string]*Invitee{},
		fails:        map[int]int{},
	}
	WithSeed(1)(s)
	for _, o := range opts {
		o(s)
	}
	if len(s.tokens) == 0 {
		s.tokens[DefaultToken] = true
	}
	return s
}

// DropShare makes the fake drop share (0..1) of the webhooks it would send,
// chosen by the seeded generator; Dropped reports which.
func (s *Server) DropShare(share float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropShare = share
}

// FailPage makes every request for page n (1-based) of GET /scheduled_events
// answer status until ClearFailures.
func (s *Server) FailPage(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails[n] = status
}

// ClearFailures removes every injected failure.
func (s *Server) ClearFailures() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails = map[int]int{}
}

// Requests returns the API requests answered so far.
func (s *Server) Requests() []Request {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Deliveries returns every webhook sent or dropped, in order.
func (s *Server) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Delivery, len(s.deliveries))
	for i, d := range s.deliveries {
		d.Header = d.Header.Clone()
		d.Body = bytes.Clone(d.Body)
		out[i] = d
	}
	return out
}

// Dropped returns the webhooks DropShare dropped.
func (s *Server) Dropped() []Delivery {
	var out []Delivery
	for _, d := range s.Deliveries() {
		if d.Dropped {
			out = append(out, d)
		}
	}
	return out
}

// Invitee returns the invitee with uri.
func (s *Server) Invitee(uri string) (Invitee, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.inviteeByURI[uri]
	if !ok {
		return Invitee{}, false
	}
	return cloneInvitee(i), true
}

// Event returns the scheduled event with uri.
func (s *Server) Event(uri string) (Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.eventByUUID[lastSegment(uri)]
	if !ok {
		return Event{}, false
	}
	return *e, true
}

func cloneInvitee(i *Invitee) Invitee {
	c := *i
	c.Questions = append([]QA(nil), i.Questions...)
	if i.Cancellation != nil {
		cc := *i.Cancellation
		c.Cancellation = &cc
	}
	return c
}

// ---- changes, as Calendly makes them ----

// Create books an invitee (a new scheduled event, or b.Event) and sends
// invitee.created.
func (s *Server) Create(b Booking) (Invitee, error) {
	s.mu.Lock()
	now := s.now().UTC()
	var ev *Event
	if b.Event != "" {
		ev = s.eventByUUID[lastSegment(b.Event)]
		if ev == nil || ev.Status != StatusActive || ev.InviteesLimit <= 1 {
			s.mu.Unlock()
			return Invitee{}, fmt.Errorf("calendlyfake: no active group event %q", b.Event)
		}
	} else {
		ev = s.newEvent(b, now)
	}
	inv := s.newInvitee(ev, b, now)
	p := s.webhookPayload(inv)
	out := cloneInvitee(inv)
	s.mu.Unlock()
	s.send("invitee.created", out.URI(), p)
	return out, nil
}

// Reschedule moves an invitee to newStart as Calendly does: the invitee is
// canceled with rescheduled: true and new_invitee set (its one-on-one event
// canceled too), a new event and invitee are created with old_invitee set,
// and invitee.canceled then invitee.created are sent. It returns the new
// invitee's URI.
func (s *Server) Reschedule(inviteeURI string, newStart time.Time) (string, error) {
	s.mu.Lock()
	old, ok := s.inviteeByURI[inviteeURI]
	if !ok || old.Status != StatusActive {
		s.mu.Unlock()
		return "", fmt.Errorf("calendlyfake: no active invitee %q", inviteeURI)
	}
	now := s.now().UTC()
	oldEv := s.eventByUUID[old.EventUUID]
	b := Booking{Name: old.Name, Email: old.Email, Timezone: old.Timezone, Phone: old.TextReminderNumber,
		EventName: oldEv.Name, Start: newStart, Duration: oldEv.End.Sub(oldEv.Start), Questions: old.Questions}
	ev := s.newEvent(b, now)
	inv := s.newInvitee(ev, b, now)
	inv.OldInvitee = old.URI()

	cancel := &Cancellation{CanceledBy: old.Name, Reason: "", CancelerType: "invitee", CreatedAt: now}
	old.Status = StatusCanceled
	old.Rescheduled = true
	old.NewInvitee = inv.URI()
	old.Cancellation = cancel
	old.UpdatedAt = now
	if oldEv.InviteesLimit <= 1 {
		oldEv.Status = StatusCanceled
		cc := *cancel
		oldEv.Cancellation = &cc
		oldEv.UpdatedAt = now
	}
	canceled := s.webhookPayload(old)
	created := s.webhookPayload(inv)
	oldURI, newURI := old.URI(), inv.URI()
	s.mu.Unlock()
	s.send("invitee.canceled", oldURI, canceled)
	s.send("invitee.created", newURI, created)
	return newURI, nil
}

// Cancel cancels an invitee (and its one-on-one event) and sends invitee.canceled.
func (s *Server) Cancel(inviteeURI, reason string) error {
	s.mu.Lock()
	inv, ok := s.inviteeByURI[inviteeURI]
	if !ok || inv.Status != StatusActive {
		s.mu.Unlock()
		return fmt.Errorf("calendlyfake: no active invitee %q", inviteeURI)
	}
	now := s.now().UTC()
	cancel := &Cancellation{CanceledBy: inv.Name, Reason: reason, CancelerType: "invitee", CreatedAt: now}
	inv.Status = StatusCanceled
	inv.Cancellation = cancel
	inv.UpdatedAt = now
	if ev := s.eventByUUID[inv.EventUUID]; ev.InviteesLimit <= 1 {
		ev.Status = StatusCanceled
		cc := *cancel
		ev.Cancellation = &cc
		ev.UpdatedAt = now
	}
	p := s.webhookPayload(inv)
	s.mu.Unlock()
	s.send("invitee.canceled", inviteeURI, p)
	return nil
}

var (
	firstNames = []string{"Sam", "Alex", "Jordan", "Priya", "Tomasz", "Aisha", "Morgan", "Chen", "Lucia", "Oluwaseun"}
	lastNames  = []string{"Taylor", "Morgan", "Okafor", "Kowalski", "Patel", "Nguyen", "Garcia", "Murphy", "Schmidt", "Haddad"}
	eventNames = []string{"Follow-up consultation", "New patient appointment", "Physiotherapy session"}
)

// Populate books n realistic invitees over the coming week (webhooks are
// sent only if WithWebhook was given).
func (s *Server) Populate(n int) {
	for i := 0; i < n; i++ {
		s.mu.Lock()
		first := firstNames[s.ids.IntN(len(firstNames))]
		last := lastNames[s.ids.IntN(len(lastNames))]
		name := eventNames[s.ids.IntN(len(eventNames))]
		start := s.now().UTC().Truncate(time.Hour).Add(time.Duration(24+s.ids.IntN(24*7)) * time.Hour)
		phone := fmt.Sprintf("+447700900%03d", s.ids.IntN(1000))
		s.mu.Unlock()
		_, _ = s.Create(Booking{Name: first + " " + last, Email: strings.ToLower(first+"."+last) + "@example.com",
			Timezone: "Europe/London", Phone: phone, EventName: name, Start: start})
	}
}

// newUUID makes a version 4 UUID from the seeded generator. Callers hold s.mu.
func (s *Server) newUUID() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(s.ids.UintN(256))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// newEvent stores a new active event. Callers hold s.mu.
func (s *Server) newEvent(b Booking, now time.Time) *Event {
	start := b.Start
	if start.IsZero() {
		start = now.Add(48 * time.Hour).Truncate(time.Hour)
	}
	d := b.Duration
	if d <= 0 {
		d = 30 * time.Minute
	}
	limit := max(b.GroupLimit, 1)
	ev := &Event{UUID: s.newUUID(), Name: orDefault(b.EventName, "Consultation"), Status: StatusActive,
		Start: start.UTC(), End: start.UTC().Add(d), Location: "North Clinic, 12 High Street",
		InviteesLimit: limit, CreatedAt: now, UpdatedAt: now}
	s.events = append(s.events, ev)
	s.eventByUUID[ev.UUID] = ev
	return ev
}

// newInvitee stores a new active invitee of ev. Callers hold s.mu.
func (s *Server) newInvitee(ev *Event, b Booking, now time.Time) *Invitee {
	inv := &Invitee{UUID: s.newUUID(), EventUUID: ev.UUID, Name: orDefault(b.Name, "Sam Taylor"),
		Email: orDefault(b.Email, "sam.taylor@example.com"), Timezone: orDefault(b.Timezone, "Europe/London"),
		TextReminderNumber: b.Phone, Questions: append([]QA(nil), b.Questions...), Status: StatusActive,
		CreatedAt: now, UpdatedAt: now}
	s.invitees = append(s.invitees, inv)
	s.inviteeByURI[inv.URI()] = inv
	return inv
}

// ---- JSON, as Calendly writes it ----

func ts(t time.Time) string { return t.UTC().Format(timeFormat) }

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func cancellationJSON(c *Cancellation) any {
	if c == nil {
		return nil
	}
	return map[string]any{"canceled_by": c.CanceledBy, "reason": nullable(c.Reason), "canceler_type": c.CancelerType, "created_at": ts(c.CreatedAt)}
}

// eventJSON is a Scheduled Event resource. Callers hold s.mu.
func (s *Server) eventJSON(e *Event) map[string]any {
	total, active := 0, 0
	for _, i := range s.invitees {
		if i.EventUUID == e.UUID {
			total++
			if i.Status == StatusActive {
				active++
			}
		}
	}
	m := map[string]any{
		"uri": e.URI(), "name": e.Name, "meeting_notes_plain": nil, "meeting_notes_html": nil,
		"status": e.Status, "start_time": ts(e.Start), "end_time": ts(e.End),
		"event_type":       URIBase + "/event_types/GBGBDCAADAEDCRZ2",
		"location":         map[string]any{"type": "physical", "location": e.Location},
		"invitees_counter": map[string]any{"total": total, "active": active, "limit": e.InviteesLimit},
		"created_at":       ts(e.CreatedAt), "updated_at": ts(e.UpdatedAt),
		"event_memberships": []any{map[string]any{"user": hostURI, "user_email": "amira.shah@northclinic.example", "user_name": "Dr Amira Shah"}},
		"event_guests":      []any{},
	}
	if e.Cancellation != nil {
		m["cancellation"] = cancellationJSON(e.Cancellation)
	}
	return m
}

// inviteeJSON is an Invitee resource. Callers hold s.mu.
func inviteeJSON(i *Invitee) map[string]any {
	first, last, _ := strings.Cut(i.Name, " ")
	qas := []any{}
	for n, q := range i.Questions {
		qas = append(qas, map[string]any{"question": q.Question, "answer": q.Answer, "position": n})
	}
	return map[string]any{
		"uri": i.URI(), "email": i.Email, "name": i.Name, "first_name": first, "last_name": nullable(last),
		"status": i.Status, "timezone": i.Timezone, "event": URIBase + "/scheduled_events/" + i.EventUUID,
		"created_at": ts(i.CreatedAt), "updated_at": ts(i.UpdatedAt),
		"cancel_url":     "https://calendly.com/cancellations/" + i.UUID,
		"reschedule_url": "https://calendly.com/reschedulings/" + i.UUID,
		"rescheduled":    i.Rescheduled, "old_invitee": nullable(i.OldInvitee), "new_invitee": nullable(i.NewInvitee),
		"text_reminder_number":  nullable(i.TextReminderNumber),
		"questions_and_answers": qas,
		"tracking": map[string]any{"utm_campaign": nil, "utm_source": nil, "utm_medium": nil, "utm_content": nil,
			"utm_term": nil, "salesforce_uuid": nil},
		"cancellation": cancellationJSON(i.Cancellation), "payment": nil, "no_show": nil, "reconfirmation": nil,
		"routing_form_submission": nil, "scheduling_method": nil, "invitee_scheduled_by": nil,
	}
}

// webhookPayload is the invitee with its scheduled_event. Callers hold s.mu.
func (s *Server) webhookPayload(i *Invitee) map[string]any {
	m := inviteeJSON(i)
	m["scheduled_event"] = s.eventJSON(s.eventByUUID[i.EventUUID])
	return m
}

// ---- webhooks ----

type envelope struct {
	Event     string         `json:"event"`
	CreatedAt string         `json:"created_at"`
	CreatedBy string         `json:"created_by"`
	Payload   map[string]any `json:"payload"`
}

// Sign is the Calendly-Webhook-Signature value for body sent at t.
func Sign(key string, t time.Time, body []byte) string {
	stamp := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(stamp + "."))
	m.Write(body)
	return "t=" + stamp + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// send posts (or drops) one webhook. It must be called without s.mu held.
func (s *Server) send(event, inviteeURI string, payload map[string]any) {
	s.mu.Lock()
	now := s.now().UTC()
	body, err := json.Marshal(envelope{Event: event, CreatedAt: ts(now), CreatedBy: hostURI, Payload: payload})
	if err != nil {
		panic(err) // the payload is built from plain values
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("User-Agent", "Calendly")
	h.Set("Calendly-Webhook-Signature", Sign(s.key, now, body))
	d := Delivery{Event: event, Invitee: inviteeURI, Header: h, Body: body}
	target := s.hookURL
	if target == "" {
		s.deliveries = append(s.deliveries, d)
		s.mu.Unlock()
		return
	}
	if s.dropShare > 0 && s.drops.Float64() < s.dropShare {
		d.Dropped = true
		s.deliveries = append(s.deliveries, d)
		s.mu.Unlock()
		s.logf("webhook %s dropped", event)
		return
	}
	s.mu.Unlock()

	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, target, bytes.NewReader(body))
	if err == nil {
		req.Header = h.Clone()
		var resp *http.Response
		resp, err = s.client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			d.Status = resp.StatusCode
		}
	}
	if err != nil {
		d.Err = err.Error()
	}
	s.logf("webhook %s -> %d", event, d.Status)
	s.mu.Lock()
	s.deliveries = append(s.deliveries, d)
	s.mu.Unlock()
}

func (s *Server) logf(format string, args ...any) {
	if s.log != nil {
		fmt.Fprintf(s.log, "calendlyfake: "+format+"\n", args...)
	}
}

// ---- the API ----

// ServeHTTP answers GET /scheduled_events and GET /scheduled_events/{uuid}/invitees.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status, n := s.serve(fakehttp.RecordFirst(w, func(status int) {
		s.reqMu.Lock()
		s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Status: status})
		s.reqMu.Unlock()
	}), r)
	if n >= 0 {
		s.logf("%s %s -> %d (%d items)", r.Method, r.URL.Path, status, n)
	} else {
		s.logf("%s %s -> %d", r.Method, r.URL.Path, status)
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) (int, int) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	isEvents := len(parts) == 1 && parts[0] == "scheduled_events"
	isInvitees := len(parts) == 3 && parts[0] == "scheduled_events" && parts[2] == "invitees"
	if r.Method != http.MethodGet || (!isEvents && !isInvitees) {
		return writeError(w, http.StatusNotFound, "Resource Not Found", "The server could not find the requested resource."), -1
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	authed := ok && token != "" && (s.anyToken || s.tokens[token])
	s.mu.Unlock()
	if !authed {
		return writeError(w, http.StatusUnauthorized, "Unauthenticated", "The access token is invalid"), -1
	}
	if !s.allow(w, token) {
		return writeError(w, http.StatusTooManyRequests, "Too Many Requests", "You have exceeded the rate limit."), -1
	}
	q := r.URL.Query()
	count := 20
	if v := q.Get("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return writeError(w, http.StatusBadRequest, "Invalid Argument", "The supplied parameters are invalid."), -1
		}
		count = n
	}
	offset := 0
	if v := q.Get("page_token"); v != "" {
		n, ok := decodeToken(v)
		if !ok {
			return writeError(w, http.StatusBadRequest, "Invalid Argument", "The supplied parameters are invalid."), -1
		}
		offset = n
	}
	if isEvents {
		return s.listEvents(w, r, q, count, offset)
	}
	return s.listInvitees(w, r, parts[1], q, count, offset)
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request, q url.Values, count, offset int) (int, int) {
	org := q.Get("organization")
	if org == "" && q.Get("user") == "" {
		return writeError(w, http.StatusBadRequest, "Invalid Argument", "The supplied parameters are invalid."), -1
	}
	s.mu.Lock()
	allowed := org == "" || org == s.organization
	fail := s.fails[offset/count+1]
	s.mu.Unlock()
	if !allowed {
		return writeError(w, http.StatusForbidden, "Permission Denied", "You do not have permission to access this resource."), -1
	}
	if fail != 0 {
		return writeError(w, fail, "Internal Server Error", "Injected failure."), -1
	}
	var minT, maxT time.Time
	for name, dst := range map[string]*time.Time{"min_start_time": &minT, "max_start_time": &maxT} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return writeError(w, http.StatusBadRequest, "Invalid Argument", "The supplied parameters are invalid."), -1
			}
			*dst = t
		}
	}
	status := q.Get("status")
	desc := q.Get("sort") == "start_time:desc"

	s.mu.Lock()
	var match []*Event
	for _, e := range s.events {
		if (!minT.IsZero() && e.Start.Before(minT)) || (!maxT.IsZero() && !e.Start.Before(maxT)) {
			continue
		}
		if status != "" && e.Status != status {
			continue
		}
		match = append(match, e)
	}
	sort.SliceStable(match, func(i, j int) bool {
		if desc {
			return match[i].Start.After(match[j].Start)
		}
		return match[i].Start.Before(match[j].Start)
	})
	items := []any{}
	for i := offset; i < len(match) && i < offset+count; i++ {
		items = append(items, s.eventJSON(match[i]))
	}
	total := len(match)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"collection": items, "pagination": pagination(r, count, offset, total)})
	return http.StatusOK, len(items)
}

func (s *Server) listInvitees(w http.ResponseWriter, r *http.Request, uuid string, q url.Values, count, offset int) (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.eventByUUID[uuid]; !ok {
		return writeError(w, http.StatusNotFound, "Resource Not Found", "The server could not find the requested resource."), -1
	}
	var match []*Invitee
	for _, i := range s.invitees {
		if i.EventUUID != uuid {
			continue
		}
		if st := q.Get("status"); st != "" && i.Status != st {
			continue
		}
		if e := q.Get("email"); e != "" && !strings.EqualFold(e, i.Email) {
			continue
		}
		match = append(match, i)
	}
	desc := q.Get("sort") == "created_at:desc"
	sort.SliceStable(match, func(a, b int) bool {
		if desc {
			return match[a].CreatedAt.After(match[b].CreatedAt)
		}
		return match[a].CreatedAt.Before(match[b].CreatedAt)
	})
	items := []any{}
	for i := offset; i < len(match) && i < offset+count; i++ {
		items = append(items, inviteeJSON(match[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"collection": items, "pagination": pagination(r, count, offset, len(match))})
	return http.StatusOK, len(items)
}

// allow counts the request against token's one-minute window and sets
// Calendly's X-RateLimit-* headers; false means 429.
func (s *Server) allow(w http.ResponseWriter, token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	b := s.buckets[token]
	if b == nil || !now.Before(b.start.Add(time.Minute)) {
		b = &bucket{start: now}
		s.buckets[token] = b
	}
	b.count++
	reset := b.start.Add(time.Minute).Sub(now)
	w.Header().Set("X-RateLimit-Limit", strconv.Itoa(s.limit))
	w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(max(0, s.limit-b.count)))
	w.Header().Set("X-RateLimit-Reset", strconv.Itoa(int((reset+time.Second-1)/time.Second)))
	return b.count <= s.limit
}

// Page tokens are opaque to clients; the fake's carry the offset.
func encodeToken(offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("fake-offset:" + strconv.Itoa(offset)))
}

func decodeToken(t string) (int, bool) {
	b, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil {
		return 0, false
	}
	v, ok := strings.CutPrefix(string(b), "fake-offset:")
	n, err := strconv.Atoi(v)
	return n, ok && err == nil && n >= 0
}

func pagination(r *http.Request, count, offset, total int) map[string]any {
	link := func(off int) (any, any) {
		q := r.URL.Query()
		tok := encodeToken(off)
		q.Set("page_token", tok)
		u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawQuery: q.Encode()}
		return u.String(), tok
	}
	p := map[string]any{"count": count, "next_page": nil, "next_page_token": nil, "previous_page": nil, "previous_page_token": nil}
	if offset+count < total {
		p["next_page"], p["next_page_token"] = link(offset + count)
	}
	if offset > 0 {
		p["previous_page"], p["previous_page_token"] = link(max(0, offset-count))
	}
	return p
}

func writeError(w http.ResponseWriter, status int, title, msg string) int {
	writeJSON(w, status, map[string]any{"title": title, "message": msg})
	return status
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func lastSegment(uri string) string {
	uri = strings.TrimSuffix(uri, "/")
	if i := strings.LastIndexByte(uri, '/'); i >= 0 {
		return uri[i+1:]
	}
	return uri
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

var _ http.Handler = (*Server)(nil)
