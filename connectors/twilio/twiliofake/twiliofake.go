// Package twiliofake is a faithful stand-in for Twilio Programmable
// Messaging: the Messages resource with Basic auth, Twilio's error bodies and
// the magic numbers Twilio documents for test credentials, signed status
// callbacks after each send (sent, then delivered), inbound SMS including
// STOP and START, and scripted failures (429 bursts, any status). It serves
// the twilio connector's tests and `clinicbridge fake twilio`.
package twiliofake

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Credentials the fake accepts unless configured otherwise.
const (
	DefaultAccountSID = "AC00000000000000000000000000c0ffee"
	DefaultAuthToken  = "7f3c9e1a5b2d4f6081a3c5e7092b4d6f"
)

// Twilio's magic numbers for test credentials
// (twilio.com/docs/iam/test-credentials). Any other valid To succeeds.
const (
	// MagicFrom is the sender that always works.
	MagicFrom = "+15005550006"

	MagicFromInvalid   = "+15005550001" // From: 21212 invalid sender
	MagicFromNotOwned  = "+15005550007" // From: 21606 not owned / not SMS-capable
	MagicFromQueueFull = "+15005550008" // From: 21611 the sender's queue is full

	MagicToInvalid     = "+15005550001" // To: 21211 invalid number
	MagicToUnroutable  = "+15005550002" // To: 21612 cannot be reached from this From
	MagicToNoIntl      = "+15005550003" // To: 21408 region not enabled
	MagicToBlocked     = "+15005550004" // To: 21610 the recipient replied STOP
	MagicToNotMobile   = "+15005550009" // To: 21614 cannot receive SMS
	MagicToValidSample = "+15005550006" // To: succeeds
)

// MaxBody is Twilio's limit on Body, in characters.
const MaxBody = 1600

// DefaultCallbackDelay is how long after a send the first status callback
// goes out, so the agent has recorded the message SID by then.
const DefaultCallbackDelay = 250 * time.Millisecond

// Message is one message the fake created (outbound) or received (inbound).
type Message struct {
	SID                 string
	AccountSID          string
	To                  string
	From                string
	MessagingServiceSID string
	Body                string
	MediaURLs           []string
	StatusCallback      string
	Direction           string // outbound-api | inbound
	Status              string
	ErrorCode           int
	DateCreated         time.Time
	DateUpdated         time.Time
}

// Attempt is one POST to Messages.json and what the fake answered.
type Attempt struct {
	Form   url.Values
	Status int
	Code   int // Twilio error code, 0 on success
	SID    string
	At     time.Time
}

// Callback is one webhook the fake posted (status callback or inbound SMS).
type Callback struct {
	URL    string
	Params url.Values
	Header http.Header
	// Status and Body are the receiver's answer; Err is set when there was none.
	Status int
	Body   []byte
	Err    error
}

// APIError is Twilio's error body.
type APIError struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

type scripted struct {
	status, code int
	retryAfter   time.Duration
}

type finalStatus struct {
	status    string
	errorCode int
}

// Server is the fake. It is an http.Handler; serve it with httptest. Close
// it to stop pending callbacks.
type Server struct {
	accountSID, authToken string
	anyCredentials        bool
	number                string
	log                   io.Writer
	client                *http.Client
	delay                 time.Duration
	autoCallbacks         bool
	now                   func() time.Time
	mux                   *http.ServeMux

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	seq       int
	messages  []*Message
	attempts  []Attempt
	callbacks []Callback
	script    []scripted
	finals    map[string]finalStatus
	optedOut  map[string]bool
	tokens    map[string]string // account SID -> auth token last used (any-credentials mode)
	gate      chan struct{}     // non-nil while Hold is in force
}

// Option configures a Server.
type Option func(*Server)

// WithAccount sets the credentials the fake accepts and signs webhooks with.
func WithAccount(accountSID, authToken string) Option {
	return func(s *Server) { s.accountSID, s.authToken = accountSID, authToken }
}

// AcceptAnyCredentials accepts any AC… account with any token and signs each
// message's callbacks with the token that sent it (`clinicbridge fake
// twilio`, where the fake cannot know the configured token).
func AcceptAnyCredentials() Option { return func(s *Server) { s.anyCredentials = true } }

// WithNumber sets the fake's own number: the To of inbound SMS (default MagicFrom).
func WithNumber(n string) Option { return func(s *Server) { s.number = n } }

// WithLog prints one line per request and callback to w: method, path, SID,
// status and error code. Never numbers or bodies.
func WithLog(w io.Writer) Option { return func(s *Server) { s.log = w } }

// WithClient sends callbacks with c (default: a client with Twilio's 15 s timeout).
func WithClient(c *http.Client) Option { return func(s *Server) { s.client = c } }

// WithCallbackDelay waits d after a send before the first status callback
// (default DefaultCallbackDelay). Tests use 0 and Wait.
func WithCallbackDelay(d time.Duration) Option { return func(s *Server) { s.delay = d } }

// WithoutCallbacks stops the automatic status callbacks; send them by hand
// with SendStatus.
func WithoutCallbacks() Option { return func(s *Server) { s.autoCallbacks = false } }

// WithClock sets the clock for dates (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// New returns a fake with no messages.
func New(opts ...Option) *Server {
	s := &Server{
		accountSID:    DefaultAccountSID,
		authToken:     DefaultAuthToken,
		number:        MagicFrom,
		client:        &http.Client{Timeout: 15 * time.Second},
		delay:         DefaultCallbackDelay,
		autoCallbacks: true,
		now:           time.Now,
		finals:        map[string]finalStatus{},
		optedOut:      map[string]bool{},
		tokens:        map[string]string{},
	}
	for _, o := range opts {
		o(s)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /2010-04-01/Accounts/{account}/Messages.json", s.create)
	s.mux.HandleFunc("GET /2010-04-01/Accounts/{account}/Messages.json", s.list)
	s.mux.HandleFunc("GET /2010-04-01/Accounts/{account}/Messages/{file}", s.fetch)
	s.mux.HandleFunc("POST /_fake/inbound", s.fakeInbound)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found", 0)
	})
	return s
}

// Close cancels pending automatic callbacks and waits for them to stop.
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
}

// Wait blocks until every automatic callback scheduled so far was posted.
func (s *Server) Wait() { s.wg.Wait() }

// Hold keeps automatic callbacks from going out until Release, so a test
// can record the send's receipt first without relying on the delay.
func (s *Server) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
}

// Release lets held callbacks go.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
}

// Burst429 answers the next n sends with 429, code 20429 and Retry-After: 1.
func (s *Server) Burst429(n int) {
	for range n {
		s.Fail(http.StatusTooManyRequests, 20429, time.Second)
	}
}

// Fail answers the next send (after authentication) with status and a
// Twilio error body of code, with Retry-After when retryAfter > 0. Calls queue up.
func (s *Server) Fail(status, code int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, scripted{status: status, code: code, retryAfter: retryAfter})
}

// DeliverAs makes messages to `to` end in status (undelivered, failed,
// delivered) with errorCode in the final callback, instead of delivered.
func (s *Server) DeliverAs(to, status string, errorCode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finals[to] = finalStatus{status: status, errorCode: errorCode}
}

// OptOut makes the fake refuse sends to number with 21610, as Twilio does
// after the number texted STOP. OptIn undoes it.
func (s *Server) OptOut(number string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.optedOut[number] = true
}

// OptIn undoes OptOut, as a START from the number does.
func (s *Server) OptIn(number string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.optedOut, number)
}

// Messages returns every message created or received, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.messages))
	for i, m := range s.messages {
		out[i] = *m
		out[i].MediaURLs = append([]string(nil), m.MediaURLs...)
	}
	return out
}

// Message returns the message sid.
func (s *Server) Message(sid string) (Message, bool) {
	for _, m := range s.Messages() {
		if m.SID == sid {
			return m, true
		}
	}
	return Message{}, false
}

// Attempts returns every POST to Messages.json, failures included.
func (s *Server) Attempts() []Attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Attempt, len(s.attempts))
	for i, a := range s.attempts {
		a.Form = cloneValues(a.Form)
		out[i] = a
	}
	return out
}

// Callbacks returns every webhook posted so far, in order.
func (s *Server) Callbacks() []Callback {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Callback, len(s.callbacks))
	for i, c := range s.callbacks {
		c.Params = cloneValues(c.Params)
		c.Header = c.Header.Clone()
		out[i] = c
	}
	return out
}

// ServeHTTP answers the Twilio API paths.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// authenticate checks Basic auth against the account in the path and
// returns the token callbacks are signed with.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	user, pass, ok := r.BasicAuth()
	account := r.PathValue("account")
	switch {
	case !ok:
	case s.anyCredentials && strings.HasPrefix(user, "AC") && pass != "":
		if user != account {
			s.writeError(w, r, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found", 0)
			return "", false
		}
		s.mu.Lock()
		s.tokens[user] = pass
		s.mu.Unlock()
		return pass, true
	case user == s.accountSID && pass == s.authToken:
		if user != account {
			s.writeError(w, r, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found", 0)
			return "", false
		}
		return pass, true
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
	s.writeError(w, r, http.StatusUnauthorized, 20003, "Authenticate", 0)
	return "", false
}

var (
	e164     = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)
	channel  = regexp.MustCompile(`^(whatsapp|messenger|rcs):.+$`)
	shortOrA = regexp.MustCompile(`^([0-9]{3,8}|[A-Za-z0-9 ]{1,11})$`)
)

// magicTo and magicFrom answer as Twilio does for test credentials. The
// messages quote the number, as Twilio's do.
var magicTo = map[string]func(to, from string) (int, string){
	MagicToInvalid: func(to, _ string) (int, string) {
		return 21211, "The 'To' number " + to + " is not a valid phone number."
	},
	MagicToUnroutable: func(to, from string) (int, string) {
		return 21612, "The 'To' phone number: " + to + ", is not currently reachable using the 'From' phone number: " + from + " via SMS."
	},
	MagicToNoIntl: func(to, _ string) (int, string) {
		return 21408, "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: " + to + "."
	},
	MagicToBlocked: func(to, _ string) (int, string) {
		return 21610, "Attempt to send to unsubscribed recipient " + to
	},
	MagicToNotMobile: func(to, _ string) (int, string) {
		return 21614, "'To' number " + to + " is not a valid mobile number"
	},
}

var magicFrom = map[string]func(from string) (int, string){
	MagicFromInvalid: func(from string) (int, string) {
		return 21212, "The 'From' number " + from + " is not a valid phone number, shortcode, or alphanumeric sender ID."
	},
	MagicFromNotOwned: func(from string) (int, string) {
		return 21606, "The 'From' phone number provided (" + from + ") is not a valid message-capable Twilio phone number for this destination/account"
	},
	MagicFromQueueFull: func(from string) (int, string) {
		return 21611, "This 'From' number (" + from + ") has exceeded the maximum number of queued messages"
	},
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	token, ok := s.authenticate(w, r)
	if !ok {
		s.recordAttempt(nil, http.StatusUnauthorized, 20003, "")
		return
	}
	if err := r.ParseForm(); err != nil {
		s.recordAttempt(nil, http.StatusBadRequest, 20001, "")
		s.writeError(w, r, http.StatusBadRequest, 20001, "Could not parse the request body", 0)
		return
	}
	form := r.PostForm

	s.mu.Lock()
	var sc *scripted
	if len(s.script) > 0 {
		sc = &s.script[0]
		s.script = s.script[1:]
	}
	s.mu.Unlock()
	if sc != nil {
		s.recordAttempt(form, sc.status, sc.code, "")
		s.writeError(w, r, sc.status, sc.code, scriptedMessage(sc.status, sc.code), sc.retryAfter)
		return
	}

	to, from, svc := form.Get("To"), form.Get("From"), form.Get("MessagingServiceSid")
	body, media, cb := form.Get("Body"), form["MediaUrl"], form.Get("StatusCallback")
	fail := func(code int, msg string) {
		s.recordAttempt(form, http.StatusBadRequest, code, "")
		s.writeError(w, r, http.StatusBadRequest, code, msg, 0)
	}
	s.mu.Lock()
	blocked := s.optedOut[to]
	s.mu.Unlock()
	switch {
	case to == "":
		fail(21604, "A 'To' phone number is required.")
	case from == "" && svc == "":
		fail(21603, "A 'From' phone number is required.")
	case svc != "" && !(strings.HasPrefix(svc, "MG") && len(svc) == 34):
		fail(21701, "The Messaging Service Sid "+svc+" is invalid.")
	case from != "" && magicFrom[from] != nil:
		fail(magicFrom[from](from))
	case from != "" && !e164.MatchString(from) && !channel.MatchString(from) && !shortOrA.MatchString(from):
		fail(21212, "The 'From' number "+from+" is not a valid phone number, shortcode, or alphanumeric sender ID.")
	case magicTo[to] != nil:
		fail(magicTo[to](to, from))
	case !e164.MatchString(to) && !channel.MatchString(to):
		fail(21211, "The 'To' number "+to+" is not a valid phone number.")
	case body == "" && len(media) == 0:
		fail(21602, "Message body is required.")
	case utf8.RuneCountInString(body) > MaxBody:
		fail(21617, "The concatenated message body exceeds the 1600 character limit.")
	case cb != "" && !validCallback(cb):
		fail(21609, "The StatusCallback URL "+cb+" is not a valid URL.")
	case blocked:
		fail(21610, "Attempt to send to unsubscribed recipient "+to)
	default:
		now := s.now().UTC()
		status := "queued"
		if svc != "" {
			status = "accepted"
		}
		s.mu.Lock()
		s.seq++
		m := &Message{
			SID: fmt.Sprintf("SM%032x", s.seq), AccountSID: r.PathValue("account"),
			To: to, From: from, MessagingServiceSID: svc, Body: body, MediaURLs: append([]string(nil), media...),
			StatusCallback: cb, Direction: "outbound-api", Status: status, DateCreated: now, DateUpdated: now,
		}
		s.messages = append(s.messages, m)
		view := messageJSON(m)
		s.mu.Unlock()
		s.recordAttempt(form, http.StatusCreated, 0, m.SID)
		s.logf("POST %s -> 201 %s %s", r.URL.Path, m.SID, status)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(view)
		if cb != "" && s.autoCallbacks {
			s.scheduleCallbacks(m.SID, token)
		}
	}
}

func validCallback(cb string) bool {
	u, err := url.Parse(cb)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func scriptedMessage(status, code int) string {
	switch code {
	case 20429:
		return "Too Many Requests"
	case 20003:
		return "Authenticate"
	}
	return http.StatusText(status)
}

func (s *Server) recordAttempt(form url.Values, status, code int, sid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts = append(s.attempts, Attempt{Form: cloneValues(form), Status: status, Code: code, SID: sid, At: s.now()})
}

// scheduleCallbacks posts `sent`, then the final status, to the message's
// StatusCallback. Twilio sends no callback for the initial status.
func (s *Server) scheduleCallbacks(sid, token string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for i, status := range []string{"sent", ""} {
			if i == 0 && s.delay > 0 {
				select {
				case <-time.After(s.delay):
				case <-s.ctx.Done():
					return
				}
			}
			s.mu.Lock()
			gate := s.gate
			s.mu.Unlock()
			if gate != nil {
				select {
				case <-gate:
				case <-s.ctx.Done():
					return
				}
			}
			if s.ctx.Err() != nil {
				return
			}
			code := 0
			if status == "" {
				s.mu.Lock()
				var f finalStatus
				ok := false
				if m := s.find(sid); m != nil {
					f, ok = s.finals[m.To]
				}
				s.mu.Unlock()
				status = "delivered"
				if ok {
					status, code = f.status, f.errorCode
				}
			}
			opts := []CallbackOption{SignWith(token)}
			if code != 0 {
				opts = append(opts, WithErrorCode(code))
			}
			_, _ = s.SendStatus(s.ctx, sid, status, opts...)
		}
	}()
}

func (s *Server) find(sid string) *Message {
	for _, m := range s.messages {
		if m.SID == sid {
			return m
		}
	}
	return nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authenticate(w, r); !ok {
		return
	}
	q := r.URL.Query()
	size := 50
	if n, err := strconv.Atoi(q.Get("PageSize")); err == nil && n > 0 {
		size = min(n, 1000)
	}
	account := r.PathValue("account")
	s.mu.Lock()
	var out []map[string]any
	for i := len(s.messages) - 1; i >= 0 && len(out) < size; i-- { // newest first, as Twilio lists
		m := s.messages[i]
		if m.AccountSID != account || (q.Get("To") != "" && m.To != q.Get("To")) || (q.Get("From") != "" && m.From != q.Get("From")) {
			continue
		}
		out = append(out, messageJSON(m))
	}
	s.mu.Unlock()
	if out == nil {
		out = []map[string]any{}
	}
	uri := r.URL.RequestURI()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"messages": out, "page": 0, "page_size": size, "start": 0, "end": max(len(out)-1, 0),
		"uri": uri, "first_page_uri": uri, "next_page_uri": nil, "previous_page_uri": nil,
	})
}

func (s *Server) fetch(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authenticate(w, r); !ok {
		return
	}
	sid, ok := strings.CutSuffix(r.PathValue("file"), ".json")
	s.mu.Lock()
	var m *Message
	if ok {
		m = s.find(sid)
	}
	var view map[string]any
	if m != nil && m.AccountSID == r.PathValue("account") {
		view = messageJSON(m)
	}
	s.mu.Unlock()
	if view == nil {
		s.writeError(w, r, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found", 0)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(view)
}

// fakeInbound lets a person simulate a patient's text from outside Go:
// POST /_fake/inbound with form fields Url (where to post), From, Body and
// optionally AccountSid. Not part of Twilio's API.
func (s *Server) fakeInbound(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("Url") == "" || r.PostForm.Get("From") == "" {
		http.Error(w, "form fields Url, From and Body are required", http.StatusBadRequest)
		return
	}
	var opts []CallbackOption
	if acct := r.PostForm.Get("AccountSid"); acct != "" {
		opts = append(opts, WithAccountSID(acct))
	}
	cb, err := s.SendInbound(r.Context(), r.PostForm.Get("Url"), r.PostForm.Get("From"), r.PostForm.Get("Body"), opts...)
	if err != nil {
		http.Error(w, "posting the inbound SMS failed: "+err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"sid": cb.Params.Get("MessageSid"), "status": cb.Status})
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, status, code int, msg string, retryAfter time.Duration) {
	s.logf("%s %s -> %d code %d", r.Method, r.URL.Path, status, code)
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(APIError{Code: code, Message: msg, MoreInfo: fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), Status: status})
}

func (s *Server) logf(format string, args ...any) {
	if s.log == nil {
		return
	}
	fmt.Fprintf(s.log, time.Now().Format(time.TimeOnly)+" "+format+"\n", args...)
}

// rfc2822 is how Twilio writes dates.
const rfc2822 = "Mon, 02 Jan 2006 15:04:05 -0700"

func messageJSON(m *Message) map[string]any {
	null := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	uri := "/2010-04-01/Accounts/" + m.AccountSID + "/Messages/" + m.SID
	var sent any
	if m.Status == "sent" || m.Status == "delivered" || m.Status == "undelivered" || m.Status == "received" {
		sent = m.DateUpdated.Format(rfc2822)
	}
	var errCode any
	if m.ErrorCode != 0 {
		errCode = m.ErrorCode
	}
	segments := (utf8.RuneCountInString(m.Body) + 152) / 153
	if utf8.RuneCountInString(m.Body) <= 160 {
		segments = 1
	}
	from := null(m.From)
	return map[string]any{
		"sid": m.SID, "account_sid": m.AccountSID, "messaging_service_sid": null(m.MessagingServiceSID),
		"to": m.To, "from": from, "body": m.Body, "status": m.Status, "direction": m.Direction,
		"num_segments": strconv.Itoa(segments), "num_media": strconv.Itoa(len(m.MediaURLs)),
		"date_created": m.DateCreated.Format(rfc2822), "date_updated": m.DateUpdated.Format(rfc2822), "date_sent": sent,
		"price": nil, "price_unit": "USD", "error_code": errCode, "error_message": nil,
		"api_version": "2010-04-01", "uri": uri + ".json",
		"subresource_uris": map[string]string{"media": uri + "/Media.json", "feedback": uri + "/Feedback.json"},
	}
}

func cloneValues(v url.Values) url.Values {
	if v == nil {
		return nil
	}
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

var _ http.Handler = (*Server)(nil)
