// Package calcomfake is a stateful stand-in for Cal.com. It keeps a bookings
// store and serves it as API v2 does (GET /v2/bookings, cal-api-version
// 2024-08-13: Bearer API key, filters, skip/take paging, a per-key rate limit
// with Cal.com's X-RateLimit-*-Default headers). Helpers change bookings the
// way Cal.com does (a reschedule makes a new booking and cancels the old one)
// and post the webhooks Cal.com would send, signed with X-Cal-Signature-256,
// optionally dropping a deterministic share of them as a flaky sender would.
// Failures can be injected per page. It is an http.Handler: serve it with
// httptest in tests, or with `clinicbridge fake calcom`.
//
// The package does not import the connector: it signs and shapes webhooks on
// its own, so the connector is tested against an independent implementation.
package calcomfake

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clinicbridge/clinicbridge/internal/fakehttp"
)

// APIVersion is the cal-api-version the fake answers.
const APIVersion = "2024-08-13"

// DefaultAPIKey is the key the fake accepts unless told otherwise.
const DefaultAPIKey = "cal_test_0123456789abcdef"

// DefaultRateLimit is Cal.com's default for API keys: 120 requests a minute.
const DefaultRateLimit = 120

// Booking statuses, as API v2 writes them.
const (
	StatusAccepted  = "accepted"
	StatusCancelled = "cancelled"
	StatusPending   = "pending"
	StatusRejected  = "rejected"
)

// Attendee is a booking's attendee.
type Attendee struct {
	Name        string
	Email       string
	TimeZone    string
	PhoneNumber string
	Language    string
	Absent      bool
}

// Host is a booking's host (the organizer).
type Host struct {
	ID       int
	Name     string
	Email    string
	Username string
	TimeZone string
}

// Booking is one booking in the store. Zero fields get realistic defaults
// in Create.
type Booking struct {
	ID                 int
	UID                string
	Title              string
	Description        string
	EventTypeID        int
	EventTypeSlug      string
	Start, End         time.Time
	Status             string
	Hosts              []Host
	Attendees          []Attendee
	Location           string
	MeetingURL         string
	Responses          map[string]any
	Metadata           map[string]string
	CancellationReason string
	CancelledByEmail   string
	ReschedulingReason string
	RescheduledByEmail string
	RescheduledFromUID string
	RescheduledToUID   string
	CreatedAt          time.Time
	UpdatedAt          time.Time
}

func (b *Booking) clone() Booking {
	c := *b
	c.Hosts = append([]Host(nil), b.Hosts...)
	c.Attendees = append([]Attendee(nil), b.Attendees...)
	if b.Responses != nil {
		c.Responses = make(map[string]any, len(b.Responses))
		for k, v := range b.Responses {
			c.Responses[k] = v
		}
	}
	if b.Metadata != nil {
		c.Metadata = make(map[string]string, len(b.Metadata))
		for k, v := range b.Metadata {
			c.Metadata[k] = v
		}
	}
	return c
}

// Delivery is one webhook the fake sent, or dropped.
type Delivery struct {
	Trigger string
	UID     string // the booking the webhook is about
	Header  http.Header
	Body    []byte
	// Dropped says the fake chose not to send it (DropShare).
	Dropped bool
	// Status is the receiver's answer; 0 when dropped or not sent.
	Status int
	// Err is why sending failed, if it did.
	Err string
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

	mu        sync.Mutex
	now       func() time.Time
	keys      map[string]bool
	anyKey    bool
	limit     int
	window    time.Duration
	buckets   map[string]*bucket
	bookings  []*Booking
	byUID     map[string]*Booking
	nextID    int
	ids       *rand.Rand
	drops     *rand.Rand
	dropShare float64
	hookURL   string
	secret    string
	fails     map[int]int
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

// WithAPIKey makes key (also) accepted; without any, DefaultAPIKey is.
func WithAPIKey(key string) Option { return func(s *Server) { s.keys[key] = true } }

// AcceptAnyAPIKey accepts any non-empty Bearer key (`clinicbridge fake`).
func AcceptAnyAPIKey() Option { return func(s *Server) { s.anyKey = true } }

// WithRateLimit sets the requests a key may make per minute (default 120).
func WithRateLimit(perMinute int) Option { return func(s *Server) { s.limit = perMinute } }

// WithClock sets the fake's clock (timestamps, the rate-limit window).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithLog prints one line per API request and per webhook to w: method,
// path, query, status, counts. Never headers or booking data.
func WithLog(w io.Writer) Option { return func(s *Server) { s.log = w } }

// WithWebhook makes the helpers post signed webhooks to url, as a Cal.com
// webhook with that subscriber URL and secret would.
func WithWebhook(url, secret string) Option {
	return func(s *Server) { s.hookURL, s.secret = url, secret }
}

// WithSeed seeds the uids the fake makes and which webhooks DropShare drops,
// so a test run is repeatable (default seed 1).
func WithSeed(seed uint64) Option {
	return func(s *Server) {
		s.ids = rand.New(rand.NewPCG(seed, 0x5eed))
		s.drops = rand.New(rand.NewPCG(seed, 0xd209))
	}
}

// WithHTTPClient sends webhooks with c (default: 10 s timeout).
func WithHTTPClient(c *http.Client) Option { return func(s *Server) { s.client = c } }

// New returns an empty fake.
func New(opts ...Option) *Server {
	s := &Server{
		client:  &http.Client{Timeout: 10 * time.Second},
		now:     time.Now,
		keys:    map[string]bool{},
		limit:   DefaultRateLimit,
		window:  time.Minute,
		buckets: map[string]*bucket{},
		byUID:   map[string]*Booking{},
		fails:   map[int]int{},
	}
	WithSeed(1)(s)
	for _, o := range opts {
		o(s)
	}
	if len(s.keys) == 0 {
		s.keys[DefaultAPIKey] = true
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

// FailPage makes every request for page n (1-based: skip/take+1) answer
// status until ClearFailures. A 429 carries the rate-limit headers.
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

// Booking returns the booking with uid.
func (s *Server) Booking(uid string) (Booking, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.byUID[uid]
	if !ok {
		return Booking{}, false
	}
	return b.clone(), true
}

// Bookings returns every booking, in creation order.
func (s *Server) Bookings() []Booking {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Booking, len(s.bookings))
	for i, b := range s.bookings {
		out[i] = b.clone()
	}
	return out
}

// ---- changes, as Cal.com makes them ----

// Create stores a booking (defaults filled in) and sends BOOKING_CREATED, or
// BOOKING_REQUESTED for a pending one.
func (s *Server) Create(b Booking) (Booking, error) {
	s.mu.Lock()
	now := s.now().UTC()
	if b.UID == "" {
		b.UID = s.newUID()
	}
	if _, dup := s.byUID[b.UID]; dup {
		s.mu.Unlock()
		return Booking{}, fmt.Errorf("calcomfake: booking uid %q exists", b.UID)
	}
	s.fill(&b, now)
	stored := b.clone()
	s.bookings = append(s.bookings, &stored)
	s.byUID[stored.UID] = &stored
	trigger := "BOOKING_CREATED"
	if stored.Status == StatusPending {
		trigger = "BOOKING_REQUESTED"
	}
	p := webhookPayload(&stored, trigger)
	out := stored.clone()
	s.mu.Unlock()
	s.send(trigger, out.UID, p)
	return out, nil
}

// Reschedule moves a booking to newStart as Cal.com does: a new booking with
// a new uid (rescheduledFromUid = uid) and the old one cancelled
// (rescheduledToUid = the new uid). It sends BOOKING_RESCHEDULED about the
// new booking, whose rescheduleUid is the old uid, and returns the new uid.
func (s *Server) Reschedule(uid string, newStart time.Time) (string, error) {
	s.mu.Lock()
	old, ok := s.byUID[uid]
	if !ok || old.Status == StatusCancelled || old.Status == StatusRejected {
		s.mu.Unlock()
		return "", fmt.Errorf("calcomfake: no active booking %q", uid)
	}
	now := s.now().UTC()
	nb := old.clone()
	nb.ID = 0
	nb.UID = s.newUID()
	nb.Start = newStart.UTC()
	nb.End = nb.Start.Add(old.End.Sub(old.Start))
	nb.Status = StatusAccepted
	nb.RescheduledFromUID = old.UID
	nb.RescheduledToUID = ""
	nb.CreatedAt, nb.UpdatedAt = now, now
	if len(old.Attendees) > 0 {
		nb.RescheduledByEmail = old.Attendees[0].Email
	}
	s.fill(&nb, now)
	stored := nb.clone()
	s.bookings = append(s.bookings, &stored)
	s.byUID[stored.UID] = &stored
	old.Status = StatusCancelled
	old.RescheduledToUID = stored.UID
	old.RescheduledByEmail = stored.RescheduledByEmail
	old.UpdatedAt = now

	p := webhookPayload(&stored, "BOOKING_RESCHEDULED")
	p["rescheduleId"] = old.ID
	p["rescheduleUid"] = old.UID
	p["rescheduleStartTime"] = old.Start.Format(isoMillis)
	p["rescheduleEndTime"] = old.End.Format(isoMillis)
	p["rescheduledBy"] = stored.RescheduledByEmail
	s.mu.Unlock()
	s.send("BOOKING_RESCHEDULED", stored.UID, p)
	return stored.UID, nil
}

// Cancel cancels a booking and sends BOOKING_CANCELLED.
func (s *Server) Cancel(uid, reason string) error {
	s.mu.Lock()
	b, ok := s.byUID[uid]
	if !ok || b.Status == StatusCancelled {
		s.mu.Unlock()
		return fmt.Errorf("calcomfake: no active booking %q", uid)
	}
	b.Status = StatusCancelled
	b.CancellationReason = reason
	if len(b.Attendees) > 0 {
		b.CancelledByEmail = b.Attendees[0].Email
	}
	b.UpdatedAt = s.now().UTC()
	p := webhookPayload(b, "BOOKING_CANCELLED")
	p["cancellationReason"] = reason
	p["cancelledBy"] = b.CancelledByEmail
	p["requestReschedule"] = false
	s.mu.Unlock()
	s.send("BOOKING_CANCELLED", uid, p)
	return nil
}

// Notify sends a webhook of any other trigger about a booking, changing
// nothing: MEETING_STARTED, MEETING_ENDED, BOOKING_PAID, ... For
// BOOKING_NO_SHOW_UPDATED it marks the first attendee absent and sends
// Cal.com's no-show payload ({bookingUid, bookingId, attendees, message}).
func (s *Server) Notify(trigger, uid string) error {
	s.mu.Lock()
	b, ok := s.byUID[uid]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("calcomfake: no booking %q", uid)
	}
	var p map[string]any
	if trigger == "BOOKING_NO_SHOW_UPDATED" {
		var atts []any
		for i := range b.Attendees {
			if i == 0 {
				b.Attendees[i].Absent = true
				b.UpdatedAt = s.now().UTC()
			}
			atts = append(atts, map[string]any{"email": b.Attendees[i].Email, "noShow": b.Attendees[i].Absent})
		}
		p = map[string]any{"bookingUid": b.UID, "bookingId": b.ID, "attendees": atts, "message": "Attendee marked as no-show"}
	} else {
		p = webhookPayload(b, trigger)
	}
	s.mu.Unlock()
	s.send(trigger, uid, p)
	return nil
}

var (
	firstNames = []string{"Sam", "Alex", "Jordan", "Priya", "Tomasz", "Aisha", "Morgan", "Chen", "Lucia", "Oluwaseun"}
	lastNames  = []string{"Taylor", "Morgan", "Okafor", "Kowalski", "Patel", "Nguyen", "Garcia", "Murphy", "Schmidt", "Haddad"}
	eventTypes = []struct {
		id   int
		slug string
		name string
		mins int
	}{{1207, "follow-up-consultation", "Follow-up consultation", 30}, {1208, "new-patient", "New patient appointment", 45}, {1209, "physio-session", "Physiotherapy session", 60}}
)

// Populate creates n realistic bookings over the coming week (webhooks are
// sent only if WithWebhook was given).
func (s *Server) Populate(n int) {
	for i := 0; i < n; i++ {
		s.mu.Lock()
		first := firstNames[s.ids.IntN(len(firstNames))]
		last := lastNames[s.ids.IntN(len(lastNames))]
		et := eventTypes[s.ids.IntN(len(eventTypes))]
		start := s.now().UTC().Truncate(time.Hour).Add(time.Duration(24+s.ids.IntN(24*7)) * time.Hour)
		phone := fmt.Sprintf("+447700900%03d", s.ids.IntN(1000))
		s.mu.Unlock()
		_, _ = s.Create(Booking{
			Title:         fmt.Sprintf("%s between Dr Amira Shah and %s %s", et.name, first, last),
			EventTypeID:   et.id,
			EventTypeSlug: et.slug,
			Start:         start,
			End:           start.Add(time.Duration(et.mins) * time.Minute),
			Attendees: []Attendee{{
				Name: first + " " + last, Email: strings.ToLower(first+"."+last) + "@example.com",
				TimeZone: "Europe/London", PhoneNumber: phone, Language: "en",
			}},
		})
	}
}

const uidAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"

// newUID makes a Cal.com-style 22-character uid. Callers hold s.mu.
func (s *Server) newUID() string {
	for {
		b := make([]byte, 22)
		for i := range b {
			b[i] = uidAlphabet[s.ids.IntN(len(uidAlphabet))]
		}
		if _, dup := s.byUID[string(b)]; !dup {
			return string(b)
		}
	}
}

// fill sets defaults. Callers hold s.mu.
func (s *Server) fill(b *Booking, now time.Time) {
	s.nextID++
	if b.ID == 0 {
		b.ID = 48000 + s.nextID
	}
	if b.Start.IsZero() {
		b.Start = now.Add(48 * time.Hour).Truncate(time.Hour)
	}
	b.Start = b.Start.UTC()
	if b.End.IsZero() {
		b.End = b.Start.Add(30 * time.Minute)
	}
	b.End = b.End.UTC()
	if b.Status == "" {
		b.Status = StatusAccepted
	}
	if b.EventTypeID == 0 {
		b.EventTypeID, b.EventTypeSlug = 1207, "follow-up-consultation"
	}
	if b.EventTypeSlug == "" {
		b.EventTypeSlug = "consultation"
	}
	if b.Title == "" {
		b.Title = "Consultation"
	}
	if len(b.Hosts) == 0 {
		b.Hosts = []Host{{ID: 4, Name: "Dr Amira Shah", Email: "amira.shah@northclinic.example", Username: "amira-shah", TimeZone: "Europe/London"}}
	}
	if len(b.Attendees) == 0 {
		b.Attendees = []Attendee{{Name: "Sam Taylor", Email: "sam.taylor@example.com", TimeZone: "Europe/London", PhoneNumber: "+447700900123", Language: "en"}}
	}
	if b.Location == "" {
		b.Location = "North Clinic, 12 High Street"
	}
	if b.CreatedAt.IsZero() {
		b.CreatedAt = now
	}
	if b.UpdatedAt.IsZero() {
		b.UpdatedAt = b.CreatedAt
	}
}

const isoMillis = "2006-01-02T15:04:05.000Z"

// ---- webhooks ----

// webhookPayload is the inner payload Cal.com sends (version 2021-10-20)
// for a booking trigger. Callers hold s.mu.
func webhookPayload(b *Booking, trigger string) map[string]any {
	status := map[string]string{StatusAccepted: "ACCEPTED", StatusCancelled: "CANCELLED", StatusPending: "PENDING", StatusRejected: "REJECTED"}[b.Status]
	var org map[string]any
	if len(b.Hosts) > 0 {
		h := b.Hosts[0]
		org = map[string]any{"id": h.ID, "name": h.Name, "email": h.Email, "username": h.Username, "timeZone": h.TimeZone,
			"language": map[string]any{"locale": "en"}, "timeFormat": "h:mma", "utcOffset": 0}
	}
	atts := []any{}
	responses := map[string]any{}
	for i, a := range b.Attendees {
		first, last, _ := strings.Cut(a.Name, " ")
		m := map[string]any{"email": a.Email, "name": a.Name, "firstName": first, "lastName": last, "timeZone": a.TimeZone,
			"language": map[string]any{"locale": orDefault(a.Language, "en")}, "utcOffset": 0}
		if a.PhoneNumber != "" {
			m["phoneNumber"] = a.PhoneNumber
		}
		atts = append(atts, m)
		if i == 0 {
			responses["name"] = map[string]any{"label": "your_name", "value": a.Name}
			responses["email"] = map[string]any{"label": "email_address", "value": a.Email}
			if a.PhoneNumber != "" {
				responses["attendeePhoneNumber"] = map[string]any{"label": "phone_number", "value": a.PhoneNumber}
			}
		}
	}
	for k, v := range b.Responses {
		responses[k] = map[string]any{"label": k, "value": v}
	}
	meta := map[string]any{}
	for k, v := range b.Metadata {
		meta[k] = v
	}
	if b.MeetingURL != "" {
		meta["videoCallUrl"] = b.MeetingURL
	}
	p := map[string]any{
		"type":                 b.EventTypeSlug,
		"title":                b.Title,
		"description":          b.Description,
		"additionalNotes":      b.Description,
		"customInputs":         map[string]any{},
		"startTime":            b.Start.Format(time.RFC3339),
		"endTime":              b.End.Format(time.RFC3339),
		"organizer":            org,
		"responses":            responses,
		"userFieldsResponses":  map[string]any{},
		"attendees":            atts,
		"location":             b.Location,
		"destinationCalendar":  nil,
		"hideCalendarNotes":    false,
		"requiresConfirmation": b.Status == StatusPending,
		"eventTypeId":          b.EventTypeID,
		"seatsShowAttendees":   true,
		"seatsPerTimeSlot":     nil,
		"uid":                  b.UID,
		"bookingId":            b.ID,
		"eventTitle":           b.Title,
		"eventDescription":     nil,
		"price":                0,
		"currency":             "usd",
		"length":               int(b.End.Sub(b.Start) / time.Minute),
		"status":               status,
		"metadata":             meta,
	}
	if len(b.Attendees) > 0 && b.Attendees[0].PhoneNumber != "" {
		p["smsReminderNumber"] = b.Attendees[0].PhoneNumber
	}
	if trigger == "BOOKING_CANCELLED" {
		p["status"] = "CANCELLED"
	}
	return p
}

// envelope keeps Cal.com's key order: triggerEvent, createdAt, payload.
type envelope struct {
	TriggerEvent string         `json:"triggerEvent"`
	CreatedAt    string         `json:"createdAt"`
	Payload      map[string]any `json:"payload"`
}

// Sign is X-Cal-Signature-256 for body: hex(HMAC-SHA256(secret, body)).
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// send posts (or drops) one webhook. It must be called without s.mu held.
func (s *Server) send(trigger, uid string, payload map[string]any) {
	s.mu.Lock()
	url, secret := s.hookURL, s.secret
	body, err := json.Marshal(envelope{TriggerEvent: trigger, CreatedAt: s.now().UTC().Format(isoMillis), Payload: payload})
	if err != nil {
		panic(err) // the payload is built from plain values
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Cal-Webhook-Version", "2021-10-20")
	if secret != "" {
		h.Set("X-Cal-Signature-256", Sign(secret, body))
	} else {
		h.Set("X-Cal-Signature-256", "no-secret-provided")
	}
	d := Delivery{Trigger: trigger, UID: uid, Header: h, Body: body}
	if url == "" {
		s.deliveries = append(s.deliveries, d)
		s.mu.Unlock()
		return
	}
	if s.dropShare > 0 && s.drops.Float64() < s.dropShare {
		d.Dropped = true
		s.deliveries = append(s.deliveries, d)
		s.mu.Unlock()
		s.logf("webhook %s dropped", trigger)
		return
	}
	s.mu.Unlock()

	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(body))
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
	s.logf("webhook %s -> %d", trigger, d.Status)
	s.mu.Lock()
	s.deliveries = append(s.deliveries, d)
	s.mu.Unlock()
}

func (s *Server) logf(format string, args ...any) {
	if s.log != nil {
		fmt.Fprintf(s.log, "calcomfake: "+format+"\n", args...)
	}
}

// ---- the API ----

// ServeHTTP answers GET /v2/bookings; anything else is 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status, n := s.serve(fakehttp.RecordFirst(w, func(status int) {
		s.reqMu.Lock()
		s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Status: status})
		s.reqMu.Unlock()
	}), r)
	q := r.URL.Query()
	for _, k := range []string{"attendeeEmail", "attendeeName"} {
		if q.Has(k) {
			q.Set(k, "redacted")
		}
	}
	if n >= 0 {
		s.logf("%s %s?%s -> %d (%d bookings)", r.Method, r.URL.Path, q.Encode(), status, n)
	} else {
		s.logf("%s %s?%s -> %d", r.Method, r.URL.Path, q.Encode(), status)
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) (int, int) {
	if r.URL.Path != "/v2/bookings" && r.URL.Path != "/v2/bookings/" {
		return writeError(w, r, http.StatusNotFound, "NotFoundException", "Cannot "+r.Method+" "+r.URL.Path), -1
	}
	if r.Method != http.MethodGet {
		return writeError(w, r, http.StatusNotFound, "NotFoundException", "the fake serves only GET /v2/bookings"), -1
	}
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	authed := ok && key != "" && (s.anyKey || s.keys[key])
	s.mu.Unlock()
	if !authed {
		return writeError(w, r, http.StatusUnauthorized, "UnauthorizedException", "Invalid Access Token."), -1
	}
	if !s.allow(w, key) {
		return writeError(w, r, http.StatusTooManyRequests, "ThrottlerException", "CustomThrottlerGuard - Too many requests. Please try again later."), -1
	}
	if v := r.Header.Get("cal-api-version"); v != APIVersion {
		return writeError(w, r, http.StatusBadRequest, "BadRequestException",
			"the fake answers cal-api-version "+APIVersion+" only (without the header Cal.com answers in its 2024-04-15 shape)"), -1
	}
	q := r.URL.Query()
	take, skip := 100, 0
	if v := q.Get("take"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 250 {
			return writeError(w, r, http.StatusBadRequest, "BadRequestException", "take must not be greater than 250"), -1
		}
		take = n
	}
	if v := q.Get("skip"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return writeError(w, r, http.StatusBadRequest, "BadRequestException", "skip must not be less than 0"), -1
		}
		skip = n
	}
	s.mu.Lock()
	failStatus := s.fails[skip/take+1]
	s.mu.Unlock()
	if failStatus != 0 {
		return writeError(w, r, failStatus, "InternalServerErrorException", "injected failure"), -1
	}
	bounds := map[string]time.Time{}
	for _, name := range []string{"afterUpdatedAt", "beforeUpdatedAt", "afterCreatedAt", "beforeCreatedAt", "afterStart", "beforeEnd"} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return writeError(w, r, http.StatusBadRequest, "BadRequestException", name+" must be a valid ISO 8601 date."), -1
			}
			bounds[name] = t
		}
	}
	var statuses []string
	if v := q.Get("status"); v != "" {
		statuses = strings.Split(v, ",")
	}

	s.mu.Lock()
	now := s.now()
	var match []*Booking
	for _, b := range s.bookings {
		if keep(b, bounds, statuses, q.Get("bookingUid"), q.Get("attendeeEmail"), now) {
			match = append(match, b)
		}
	}
	sortBookings(match, q)
	total := len(match)
	var page []any
	for i := skip; i < total && i < skip+take; i++ {
		page = append(page, apiBooking(match[i]))
	}
	s.mu.Unlock()
	if page == nil {
		page = []any{}
	}
	remaining := max(0, total-(skip+len(page)))
	totalPages := (total + take - 1) / take
	writeJSON(w, http.StatusOK, map[string]any{
		"status": "success",
		"data":   page,
		"pagination": map[string]any{
			"totalItems": total, "remainingItems": remaining, "returnedItems": len(page), "itemsPerPage": take,
			"currentPage": skip/take + 1, "totalPages": totalPages,
			"hasNextPage": remaining > 0, "hasPreviousPage": skip > 0,
		},
	})
	return http.StatusOK, len(page)
}

// allow counts the request against key's window and sets Cal.com's
// rate-limit headers (name "Default"); false means 429.
func (s *Server) allow(w http.ResponseWriter, key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	b := s.buckets[key]
	if b == nil || !now.Before(b.start.Add(s.window)) {
		b = &bucket{start: now}
		s.buckets[key] = b
	}
	b.count++
	reset := b.start.Add(s.window).Sub(now)
	secs := int((reset + time.Second - 1) / time.Second)
	w.Header().Set("X-RateLimit-Limit-Default", strconv.Itoa(s.limit))
	w.Header().Set("X-RateLimit-Remaining-Default", strconv.Itoa(max(0, s.limit-b.count)))
	w.Header().Set("X-RateLimit-Reset-Default", strconv.Itoa(secs))
	return b.count <= s.limit
}

func keep(b *Booking, bounds map[string]time.Time, statuses []string, uid, email string, now time.Time) bool {
	if t, ok := bounds["afterUpdatedAt"]; ok && b.UpdatedAt.Before(t) {
		return false
	}
	if t, ok := bounds["beforeUpdatedAt"]; ok && b.UpdatedAt.After(t) {
		return false
	}
	if t, ok := bounds["afterCreatedAt"]; ok && b.CreatedAt.Before(t) {
		return false
	}
	if t, ok := bounds["beforeCreatedAt"]; ok && b.CreatedAt.After(t) {
		return false
	}
	if t, ok := bounds["afterStart"]; ok && b.Start.Before(t) {
		return false
	}
	if t, ok := bounds["beforeEnd"]; ok && b.End.After(t) {
		return false
	}
	if uid != "" && b.UID != uid {
		return false
	}
	if email != "" {
		found := false
		for _, a := range b.Attendees {
			found = found || strings.EqualFold(a.Email, email)
		}
		if !found {
			return false
		}
	}
	if len(statuses) == 0 {
		return true
	}
	for _, st := range statuses {
		switch strings.TrimSpace(st) {
		case "upcoming":
			if !b.End.Before(now) && b.Status == StatusAccepted {
				return true
			}
		case "past":
			if b.End.Before(now) && b.Status != StatusCancelled && b.Status != StatusRejected {
				return true
			}
		case "cancelled":
			if b.Status == StatusCancelled || b.Status == StatusRejected {
				return true
			}
		case "unconfirmed":
			if b.Status == StatusPending && !b.End.Before(now) {
				return true
			}
		}
	}
	return false
}

func sortBookings(bs []*Booking, q map[string][]string) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var key func(*Booking) time.Time
	desc := false
	switch {
	case get("sortUpdatedAt") != "":
		key, desc = func(b *Booking) time.Time { return b.UpdatedAt }, get("sortUpdatedAt") == "desc"
	case get("sortCreated") != "":
		key, desc = func(b *Booking) time.Time { return b.CreatedAt }, get("sortCreated") == "desc"
	case get("sortStart") != "":
		key, desc = func(b *Booking) time.Time { return b.Start }, get("sortStart") == "desc"
	default:
		key = func(b *Booking) time.Time { return b.Start }
	}
	sort.SliceStable(bs, func(i, j int) bool {
		a, b := key(bs[i]), key(bs[j])
		if a.Equal(b) {
			if desc {
				return bs[i].ID > bs[j].ID
			}
			return bs[i].ID < bs[j].ID
		}
		if desc {
			return a.After(b)
		}
		return a.Before(b)
	})
}

// apiBooking is BookingOutput_2024_08_13.
func apiBooking(b *Booking) map[string]any {
	hosts := []any{}
	for _, h := range b.Hosts {
		hosts = append(hosts, map[string]any{"id": h.ID, "name": h.Name, "email": h.Email, "displayEmail": h.Email, "username": h.Username, "timeZone": h.TimeZone})
	}
	atts := []any{}
	for _, a := range b.Attendees {
		m := map[string]any{"name": a.Name, "email": a.Email, "displayEmail": a.Email, "timeZone": a.TimeZone, "absent": a.Absent}
		if a.Language != "" {
			m["language"] = a.Language
		}
		if a.PhoneNumber != "" {
			m["phoneNumber"] = a.PhoneNumber
		}
		atts = append(atts, m)
	}
	responses := map[string]any{}
	if len(b.Attendees) > 0 {
		responses["name"] = b.Attendees[0].Name
		responses["email"] = b.Attendees[0].Email
		if p := b.Attendees[0].PhoneNumber; p != "" {
			responses["attendeePhoneNumber"] = p
		}
	}
	for k, v := range b.Responses {
		responses[k] = v
	}
	meta := map[string]any{}
	for k, v := range b.Metadata {
		meta[k] = v
	}
	m := map[string]any{
		"id": b.ID, "uid": b.UID, "title": b.Title, "description": b.Description, "hosts": hosts,
		"status": b.Status, "start": b.Start.Format(isoMillis), "end": b.End.Format(isoMillis),
		"duration": int(b.End.Sub(b.Start) / time.Minute), "eventTypeId": b.EventTypeID,
		"eventType": map[string]any{"id": b.EventTypeID, "slug": b.EventTypeSlug},
		"location":  b.Location, "absentHost": false,
		"createdAt": b.CreatedAt.Format(isoMillis), "updatedAt": b.UpdatedAt.Format(isoMillis),
		"metadata": meta, "attendees": atts, "guests": []any{}, "bookingFieldsResponses": responses,
	}
	if b.MeetingURL != "" {
		m["meetingUrl"] = b.MeetingURL
	}
	for k, v := range map[string]string{
		"cancellationReason": b.CancellationReason, "cancelledByEmail": b.CancelledByEmail,
		"reschedulingReason": b.ReschedulingReason, "rescheduledByEmail": b.RescheduledByEmail,
		"rescheduledFromUid": b.RescheduledFromUID, "rescheduledToUid": b.RescheduledToUID,
	} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) int {
	writeJSON(w, status, map[string]any{
		"status":    "error",
		"timestamp": time.Now().UTC().Format(isoMillis),
		"path":      r.URL.Path,
		"error":     map[string]any{"code": code, "message": msg},
	})
	return status
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

var _ http.Handler = (*Server)(nil)
