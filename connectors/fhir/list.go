package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

const (
	// pageSize is the _count asked for.
	pageSize = 100
	// maxAttempts is how often one page request is tried on 429, 5xx,
	// transient OperationOutcomes and network failures.
	maxAttempts = 4
	// maxRetryAfter is the longest Retry-After a listing waits out; a longer
	// one ends this run (the next one resumes from the watermark).
	maxRetryAfter = 30 * time.Second
	// firstBackoff is the wait after the first failure without Retry-After.
	firstBackoff = 500 * time.Millisecond
)

// sinceLayout writes _lastUpdated with milliseconds: FHIR compares with the
// value's precision, so `gt` with whole seconds would skip the rest of
// that second.
const sinceLayout = "2006-01-02T15:04:05.000Z07:00"

// List searches each configured resource type (those whose `Type.` prefix
// appears in p.Types, when given) with
// `GET [base]/Type?_lastUpdated=gt<Since>&_sort=_lastUpdated&_count=100`,
// following the Bundle's `next` links as opaque URLs, and yields one page
// per Bundle page. Events are built exactly as notifications build them, so
// ids dedupe. Only current versions are listed: intermediate versions
// between two runs, and deletions, are not.
func (c *Connector) List(ctx context.Context, p connectors.ListParams, yield func(connectors.Page) error) error {
	if len(c.order) == 0 {
		return &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "resources is empty: nothing to list"}
	}
	for _, typ := range c.listTypes(p.Types) {
		q := url.Values{}
		if !p.Since.IsZero() {
			q.Set("_lastUpdated", "gt"+p.Since.UTC().Format(sinceLayout))
		}
		q.Set("_sort", "_lastUpdated")
		q.Set("_count", strconv.Itoa(pageSize))
		u := c.base + "/" + typ + "?" + q.Encode()
		seen := map[string]bool{}
		for u != "" {
			if seen[u] {
				return &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "listing " + typ + ": the server's next link repeats a page"}
			}
			seen[u] = true
			body, err := c.getPage(ctx, typ, u)
			if err != nil {
				return err
			}
			page, next, err := c.searchPage(typ, body)
			if err != nil {
				return &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "listing " + typ + ": " + err.Error()}
			}
			if len(page.Events) > 0 {
				if err := yield(page); err != nil {
					return err
				}
			}
			u = next
		}
	}
	return nil
}

func (c *Connector) listTypes(types []string) []string {
	if len(types) == 0 {
		return c.order
	}
	want := map[string]bool{}
	for _, t := range types {
		rt, _, _ := strings.Cut(t, ".")
		want[rt] = true
	}
	var out []string
	for _, t := range c.order {
		if want[t] {
			out = append(out, t)
		}
	}
	return out
}

// getPage GETs one search page, retrying what may succeed later.
func (c *Connector) getPage(ctx context.Context, typ, u string) ([]byte, error) {
	for attempt := 1; ; attempt++ {
		resp, err := c.call(ctx, http.MethodGet, u, nil, nil)
		if err == nil && resp.status == http.StatusOK {
			return resp.body, nil
		}
		var e *connectors.Error
		if err != nil {
			if !errors.As(err, &e) {
				return nil, err
			}
		} else {
			e = classify(resp, true)
		}
		e.Msg = "listing " + typ + ": " + e.Msg
		retry := e.Class == connectors.Transient || e.Class == connectors.RateLimited || e.Class == connectors.Ambiguous
		if !retry || attempt == maxAttempts || ctx.Err() != nil {
			return nil, e
		}
		wait := e.RetryAfter
		if wait == 0 {
			wait = firstBackoff << (attempt - 1)
		}
		if wait > maxRetryAfter {
			return nil, e
		}
		if err := c.sleep(ctx, wait); err != nil {
			return nil, e
		}
	}
}

type searchBundle struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Link         []struct {
		Relation string `json:"relation"`
		URL      string `json:"url"`
	} `json:"link"`
	Entry []struct {
		Resource json.RawMessage `json:"resource"`
		Search   *struct {
			Mode string `json:"mode"`
		} `json:"search"`
	} `json:"entry"`
}

// searchPage turns a searchset Bundle into a page and its next link.
func (c *Connector) searchPage(typ string, body []byte) (connectors.Page, string, error) {
	var b searchBundle
	if err := json.Unmarshal(body, &b); err != nil || b.ResourceType != "Bundle" {
		return connectors.Page{}, "", errors.New("the search answer is not a Bundle")
	}
	var page connectors.Page
	for _, e := range b.Entry {
		if e.Search != nil && e.Search.Mode != "" && e.Search.Mode != "match" {
			continue // _include'd resources and outcome warnings
		}
		if len(e.Resource) == 0 {
			continue
		}
		ev, err := EventFor(e.Resource)
		if err != nil {
			return connectors.Page{}, "", err
		}
		if !strings.HasPrefix(ev.Type, typ+".") {
			continue
		}
		page.Events = append(page.Events, ev)
		if ev.OccurredAt.After(page.Newest) {
			page.Newest = ev.OccurredAt
		}
	}
	for _, l := range b.Link {
		if l.Relation != "next" || l.URL == "" {
			continue
		}
		next, err := c.sameOrigin(l.URL)
		if err != nil {
			return connectors.Page{}, "", err
		}
		return page, next, nil
	}
	return page, "", nil
}

// sameOrigin resolves a next link against base_url and refuses one on
// another scheme or host: the credential is sent only to base_url's origin.
func (c *Connector) sameOrigin(link string) (string, error) {
	base, err := url.Parse(c.base + "/")
	if err != nil {
		return "", err
	}
	u, err := base.Parse(link)
	if err != nil {
		return "", errors.New("the next link is not a URL")
	}
	if u.Scheme != base.Scheme || u.Host != base.Host {
		return "", errors.New("the next link points outside base_url's origin (check the server's configured public base URL)")
	}
	return u.String(), nil
}
