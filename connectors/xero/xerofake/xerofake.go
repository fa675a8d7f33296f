// Package xerofake is a stateful stand-in for Xero: the identity server
// (authorize redirect, token endpoint with authorization_code and rotating
// refresh_token grants, revocation), GET /connections, and the Accounting
// API's Contacts, Invoices, Payments, CreditNotes and Accounts with Xero's
// validation and error shapes, Idempotency-Key replay, and the per-tenant
// limits (60 calls a minute, 5000 a day, 5 in flight) answered with 429,
// Retry-After and X-Rate-Limit-Problem. Tests serve it with httptest and
// read what it stored; `clinicbridge fake xero` serves it permissively.
package xerofake

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultTenantID is the organisation a fake without WithTenant starts with.
const DefaultTenantID = "c0ffee00-0000-4000-8000-000000000001"

// Paths the fake serves (point token_url and authorize_url at them).
const (
	TokenPath       = "/connect/token"
	AuthorizePath   = "/identity/connect/authorize"
	ConnectionsPath = "/connections"
	APIPrefix       = "/api.xro/2.0"
)

// Response is a scripted answer to the next API call.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Recorded is one API call the fake received (token calls excluded).
type Recorded struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
	Status int
	Replay bool
	At     time.Time
}

// Server is the fake. It is an http.Handler.
type Server struct {
	log io.Writer

	mu           sync.Mutex
	now          func() time.Time
	clientID     string
	clientSecret string
	anyRefresh   bool
	openTenants  bool
	deny         bool
	accessTTL    time.Duration
	perWindow    int
	window       time.Duration
	perDay       int
	concurrent   int

	orgs     map[string]*org
	orgOrder []string
	codes    map[string]*authCode
	refresh  map[string]*refreshToken
	access   map[string]*accessToken
	grants   []*grant
	script   []Response
	requests []Recorded
	refreshN int
	numSeq   int
}

type grant struct {
	revoked bool
	all     bool // covers every tenant (open mode)
	tenants map[string]bool
}

type authCode struct {
	redirect, challenge string
	expires             time.Time
	used                bool
}

type refreshToken struct {
	g    *grant
	used bool
}

type accessToken struct {
	g       *grant
	expires time.Time
	stale   bool // replaced by a refresh
}

type org struct {
	id, name    string
	contacts    []map[string]any
	invoices    []map[string]any
	payments    []map[string]any
	creditNotes []map[string]any
	accounts    []map[string]any
	idem        map[string]*idemEntry
	calls       []time.Time // within the last day, oldest first
	inflight    int
	maxInWindow int
	limited     int
	effects     int
	invoiceSeq  int
	creditSeq   int
}

type idemEntry struct {
	method, path string
	body         []byte
	inflight     bool
	status       int
	resp         []byte
}

// Option configures a Server.
type Option func(*Server)

// WithClient accepts only this client id and secret (default: any).
func WithClient(id, secret string) Option {
	return func(s *Server) { s.clientID, s.clientSecret = id, secret }
}

// WithTenant adds an organisation; with at least one, unknown tenant ids
// are refused (403) instead of created on first use.
func WithTenant(id, name string) Option {
	return func(s *Server) {
		s.openTenants = false
		s.addOrg(id, name)
	}
}

// WithClock sets the clock for token expiry, rate-limit windows and dates.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithRateLimit sets the per-tenant limit (default 60 calls per minute);
// tests scale it down.
func WithRateLimit(calls int, per time.Duration) Option {
	return func(s *Server) { s.perWindow, s.window = calls, per }
}

// WithDayLimit sets the per-tenant daily limit (default 5000).
func WithDayLimit(calls int) Option { return func(s *Server) { s.perDay = calls } }

// WithConcurrency sets how many calls per tenant may be in flight (default 5).
func WithConcurrency(n int) Option { return func(s *Server) { s.concurrent = n } }

// WithAccessTokenTTL sets how long access tokens live (default 30 minutes).
func WithAccessTokenTTL(d time.Duration) Option { return func(s *Server) { s.accessTTL = d } }

// WithLog prints one line per request to w: method, path, tenant, key and
// status. Never bodies or tokens.
func WithLog(w io.Writer) Option { return func(s *Server) { s.log = w } }

// AcceptAnyRefreshToken accepts a refresh token the fake has never seen,
// once (as a grant made before the fake started); used ones still fail.
// `clinicbridge fake xero` runs this way so any configured refresh_token works.
func AcceptAnyRefreshToken() Option { return func(s *Server) { s.anyRefresh = true } }

// New returns a fake. Without WithTenant it holds DefaultTenantID and
// creates any other tenant id on first use.
func New(opts ...Option) *Server {
	s := &Server{
		now:         time.Now,
		openTenants: true,
		accessTTL:   30 * time.Minute,
		perWindow:   60,
		window:      time.Minute,
		perDay:      5000,
		concurrent:  5,
		orgs:        map[string]*org{},
		codes:       map[string]*authCode{},
		refresh:     map[string]*refreshToken{},
		access:      map[string]*accessToken{},
	}
	for _, o := range opts {
		o(s)
	}
	if s.openTenants && len(s.orgs) == 0 {
		s.addOrg(DefaultTenantID, "Demo Company (UK)")
	}
	return s
}

func (s *Server) addOrg(id, name string) *org {
	o := &org{id: id, name: name, idem: map[string]*idemEntry{}}
	for _, a := range []struct{ code, name, typ string }{
		{"090", "Business Bank Account", "BANK"},
		{"091", "Business Savings Account", "BANK"},
		{"200", "Sales", "REVENUE"},
		{"260", "Other Revenue", "REVENUE"},
		{"400", "Advertising", "EXPENSE"},
		{"610", "Accounts Receivable", "CURRENT"},
	} {
		o.accounts = append(o.accounts, map[string]any{
			"AccountID": newID(), "Code": a.code, "Name": a.name, "Type": a.typ, "Status": "ACTIVE",
			"EnablePaymentsToAccount": false, "Class": accountClass(a.typ),
		})
	}
	s.orgs[id] = o
	s.orgOrder = append(s.orgOrder, id)
	return o
}

func accountClass(typ string) string {
	switch typ {
	case "BANK", "CURRENT":
		return "ASSET"
	case "REVENUE":
		return "REVENUE"
	default:
		return "EXPENSE"
	}
}

// IssueRefreshToken makes a refresh token for a new grant covering every
// tenant, as if the organisation had been connected before: seed a
// connector's refresh_token with it.
func (s *Server) IssueRefreshToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &grant{all: true}
	s.grants = append(s.grants, g)
	rt := randomToken()
	s.refresh[rt] = &refreshToken{g: g}
	return rt
}

// Revoke disconnects the app: every grant so far is revoked, so every
// refresh fails with invalid_grant and every access token with 401. A new
// authorization (xero connect) makes a grant that works.
func (s *Server) Revoke() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.grants {
		g.revoked = true
	}
}

// Deny makes the authorize endpoint redirect back with error=access_denied
// (the user clicked Cancel) while on.
func (s *Server) Deny(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deny = on
}

// Script queues answers for the next API calls (after authentication),
// in order; they create nothing and are not stored for idempotency.
func (s *Server) Script(r ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, r...)
}

// Refreshes is how many refresh_token grants succeeded.
func (s *Server) Refreshes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshN
}

// Requests returns the API calls received so far.
func (s *Server) Requests() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Recorded, len(s.requests))
	copy(out, s.requests)
	return out
}

// Contacts, Invoices, Payments and CreditNotes return copies of what the
// tenant holds, oldest first.
func (s *Server) Contacts(tenant string) []map[string]any {
	return s.objects(tenant, func(o *org) []map[string]any { return o.contacts })
}

// Invoices returns the tenant's invoices.
func (s *Server) Invoices(tenant string) []map[string]any {
	return s.objects(tenant, func(o *org) []map[string]any { return o.invoices })
}

// Payments returns the tenant's payments.
func (s *Server) Payments(tenant string) []map[string]any {
	return s.objects(tenant, func(o *org) []map[string]any { return o.payments })
}

// CreditNotes returns the tenant's credit notes.
func (s *Server) CreditNotes(tenant string) []map[string]any {
	return s.objects(tenant, func(o *org) []map[string]any { return o.creditNotes })
}

func (s *Server) objects(tenant string, pick func(*org) []map[string]any) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.orgs[tenant]
	if o == nil {
		return nil
	}
	var out []map[string]any
	for _, m := range pick(o) {
		out = append(out, clone(m))
	}
	return out
}

// Effects is how many objects the tenant's writes created or changed,
// idempotent replays excluded.
func (s *Server) Effects(tenant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.orgs[tenant]; o != nil {
		return o.effects
	}
	return 0
}

// Calls is how many API calls the tenant's limits counted (429s excluded).
func (s *Server) Calls(tenant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.orgs[tenant]; o != nil {
		return len(o.calls)
	}
	return 0
}

// MaxCallsInWindow is the most calls the tenant made in any rolling
// rate-limit window (a minute by default): the per-minute counter.
func (s *Server) MaxCallsInWindow(tenant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.orgs[tenant]; o != nil {
		return o.maxInWindow
	}
	return 0
}

// RateLimited is how many of the tenant's calls got 429.
func (s *Server) RateLimited(tenant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.orgs[tenant]; o != nil {
		return o.limited
	}
	return 0
}

// SeedInvoice stores an AUTHORISED ACCREC invoice of total for a contact
// named contactName (created if new) and returns its InvoiceID.
func (s *Server) SeedInvoice(tenant, contactName string, total float64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.orgs[tenant]
	if o == nil {
		o = s.addOrg(tenant, "Organisation "+tenant)
	}
	inv := map[string]any{
		"Type": "ACCREC", "Status": "AUTHORISED", "Contact": map[string]any{"Name": contactName},
		"LineItems": []any{map[string]any{"Description": "Consultation", "Quantity": 1.0, "UnitAmount": total, "AccountCode": "200"}},
	}
	errs, apply := s.invoice(o, inv, "ACCREC")
	if len(errs) > 0 {
		panic("xerofake: SeedInvoice: " + strings.Join(errs, "; "))
	}
	return apply()["InvoiceID"].(string)
}

func (s *Server) logf(format string, args ...any) {
	if s.log != nil {
		fmt.Fprintf(s.log, time.Now().Format(time.TimeOnly)+" "+format+"\n", args...)
	}
}

// ServeHTTP routes to the identity server, /connections or the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == TokenPath:
		s.token(w, r)
	case r.URL.Path == AuthorizePath:
		s.authorize(w, r)
	case r.URL.Path == ConnectionsPath:
		s.connections(w, r)
	case strings.HasPrefix(r.URL.Path, APIPrefix+"/"):
		s.api(w, r)
	default:
		writeJSON(w, http.StatusNotFound, problem(http.StatusNotFound, "Not Found", "The resource you're looking for cannot be found"))
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// problem is the gateway's error shape (401, 403, 404, 429).
func problem(status int, title, detail string) map[string]any {
	return map[string]any{"Type": nil, "Title": title, "Status": status, "Detail": detail, "Instance": newID(), "Extensions": map[string]any{}}
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func clone(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// netDate renders t as Xero's /Date(ms+0000)/.
func netDate(t time.Time) string { return fmt.Sprintf("/Date(%d+0000)/", t.UnixMilli()) }
