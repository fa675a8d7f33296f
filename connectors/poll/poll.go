// Package poll is the generic poll source: it turns the list API of a system
// that sends no webhooks (Cliniko, many EHRs) into events for the reconciler.
// Each listed item, at each updated_at, is one event with the id
// `<id>@<updated_at>`, so dedupe makes a repeated listing a no-op while every
// change of an item is delivered once.
package poll

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	stdhttp "net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/poll/pollfake"
	"github.com/clinicbridge/clinicbridge/mapping"
)

const provider = "poll"

// MaxResponse bounds one page's response body.
const MaxResponse = 32 << 20

// Rate limits: a 429 is waited out (Retry-After, or DefaultRetryWait when the
// API gives none) at most MaxRateLimitRetries times per page, and never for
// longer than MaxRetryWait at once; past that the run fails and the next
// scheduled run starts again from the same watermark.
const (
	DefaultRetryWait    = 5 * time.Second
	MaxRetryWait        = 5 * time.Minute
	MaxRateLimitRetries = 5
)

// Expression variables.
var (
	varsItems = []string{"body"}
	varsEvent = []string{"item"}
	varsNext  = []string{"body", "headers", "links"}
)

// Type declares the `poll` connector type.
func Type() connectors.Type {
	return connectors.Define(connectors.Type{
		Name: "poll",
		Doc: "Turns the JSON list API of a system without webhooks (Cliniko, many EHRs) into events: each " +
			"listed item, at each updated_at, is one event. It receives no webhooks; `reconcile:` entries " +
			"run it on a schedule.",
		Fields: fields,
		Source: true,
		Lister: true,
		Fake: func(w io.Writer) stdhttp.Handler {
			return pollfake.New(pollfake.WithLog(w), pollfake.WithSampleItems())
		},
	}, func(c *Config, env connectors.Env) (any, error) {
		return New(c, env)
	})
}

// Source lists one configured API. It implements connectors.Source (it
// refuses every webhook) and connectors.Lister, and is safe for concurrent use.
type Source struct {
	base          *url.URL
	sinceParam    string
	sinceFormat   string
	sinceTemplate string
	header        stdhttp.Header // static headers, auth included
	timeout       time.Duration
	maxPages      int
	paging        Paging
	pageMode      bool

	items                          *mapping.Expr // nil: the body is the array
	idExpr, typeExpr, keyExpr, upd *mapping.Expr
	next                           *mapping.Expr // nil: the Link header's rel=next

	client *stdhttp.Client
	log    zerolog.Logger
	// sleep waits d or until ctx ends (tests replace it).
	sleep func(ctx context.Context, d time.Duration) error
}

// New builds a source from a config. It does not touch the network.
func New(c *Config, env connectors.Env) (*Source, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s := &Source{
		sinceParam:    c.sinceParam(),
		sinceFormat:   c.sinceFormat(),
		sinceTemplate: c.SinceTemplate,
		header:        stdhttp.Header{},
		timeout:       c.timeout(),
		maxPages:      c.maxPages(),
		log:           env.Logger,
		sleep:         sleep,
	}
	s.base, _ = parseListURL(c.URL) // checked by Validate
	if c.Paging != nil {
		s.paging = *c.Paging
		s.pageMode = c.Paging.pageMode()
	}
	var err error
	compile := func(src string, vars []string) *mapping.Expr {
		if err != nil || src == "" {
			return nil
		}
		var e *mapping.Expr
		e, err = mapping.CompileExpr(src, vars...) // compiled by Validate already
		return e
	}
	s.items = compile(c.Items, varsItems)
	s.idExpr = compile(c.Event.ID, varsEvent)
	s.typeExpr = compile(c.eventType(), varsEvent)
	s.keyExpr = compile(c.Event.Key, varsEvent)
	s.upd = compile(c.Event.UpdatedAt, varsEvent)
	s.next = compile(s.paging.Next, varsNext)
	if err != nil {
		return nil, err
	}

	s.header.Set("Accept", "application/json")
	s.header.Set("User-Agent", "clinicbridge")
	for k, v := range c.Headers {
		s.header.Set(k, v)
	}
	c.Auth.Apply(s.header)

	tr := stdhttp.DefaultTransport.(*stdhttp.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: min(s.timeout, 10*time.Second), KeepAlive: 30 * time.Second}).DialContext
	s.client = &stdhttp.Client{Transport: tr, CheckRedirect: s.checkRedirect}
	return s, nil
}

// checkRedirect follows redirects within the configured origin only: the
// request carries credentials, which must not go to another host.
func (s *Source) checkRedirect(req *stdhttp.Request, via []*stdhttp.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if !s.sameOrigin(req.URL) {
		return errors.New("redirected to another host; credentials are not sent there")
	}
	return nil
}

func (s *Source) sameOrigin(u *url.URL) bool {
	return strings.EqualFold(u.Scheme, s.base.Scheme) && strings.EqualFold(u.Host, s.base.Host)
}

// Close releases idle connections.
func (s *Source) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

// Verify refuses every request: a poll connector is not a webhook endpoint.
func (s *Source) Verify(*connectors.Request) error {
	return fmt.Errorf("%w: a poll connector receives no webhooks; it is fed by `reconcile:` entries that list its API", connectors.ErrUnauthorized)
}

// Parse refuses every request (Verify already did).
func (s *Source) Parse(*connectors.Request) (connectors.Inbound, error) {
	return connectors.Inbound{}, fmt.Errorf("%w: a poll connector receives no webhooks", connectors.ErrMalformed)
}

// List fetches the API page by page from p.Since, yielding each page's
// events before fetching the next, so memory is bounded by one page. Each
// item becomes the event `<id>@<updated_at>`; items that changed before
// p.Since are left out (an API that ignores the since parameter must not
// turn its whole history into events). A page that cannot be fetched, or an
// item whose id or updated_at cannot be read, fails the whole run: the
// reconciler then keeps its watermark and the next run repeats the window.
// p.Types is not used: a generic API has no event types to filter by.
func (s *Source) List(ctx context.Context, p connectors.ListParams, yield func(connectors.Page) error) error {
	pageNo := s.paging.start()
	u := s.pageURL(p.Since, pageNo, "")
	for n := 1; ; n++ {
		body, header, err := s.fetch(ctx, u, n)
		if err != nil {
			return err
		}
		items, err := s.itemsOf(body, n)
		if err != nil {
			return err
		}
		page, err := s.events(items, p.Since, n)
		if err != nil {
			return err
		}
		s.log.Debug().Int("page", n).Int("items", len(items)).Int("events", len(page.Events)).Msg("poll page")
		if len(page.Events) > 0 {
			if err := yield(page); err != nil {
				return err
			}
		}

		var next *url.URL
		if s.pageMode {
			if len(items) == 0 || (s.paging.perPage() > 0 && len(items) < s.paging.perPage()) {
				return nil
			}
			pageNo++
			next = s.pageURL(p.Since, pageNo, "")
		} else {
			if next, err = s.nextURL(u, body, header, p.Since, n); err != nil || next == nil {
				return err
			}
			if next.String() == u.String() {
				return s.fail(n, "the next page is the same URL as this one; stopping instead of looping")
			}
		}
		if n >= s.maxPages {
			return s.fail(n, fmt.Sprintf("the listing has more than max_pages (%d) pages; raise max_pages or run more often", s.maxPages))
		}
		u = next
	}
}

// pageURL is the configured URL with the since parameter, and the page
// number or cursor when paging uses them.
func (s *Source) pageURL(since time.Time, pageNo int, cursor string) *url.URL {
	u := *s.base
	q := u.Query()
	if s.sinceParam != "" && !since.IsZero() {
		v := formatSince(since, s.sinceFormat)
		if s.sinceTemplate != "" {
			v = sincePlaceholder.ReplaceAllLiteralString(s.sinceTemplate, v)
		}
		q.Add(s.sinceParam, v)
	}
	if s.pageMode {
		q.Set(s.paging.PageParam, strconv.Itoa(pageNo))
		if s.paging.PerPageParam != "" {
			q.Set(s.paging.PerPageParam, strconv.Itoa(s.paging.perPage()))
		}
	}
	if cursor != "" {
		q.Set(s.paging.CursorParam, cursor)
	}
	u.RawQuery = q.Encode()
	return &u
}

// formatSince writes t as the API expects, rounded down so that the
// listing starts at or before t.
func formatSince(t time.Time, format string) string {
	t = t.UTC()
	switch format {
	case SinceUnix:
		return strconv.FormatInt(t.Unix(), 10)
	case SinceUnixMS:
		return strconv.FormatInt(t.UnixMilli(), 10)
	case SinceDate:
		return t.Format(time.DateOnly)
	default:
		return t.Truncate(time.Second).Format(time.RFC3339)
	}
}

// fetch GETs one page, waiting out 429s, and returns its decoded body.
func (s *Source) fetch(ctx context.Context, u *url.URL, n int) (any, stdhttp.Header, error) {
	for attempt := 0; ; attempt++ {
		body, header, err := s.get(ctx, u, n)
		var ce *connectors.Error
		if !errors.As(err, &ce) || ce.HTTPStatus != stdhttp.StatusTooManyRequests {
			return body, header, err
		}
		wait := ce.RetryAfter
		if wait <= 0 {
			wait = DefaultRetryWait
		}
		switch {
		case attempt >= MaxRateLimitRetries:
			ce.Msg += fmt.Sprintf("; still rate limited after %d waits", attempt)
			return nil, nil, err
		case wait > MaxRetryWait:
			ce.Msg += fmt.Sprintf("; Retry-After %s is longer than %s, leaving it to the next run", wait, MaxRetryWait)
			return nil, nil, err
		}
		s.log.Debug().Int("page", n).Dur("retry_after", wait).Msg("poll rate limited")
		if err := s.sleep(ctx, wait); err != nil {
			return nil, nil, &connectors.Error{Class: connectors.Transient, Provider: provider,
				Msg: fmt.Sprintf("page %d: cancelled while waiting out a rate limit", n), Err: err}
		}
	}
}

// get performs one request. Errors carry the page number and status, never
// the URL (it may carry a cursor or a key), a header value or the body.
func (s *Source) get(ctx context.Context, u *url.URL, n int) (any, stdhttp.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := stdhttp.NewRequestWithContext(ctx, stdhttp.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, s.fail(n, "the page URL is not valid")
	}
	for k, vs := range s.header {
		req.Header[k] = vs
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, &connectors.Error{Class: connectors.Transient, Provider: provider,
			Msg: fmt.Sprintf("page %d: %s", n, connectors.TransportReason(err))}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		// The body is left out on purpose: APIs echo what they were sent.
		msg := fmt.Sprintf("page %d: %s", n, stdhttp.StatusText(resp.StatusCode))
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			msg += " (a redirect that was not followed)"
		}
		return nil, nil, connectors.HTTPError(provider, resp, "", msg)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return nil, nil, &connectors.Error{Class: connectors.Transient, Provider: provider,
			Msg: fmt.Sprintf("page %d: reading the response: %s", n, connectors.TransportReason(err))}
	}
	if len(b) > MaxResponse {
		return nil, nil, s.fail(n, fmt.Sprintf("the response is larger than %d MiB; ask for smaller pages", MaxResponse>>20))
	}
	body, err := decodeJSON(b)
	if err != nil {
		return nil, nil, s.fail(n, "the response is not JSON")
	}
	return body, resp.Header, nil
}

// decodeJSON decodes b keeping numbers exact: integers become int64 (ids
// beyond 2^53 stay exact), other numbers float64, and integers too large
// for int64 stay json.Number.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data")
	}
	return normalizeNumbers(v), nil
}

func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalizeNumbers(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		if strings.ContainsAny(x.String(), ".eE") {
			if f, err := x.Float64(); err == nil {
				return f
			}
		}
		return x
	}
	return v
}

// itemsOf finds the page's items.
func (s *Source) itemsOf(body any, n int) ([]any, error) {
	v := body
	if s.items != nil {
		var err error
		if v, err = s.items.Eval(map[string]any{"body": body}); err != nil {
			return nil, s.fail(n, fmt.Sprintf("items (%s): %v", s.items.Source(), err))
		}
	}
	switch x := v.(type) {
	case []any:
		return x, nil
	case nil:
		return nil, nil
	}
	if s.items == nil {
		return nil, s.fail(n, "the response is not a JSON array; set `items` to where the list is (e.g. body.data)")
	}
	return nil, s.fail(n, fmt.Sprintf("items (%s) gave %s, want an array", s.items.Source(), kind(v)))
}

// events turns a page's items into events. Errors name the page, the
// item's index and the expression, never the item's values.
func (s *Source) events(items []any, since time.Time, n int) (connectors.Page, error) {
	var page connectors.Page
	for i, it := range items {
		in := map[string]any{"item": it}
		bad := func(key string, e *mapping.Expr, reason string) error {
			return s.fail(n, fmt.Sprintf("items[%d]: event.%s (%s): %s", i, key, e.Source(), reason))
		}
		id, err := s.idExpr.String(in)
		if err != nil {
			return page, bad("id", s.idExpr, err.Error())
		}
		if id == "" {
			return page, bad("id", s.idExpr, "empty")
		}
		upd, err := s.upd.Time(in)
		if err != nil {
			return page, bad("updated_at", s.upd, err.Error())
		}
		if upd.IsZero() {
			return page, bad("updated_at", s.upd, "empty")
		}
		upd = upd.UTC()
		if upd.After(page.Newest) {
			page.Newest = upd
		}
		if upd.Before(since) {
			continue
		}
		typ, err := s.typeExpr.String(in)
		if err != nil {
			return page, bad("type", s.typeExpr, err.Error())
		}
		if typ == "" {
			return page, bad("type", s.typeExpr, "empty")
		}
		key := id
		if s.keyExpr != nil {
			if key, err = s.keyExpr.String(in); err != nil {
				return page, bad("key", s.keyExpr, err.Error())
			}
		}
		payload, err := json.Marshal(it)
		if err != nil {
			return page, s.fail(n, fmt.Sprintf("items[%d]: cannot be encoded as JSON", i))
		}
		page.Events = append(page.Events, connectors.Event{
			ID:         EventID(id, upd),
			Type:       typ,
			Key:        key,
			OccurredAt: upd,
			Payload:    payload,
		})
	}
	return page, nil
}

// EventID is the id of the event for item id as it was at updatedAt:
// `<id>@<updated_at in RFC 3339, UTC, with as many fractional digits as it has>`.
func EventID(id string, updatedAt time.Time) string {
	return id + "@" + updatedAt.UTC().Format(time.RFC3339Nano)
}

// nextURL reads the next page's address from the response; nil means this
// was the last page.
func (s *Source) nextURL(cur *url.URL, body any, header stdhttp.Header, since time.Time, n int) (*url.URL, error) {
	links := parseLinks(header.Values("Link"))
	var v string
	if s.next == nil {
		v, _ = links["next"].(string)
	} else {
		var err error
		v, err = s.next.String(map[string]any{"body": body, "headers": headerMap(header), "links": links})
		if err != nil {
			return nil, s.fail(n, fmt.Sprintf("paging.next (%s): %v", s.next.Source(), err))
		}
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	if s.paging.CursorParam != "" {
		return s.pageURL(since, 0, v), nil
	}
	ref, err := url.Parse(v)
	if err != nil {
		return nil, s.fail(n, "the next page link is not a valid URL")
	}
	next := cur.ResolveReference(ref)
	if !s.sameOrigin(next) {
		return nil, s.fail(n, "the next page link points to another host; credentials are not sent there")
	}
	return next, nil
}

// parseLinks reads RFC 8288 Link header values into rel -> URL (the first
// link with a rel wins).
func parseLinks(values []string) map[string]any {
	links := map[string]any{}
	for _, v := range values {
		for len(v) > 0 {
			v = strings.TrimLeft(v, " \t,")
			if !strings.HasPrefix(v, "<") {
				break
			}
			end := strings.IndexByte(v, '>')
			if end < 0 {
				break
			}
			target := v[1:end]
			v = v[end+1:]
			params := v
			if i := nextLink(v); i >= 0 {
				params, v = v[:i], v[i:]
			} else {
				v = ""
			}
			for _, p := range strings.Split(params, ";") {
				name, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(name), "rel") {
					continue
				}
				for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(val), `"`)) {
					rel = strings.ToLower(rel)
					if _, seen := links[rel]; !seen {
						links[rel] = target
					}
				}
			}
		}
	}
	return links
}

// nextLink finds the comma that starts the next link-value in s, skipping
// commas inside quoted parameter values.
func nextLink(s string) int {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				return i
			}
		}
	}
	return -1
}

// headerMap is the `headers` expression variable: lower-cased name -> first value.
func headerMap(h stdhttp.Header) map[string]any {
	m := make(map[string]any, len(h))
	for k, vs := range h {
		if len(vs) > 0 {
			m[strings.ToLower(k)] = vs[0]
		}
	}
	return m
}

func (s *Source) fail(n int, msg string) *connectors.Error {
	return &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: fmt.Sprintf("page %d: %s", n, msg)}
}

func kind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64, float64, json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var (
	_ connectors.Source = (*Source)(nil)
	_ connectors.Lister = (*Source)(nil)
	_ connectors.Closer = (*Source)(nil)
)
