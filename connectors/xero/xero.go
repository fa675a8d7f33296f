// Package xero is the Xero Accounting API sink: it creates contacts,
// invoices, payments and credit notes (and sends any other request) in one
// organisation, with Xero's Idempotency-Key, rotating OAuth 2.0 refresh
// tokens kept in the connector's state, and Xero's per-tenant limits.
package xero

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/oauth2"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/xero/xerofake"
)

const provider = "xero"

// Actions.
const (
	ActionUpsertContact    = "upsert_contact"
	ActionCreateInvoice    = "create_invoice"
	ActionCreatePayment    = "create_payment"
	ActionCreateCreditNote = "create_credit_note"
	ActionRequest          = "request"
)

const (
	apiPrefix      = "/api.xro/2.0"
	callTimeout    = 30 * time.Second
	maxResponse    = 4 << 20
	maxIdemKey     = 128 // Xero's limit on Idempotency-Key
	maxErrorMsgLen = 300
)

// endpoint is how a create action reaches Xero.
type endpoint struct {
	method, path, wrapper, idField string
}

var endpoints = map[string]endpoint{
	ActionUpsertContact:    {http.MethodPost, "/Contacts", "Contacts", "ContactID"},
	ActionCreateInvoice:    {http.MethodPut, "/Invoices", "Invoices", "InvoiceID"},
	ActionCreatePayment:    {http.MethodPut, "/Payments", "Payments", "PaymentID"},
	ActionCreateCreditNote: {http.MethodPut, "/CreditNotes", "CreditNotes", "CreditNoteID"},
}

var actions = []connectors.Action{
	{
		Name: ActionCreatePayment, Idempotent: true,
		Doc: "Apply a payment to an invoice: PUT /Payments with the document as the one Payment. The receipt's " +
			"external id is the PaymentID.",
		Required: []string{"Invoice", "Account", "Amount"},
		Optional: []string{"Date", "Reference", "CurrencyRate", "IsReconciled", "Status"},
	},
	{
		Name: ActionCreateInvoice, Idempotent: true,
		Doc:      "Create an invoice: PUT /Invoices with the document as the one Invoice. External id: InvoiceID.",
		Required: []string{"Type", "Contact", "LineItems"},
		Optional: []string{"Date", "DueDate", "InvoiceNumber", "Reference", "Status", "LineAmountTypes", "CurrencyCode", "BrandingThemeID", "Url"},
	},
	{
		Name: ActionUpsertContact, Idempotent: true,
		Doc: "Create a contact, or update the one named by ContactID or ContactNumber: POST /Contacts. " +
			"External id: ContactID.",
		Required: []string{"Name"},
		Optional: []string{"ContactID", "ContactNumber", "AccountNumber", "FirstName", "LastName", "EmailAddress", "Phones", "Addresses", "IsCustomer", "DefaultCurrency"},
	},
	{
		Name: ActionCreateCreditNote, Idempotent: true,
		Doc:      "Create a credit note: PUT /CreditNotes with the document as the one CreditNote. External id: CreditNoteID.",
		Required: []string{"Type", "Contact"},
		Optional: []string{"LineItems", "Date", "Status", "Reference", "CreditNoteNumber", "LineAmountTypes", "CurrencyCode"},
	},
	{
		Name: ActionRequest,
		Doc: "Any other call: the document is {method, path, body}; path is under /api.xro/2.0 unless it starts " +
			"with another /<api>.xro/ root. The Idempotency-Key is sent with POST, PUT and PATCH. External id: " +
			"the <Name>ID of the first object in the answer's first list (e.g. InvoiceID in Invoices).",
		Required: []string{"method", "path"},
		Optional: []string{"body"},
	},
}

// Type declares the `xero` connector type.
func Type() connectors.Type {
	return connectors.Define(connectors.Type{
		Name: "xero",
		Doc: "Writes to one Xero organisation through the Accounting API: contacts, invoices, payments, credit " +
			"notes, or any request. OAuth 2.0 with rotating refresh tokens kept in the connector's state; " +
			"Idempotency-Key on every write; Xero's per-tenant limits kept locally.",
		Fields:  fields,
		Actions: actions,
		Fake: func(w io.Writer) http.Handler {
			return xerofake.New(xerofake.WithLog(w), xerofake.AcceptAnyRefreshToken())
		},
	}, func(c *Config, env connectors.Env) (any, error) {
		return New(c, env)
	})
}

// Option tunes a Sink; the defaults are Xero's limits. Tests use them to
// scale time down.
type Option func(*options)

type options struct {
	calls       int
	per         time.Duration
	burst       int
	concurrent  int
	sleepUntil  func(context.Context, time.Time) error
	customSleep bool
	client      *http.Client
}

// WithRateLimit sets the per-tenant call budget: calls per window, in
// bursts of up to burst (default 60 per minute, burst 5).
func WithRateLimit(calls int, per time.Duration, burst int) Option {
	return func(o *options) { o.calls, o.per, o.burst = calls, per, burst }
}

// WithConcurrency sets how many calls to the tenant may be in flight (default 5).
func WithConcurrency(n int) Option { return func(o *options) { o.concurrent = n } }

// WithSleepUntil replaces how the sink waits for its turn under the rate
// limit: f returns at until (by Env.Now's clock) or when ctx ends. Tests
// pair it with Env.Now to run on a fake clock.
func WithSleepUntil(f func(ctx context.Context, until time.Time) error) Option {
	return func(o *options) { o.sleepUntil, o.customSleep = f, true }
}

// WithHTTPClient sets the client for API and token calls.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// Sink writes to one Xero organisation.
type Sink struct {
	root       string // base_url
	tenant     string
	tokens     *tokens
	limits     *limits
	client     *http.Client
	now        func() time.Time
	sleepUntil func(context.Context, time.Time) error
	timeout    time.Duration
}

// New builds a sink. It reads nothing and touches no network: the token is
// read from env.State at the first call (State is nil while validating).
func New(c *Config, env connectors.Env, opts ...Option) (*Sink, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	o := options{calls: DefaultCallsPerMinute, per: time.Minute, burst: DefaultBurst, concurrent: DefaultConcurrency, sleepUntil: sleepUntil}
	for _, f := range opts {
		f(&o)
	}
	if o.calls < 1 || o.per <= 0 || o.burst < 1 || o.concurrent < 1 {
		return nil, errors.New("xero: rate limit options must be positive")
	}
	if o.client == nil {
		o.client = &http.Client{
			Timeout:       callTimeout,
			Transport:     http.DefaultTransport.(*http.Transport).Clone(), // own pool, closed by Close
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	s := &Sink{
		root:       c.baseURL(),
		tenant:     c.TenantID,
		client:     o.client,
		now:        env.Clock(),
		sleepUntil: o.sleepUntil,
		timeout:    callTimeout,
	}
	s.tokens = newTokens(oauthConfig(c, ""), env.State, c.RefreshToken, o.client, s.now)
	if env.Now == nil && !o.customSleep {
		s.limits = limitsFor(s.root, c.TenantID, o.calls, o.per, o.burst, o.concurrent)
	} else {
		// A bucket belongs to one timeline: a sink on an injected clock
		// (tests) keeps its own instead of sharing the wall-clock one.
		s.limits = newLimits(o.calls, o.per, o.burst, o.concurrent)
	}
	return s, nil
}

func oauthConfig(c *Config, redirect string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   c.authorizeURL(),
			TokenURL:  c.tokenURL(),
			AuthStyle: oauth2.AuthStyleInHeader,
		},
		RedirectURL: redirect,
		Scopes:      Scopes,
	}
}

// call is one request as an action describes it.
type call struct {
	method, path string
	body         []byte
	wrapper      string // the answer's list to read the receipt from
	idField      string
}

// Do performs d.Action. Errors are *connectors.Error whose message holds
// the status and Xero's reason with the document's values removed.
func (s *Sink) Do(ctx context.Context, d connectors.Delivery) (connectors.Receipt, error) {
	action := d.Action
	if action == "" {
		action = actions[0].Name
	}
	c, err := buildCall(action, d.Document)
	if err != nil {
		return connectors.Receipt{}, err
	}
	scrub := scrubber(d.Document)
	key := idempotencyKey(d.IdempotencyKey)
	for attempt := 0; ; attempt++ {
		access, err := s.tokens.access(ctx)
		if err != nil {
			return connectors.Receipt{}, err
		}
		status, header, body, err := s.send(ctx, c, access, key)
		if err != nil {
			return connectors.Receipt{}, err
		}
		if status == http.StatusUnauthorized && attempt == 0 {
			// Expired early or revoked: refresh once and try again.
			s.tokens.expire(ctx, access)
			continue
		}
		if status >= 200 && status < 300 {
			return receipt(c, status, body, scrub)
		}
		return connectors.Receipt{}, classify(status, header, body, scrub)
	}
}

func buildCall(action string, doc map[string]any) (call, error) {
	if ep, ok := endpoints[action]; ok {
		body, err := json.Marshal(map[string]any{ep.wrapper: []any{doc}})
		if err != nil {
			return call{}, permanent("the document is not JSON-encodable")
		}
		return call{method: ep.method, path: apiPrefix + ep.path, body: body, wrapper: ep.wrapper, idField: ep.idField}, nil
	}
	if action != ActionRequest {
		return call{}, permanent(fmt.Sprintf("unknown action %q", action))
	}
	method, _ := doc["method"].(string)
	method = strings.ToUpper(method)
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return call{}, permanent("request: method must be GET, POST, PUT, PATCH or DELETE")
	}
	path, _ := doc["path"].(string)
	if !strings.HasPrefix(path, "/") || strings.Contains(path, "..") || strings.Contains(path, "//") || strings.ContainsAny(path, "#\\ ") {
		return call{}, permanent("request: path must be an absolute path such as /Invoices/{id}/Email")
	}
	if first, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/"); !strings.HasSuffix(first, ".xro") {
		path = apiPrefix + path
	}
	c := call{method: method, path: path}
	if b, ok := doc["body"]; ok && b != nil {
		body, err := json.Marshal(b)
		if err != nil {
			return call{}, permanent("request: body is not JSON-encodable")
		}
		c.body = body
	}
	return c, nil
}

// idempotencyKey fits the delivery's key into Xero's 128 characters: a
// longer one is replaced by its SHA-256, the same on every attempt.
func idempotencyKey(k string) string {
	if len(k) <= maxIdemKey {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "cb-" + hex.EncodeToString(sum[:])
}

// send makes one HTTP call within the tenant's limits.
func (s *Sink) send(ctx context.Context, c call, access, key string) (int, http.Header, []byte, error) {
	release, err := s.limits.acquire(ctx, s.now, s.sleepUntil)
	if err != nil {
		return 0, nil, nil, err
	}
	defer release()

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				wrote.Store(true)
			}
		},
	})
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, s.root+c.path, body)
	if err != nil {
		return 0, nil, nil, permanent("the request URL is not valid")
	}
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set("xero-tenant-id", s.tenant)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "clinicbridge")
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" && c.method != http.MethodGet && c.method != http.MethodDelete {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, nil, connectors.TransportError(provider, err, wrote.Load())
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// Xero acted but the answer was cut: the key makes a retry safe.
		return 0, nil, nil, &connectors.Error{Class: connectors.Ambiguous, Provider: provider, HTTPStatus: resp.StatusCode, Msg: "the answer was cut off"}
	}
	return resp.StatusCode, resp.Header, b, nil
}

// receipt reads the created object's id from a 2xx answer such as
// {"Id":..,"Status":"OK","Payments":[{"PaymentID":..,"Status":"AUTHORISED"}]}.
func receipt(c call, status int, body []byte, scrub func(string) string) (connectors.Receipt, error) {
	var ans map[string]json.RawMessage
	if json.Unmarshal(body, &ans) != nil {
		return connectors.Receipt{Status: fmt.Sprint(status)}, nil
	}
	wrapper, idField := c.wrapper, c.idField
	if wrapper == "" {
		wrapper, idField = firstList(ans)
	}
	var items []map[string]any
	if wrapper == "" || json.Unmarshal(ans[wrapper], &items) != nil || len(items) == 0 {
		return connectors.Receipt{Status: fmt.Sprint(status)}, nil
	}
	item := items[0]
	if failed, _ := item["HasValidationErrors"].(bool); failed {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Permanent, Provider: provider, HTTPStatus: status,
			Code: "ValidationException", Msg: validationMessages([]map[string]any{item}, scrub)}
	}
	rc := connectors.Receipt{}
	rc.ExternalID, _ = item[idField].(string)
	rc.Status, _ = item["Status"].(string)
	if rc.Status == "" {
		rc.Status = fmt.Sprint(status)
	}
	return rc, nil
}

// firstList finds the answer's object list (Invoices, BankTransactions...)
// and its id field (InvoiceID, BankTransactionID...).
func firstList(ans map[string]json.RawMessage) (string, string) {
	names := make([]string, 0, len(ans))
	for k := range ans {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := bytes.TrimSpace(ans[k])
		if len(v) > 0 && v[0] == '[' && strings.HasSuffix(k, "s") {
			return k, strings.TrimSuffix(k, "s") + "ID"
		}
	}
	return "", ""
}

// xeroError is both of Xero's error shapes: the API's
// {ErrorNumber, Type, Message, Elements} and the gateway's problem details
// {Title, Status, Detail}.
type xeroError struct {
	ErrorNumber int              `json:"ErrorNumber"`
	Type        string           `json:"Type"`
	Message     string           `json:"Message"`
	Elements    []map[string]any `json:"Elements"`
	Title       string           `json:"Title"`
	Detail      string           `json:"Detail"`
}

// classify turns a non-2xx answer into an error. Xero's validation
// messages are kept (they say what to fix) with the document's values
// removed; the rest of the body (Elements echo the document) is not.
func classify(status int, header http.Header, body []byte, scrub func(string) string) error {
	var xe xeroError
	_ = json.Unmarshal(body, &xe)
	e := &connectors.Error{Class: connectors.ClassifyStatus(status), Provider: provider, HTTPStatus: status, Code: xe.Type}
	reason := ""
	switch {
	case len(xe.Elements) > 0:
		reason = validationMessages(xe.Elements, scrub)
	case xe.Message != "":
		reason = scrub(xe.Message)
	case xe.Detail != "":
		reason = scrub(xe.Detail)
	}
	switch {
	case status == http.StatusBadRequest:
		e.Class = connectors.Permanent
	case status == http.StatusUnauthorized:
		e.Class = connectors.Auth
		reason = join("Xero refused a freshly refreshed access token", reason)
	case status == http.StatusForbidden:
		e.Class = connectors.Auth
		reason = join("forbidden: is tenant_id connected to this app, with the accounting scopes?", reason)
	case status == http.StatusConflict:
		// A request with the same Idempotency-Key is still in progress;
		// retrying with the key is safe.
		e.Class = connectors.Transient
	case status == http.StatusTooManyRequests:
		e.RetryAfter = connectors.ParseRetryAfter(header.Get("Retry-After"), time.Now())
		problem := header.Get("X-Rate-Limit-Problem")
		if problem == "" {
			problem = "unknown"
		}
		reason = join("rate limited (X-Rate-Limit-Problem: "+problem+")", reason)
	}
	if reason == "" {
		reason = http.StatusText(status)
	}
	e.Msg = truncate(reason, maxErrorMsgLen)
	return e
}

func join(a, b string) string {
	if b == "" {
		return a
	}
	return a + ": " + b
}

// validationMessages joins the distinct ValidationErrors[].Message of elements.
func validationMessages(elements []map[string]any, scrub func(string) string) string {
	var msgs []string
	seen := map[string]bool{}
	for _, el := range elements {
		list, _ := el["ValidationErrors"].([]any)
		for _, v := range list {
			m, _ := v.(map[string]any)
			msg, _ := m["Message"].(string)
			msg = scrub(strings.TrimSpace(msg))
			if msg != "" && !seen[msg] {
				seen[msg] = true
				msgs = append(msgs, msg)
			}
		}
	}
	if len(msgs) == 0 {
		return "A validation exception occurred"
	}
	return strings.Join(msgs, "; ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// scrubber returns a function that removes the document's values (strings
// of three or more characters, numbers of three or more digits) from a
// message: Xero quotes what it rejects, and errors must not carry patient
// data.
func scrubber(doc map[string]any) func(string) string {
	var vals []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			if len(strings.TrimSpace(v)) >= 3 {
				vals = append(vals, v, strings.TrimSpace(v))
			}
		case float64, int, int64, json.Number:
			if s := fmt.Sprint(v); len(s) >= 3 {
				vals = append(vals, s)
			}
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	return func(s string) string {
		for _, v := range vals {
			if strings.Contains(s, v) {
				s = strings.ReplaceAll(s, v, "[redacted]")
			}
			if lv := strings.ToLower(v); lv != v && strings.Contains(strings.ToLower(s), lv) {
				s = replaceFold(s, v)
			}
		}
		return s
	}
}

// replaceFold replaces v in s ignoring case (Xero may change case).
func replaceFold(s, v string) string {
	ls, lv := strings.ToLower(s), strings.ToLower(v)
	if len(ls) != len(s) || len(lv) != len(v) {
		return s // lower-casing changed byte lengths: leave it
	}
	var b strings.Builder
	for {
		i := strings.Index(ls, lv)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteString("[redacted]")
		s, ls = s[i+len(v):], ls[i+len(v):]
	}
}

func permanent(msg string) error {
	return &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: msg}
}

// Close releases idle connections.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

var (
	_ connectors.Sink   = (*Sink)(nil)
	_ connectors.Closer = (*Sink)(nil)
)
