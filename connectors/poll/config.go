package poll

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/config"
	cbhttp "github.com/clinicbridge/clinicbridge/connectors/http"
	"github.com/clinicbridge/clinicbridge/mapping"
)

// Since formats: how ListParams.Since is written into the since parameter.
const (
	SinceRFC3339 = "rfc3339" // 2025-01-31T09:30:00Z (UTC, whole seconds, rounded down)
	SinceUnix    = "unix"    // 1738315800
	SinceUnixMS  = "unix_ms" // 1738315800000
	SinceDate    = "date"    // 2025-01-31 (UTC, the day Since falls on)
)

// Defaults.
const (
	DefaultSinceParam  = "updated_since"
	DefaultSinceFormat = SinceRFC3339
	DefaultEventType   = `"item.updated"`
	DefaultTimeout     = 30 * time.Second
	DefaultMaxPages    = 1000
	DefaultPageStart   = 1
	DefaultPerPage     = 100
)

var sinceFormats = []string{SinceRFC3339, SinceUnix, SinceUnixMS, SinceDate}

// sincePlaceholder matches {{since}} in since_template, spaces allowed.
var sincePlaceholder = regexp.MustCompile(`\{\{\s*since\s*\}\}`)

// Config is a poll connector's configuration.
type Config struct {
	URL string `yaml:"url"`
	// SinceParam is nil when not set (the default applies) and "" when set
	// empty (no since parameter is sent).
	SinceParam    *string           `yaml:"since_param"`
	SinceFormat   string            `yaml:"since_format"`
	SinceTemplate string            `yaml:"since_template"`
	Items         string            `yaml:"items"`
	Event         EventExprs        `yaml:"event"`
	Paging        *Paging           `yaml:"paging"`
	Auth          *cbhttp.Auth      `yaml:"auth"`
	Headers       map[string]string `yaml:"headers"`
	Timeout       *config.Duration  `yaml:"timeout"`
	MaxPages      *int              `yaml:"max_pages"`
}

// EventExprs read an event's identity from one listed item. They sit under
// `event:` because `type` at the top level names the connector type.
type EventExprs struct {
	ID        string `yaml:"id"`
	Type      string `yaml:"type"`
	Key       string `yaml:"key"`
	UpdatedAt string `yaml:"updated_at"`
}

// Paging says how to get from one page to the next: a next link or cursor
// read from the response (Next), or a page number (PageParam). Neither set
// means: follow an RFC 8288 `Link: <...>; rel="next"` header if the API sends one.
type Paging struct {
	Next        string `yaml:"next"`
	CursorParam string `yaml:"cursor_param"`

	PageParam    string `yaml:"page_param"`
	Start        *int   `yaml:"start"`
	PerPageParam string `yaml:"per_page_param"`
	PerPage      int    `yaml:"per_page"`
}

func (c *Config) sinceParam() string {
	if c.SinceParam == nil {
		return DefaultSinceParam
	}
	return *c.SinceParam
}

func (c *Config) sinceFormat() string {
	if c.SinceFormat == "" {
		return DefaultSinceFormat
	}
	return c.SinceFormat
}

func (c *Config) timeout() time.Duration {
	if c.Timeout == nil {
		return DefaultTimeout
	}
	return c.Timeout.Std()
}

func (c *Config) maxPages() int {
	if c.MaxPages == nil {
		return DefaultMaxPages
	}
	return *c.MaxPages
}

func (c *Config) eventType() string {
	if c.Event.Type == "" {
		return DefaultEventType
	}
	return c.Event.Type
}

// pageMode reports whether paging is by page number.
func (p *Paging) pageMode() bool { return p != nil && p.PageParam != "" }

func (p *Paging) start() int {
	if p == nil || p.Start == nil {
		return DefaultPageStart
	}
	return *p.Start
}

// perPage is the page size used to recognise the last page: per_page, or
// DefaultPerPage when per_page_param is set without it, else 0 (unknown).
func (p *Paging) perPage() int {
	switch {
	case p == nil:
		return 0
	case p.PerPage > 0:
		return p.PerPage
	case p.PerPageParam != "":
		return DefaultPerPage
	}
	return 0
}

// Validate checks the config without touching the network. Errors name the
// key and never repeat a header value or credential.
func (c *Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("url: required"))
	} else if _, err := parseListURL(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("url: %w", err))
	}
	if !contains(sinceFormats, c.sinceFormat()) {
		errs = append(errs, fmt.Errorf("since_format: %q is not one of %s", c.SinceFormat, strings.Join(sinceFormats, ", ")))
	}
	if c.SinceTemplate != "" {
		switch {
		case c.sinceParam() == "":
			errs = append(errs, errors.New("since_template: needs since_param"))
		case !sincePlaceholder.MatchString(c.SinceTemplate):
			errs = append(errs, errors.New("since_template: must contain {{since}}"))
		}
	}
	if c.Items != "" {
		if _, err := mapping.CompileExpr(c.Items, varsItems...); err != nil {
			errs = append(errs, fmt.Errorf("items: %v", err))
		}
	}
	if c.Event.ID == "" {
		errs = append(errs, errors.New("event.id: required"))
	}
	if c.Event.UpdatedAt == "" {
		errs = append(errs, errors.New("event.updated_at: required"))
	}
	for _, e := range []struct{ key, src string }{
		{"event.id", c.Event.ID}, {"event.type", c.Event.Type}, {"event.key", c.Event.Key}, {"event.updated_at", c.Event.UpdatedAt},
	} {
		if e.src == "" {
			continue
		}
		if _, err := mapping.CompileExpr(e.src, varsEvent...); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", e.key, err))
		}
	}
	if c.Paging != nil {
		errs = append(errs, c.Paging.validate()...)
	}
	if c.Auth != nil {
		errs = append(errs, c.Auth.Validate())
	}
	for name := range c.Headers {
		if !validHeaderName(name) {
			errs = append(errs, fmt.Errorf("headers: %q is not a valid HTTP header name", name))
		}
	}
	if c.Timeout != nil && c.Timeout.Std() <= 0 {
		errs = append(errs, errors.New("timeout: must be positive"))
	}
	if c.MaxPages != nil && *c.MaxPages <= 0 {
		errs = append(errs, errors.New("max_pages: must be positive"))
	}
	return errors.Join(errs...)
}

func (p *Paging) validate() []error {
	var errs []error
	if p.Next != "" && p.PageParam != "" {
		errs = append(errs, errors.New("paging: set either next (a link or cursor from the response) or page_param (page numbers), not both"))
	}
	if p.Next != "" {
		if _, err := mapping.CompileExpr(p.Next, varsNext...); err != nil {
			errs = append(errs, fmt.Errorf("paging.next: %v", err))
		}
	}
	if p.CursorParam != "" && p.Next == "" {
		errs = append(errs, errors.New("paging.cursor_param: needs paging.next, the expression that reads the cursor"))
	}
	if p.PageParam == "" {
		for _, k := range []struct {
			key string
			set bool
		}{{"start", p.Start != nil}, {"per_page_param", p.PerPageParam != ""}, {"per_page", p.PerPage != 0}} {
			if k.set {
				errs = append(errs, fmt.Errorf("paging.%s: only applies with paging.page_param", k.key))
			}
		}
	}
	if p.Start != nil && *p.Start < 0 {
		errs = append(errs, errors.New("paging.start: must not be negative"))
	}
	if p.PerPage < 0 {
		errs = append(errs, errors.New("paging.per_page: must be positive"))
	}
	if p.PageParam != "" && p.PageParam == p.PerPageParam {
		errs = append(errs, errors.New("paging.per_page_param: must differ from paging.page_param"))
	}
	return errs
}

// parseListURL checks that s is an absolute http(s) URL.
func parseListURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errors.New("must be an http or https URL")
	}
	if u.Host == "" {
		return nil, errors.New("has no host")
	}
	if u.Fragment != "" {
		return nil, errors.New("must not have a #fragment")
	}
	return u, nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var fields = []config.Field{
	{
		Name: "url", Kind: config.KindString, Required: true,
		Example: "https://api.au1.cliniko.com/v1/patients?sort=updated_at&per_page=100",
		Doc: "The list endpoint, http or https, fetched with GET. Query parameters written here (sorting, " +
			"page size, fixed filters) are kept on every request.",
	},
	{
		Name: "since_param", Kind: config.KindString, Default: DefaultSinceParam, Example: "q[]",
		Doc: "Query parameter that asks the API for items changed since the run's start point (the " +
			"reconciler's watermark minus its lookback). Set it to \"\" for an API without such a filter: " +
			"every run then lists everything, and items older than the start point are dropped here.",
	},
	{
		Name: "since_format", Kind: config.KindString, Default: DefaultSinceFormat, Enum: sinceFormats,
		Doc: "How the start point is written: `rfc3339` (2025-01-31T09:30:00Z, UTC), `unix` (seconds), " +
			"`unix_ms` (milliseconds) or `date` (2025-01-31, UTC). Always rounded down, so nothing is missed.",
	},
	{
		Name: "since_template", Kind: config.KindString, Example: "updated_at:>{{since}}",
		Doc: "The since parameter's value with `{{since}}` where the formatted start point goes, for APIs " +
			"that filter with an expression (Cliniko: since_param `q[]`, since_template `updated_at:>{{since}}`). " +
			"Default: the formatted start point alone.",
	},
	{
		Name: "items", Kind: config.KindString, Example: "body.patients",
		Doc: "Expression over `body` (the decoded JSON response) giving the array of items on a page. " +
			"Default: `body`, for APIs that answer with a bare array.",
	},
	{
		Name: "event", Kind: config.KindObject, Required: true,
		Doc: "Expressions over `item` (one listed item) that give each event's identity. The event id is " +
			"`<id>@<updated_at>`, so an item and every later change of it are distinct events.",
		Fields: []config.Field{
			{Name: "id", Kind: config.KindString, Required: true, Example: "item.id",
				Doc: "The item's id. Required; an empty id fails the run."},
			{Name: "updated_at", Kind: config.KindString, Required: true, Example: "item.updated_at",
				Doc: "When the item last changed: an RFC 3339 string or unix seconds. Required; it is the " +
					"event's occurred_at, part of its id, and moves the reconciler's watermark."},
			{Name: "type", Kind: config.KindString, Default: DefaultEventType, Example: `item.archived_at != nil ? "patient.archived" : "patient.updated"`,
				Doc: "The event type. An expression: write a fixed type as a quoted string, e.g. `'\"patient.updated\"'`."},
			{Name: "key", Kind: config.KindString, Default: "the id", Example: "item.patient_id",
				Doc: "The event key (the business entity routes schedule and cancel by)."},
		},
	},
	{
		Name: "paging", Kind: config.KindObject,
		Doc: "How to reach the next page: `next` (a link or cursor in the response) or `page_param` (page " +
			"numbers). Default: follow the response's `Link: <...>; rel=\"next\"` header (RFC 8288) when " +
			"there is one, else read one page.",
		Fields: []config.Field{
			{Name: "next", Kind: config.KindString, Example: "body.links.next",
				Doc: "Expression over `body`, `headers` (lower-cased name to first value) and `links` (the " +
					"Link header's URLs by rel, e.g. `links.next`) giving the next page's URL, full or relative " +
					"to the current one; empty or null means this was the last page. With cursor_param it is a cursor instead."},
			{Name: "cursor_param", Kind: config.KindString, Example: "cursor",
				Doc: "When set, the value of `next` is a cursor sent in this query parameter of `url` (with the since " +
					"parameter), not a URL."},
			{Name: "page_param", Kind: config.KindString, Example: "page",
				Doc: "Query parameter for the page number. Paging stops at an empty page, or at a page with fewer " +
					"items than per_page when the page size is known."},
			{Name: "start", Kind: config.KindInt, Default: "1",
				Doc: "The first page's number (0 for APIs that count from zero)."},
			{Name: "per_page_param", Kind: config.KindString, Example: "per_page",
				Doc: "Query parameter for the page size, sent with per_page."},
			{Name: "per_page", Kind: config.KindInt, Default: "100 with per_page_param, else unknown",
				Doc: "Items per page. A shorter page is the last one."},
		},
	},
	withDoc(cbhttp.AuthField, "Credentials, as for the `http` connector: exactly one of bearer, basic or header. "+
		"Cliniko: basic with the API key as username and an empty password."),
	{
		Name: "headers", Kind: config.KindStringMap, Example: `{User-Agent: "clinicbridge (it@example.clinic)"}`,
		Doc: "Extra request headers (Cliniko asks for a User-Agent naming a contact). Their values never appear " +
			"in errors or logs.",
	},
	{
		Name: "timeout", Kind: config.KindDuration, Default: "30s",
		Doc: "Limit for fetching one page, connecting and reading the answer included.",
	},
	{
		Name: "max_pages", Kind: config.KindInt, Default: "1000",
		Doc: "Safety bound on pages per run. A listing that has more pages fails the run (the watermark stays), " +
			"rather than stopping silently.",
	},
}

func withDoc(f config.Field, doc string) config.Field {
	f.Doc = doc
	return f
}
