package stripe

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

const (
	// ListWindow is how far back Stripe keeps events listable.
	ListWindow = 30 * 24 * time.Hour
	// pageSize is the largest page /v1/events gives.
	pageSize = 100
	// maxTypes is how many types[] /v1/events accepts; with more the
	// listing asks for every type and filters here.
	maxTypes = 20
	// listTimeout bounds one page request.
	listTimeout = 30 * time.Second
	// maxRateLimitRetries and maxRetryAfter bound how long a listing waits
	// out 429s before it gives up for this run.
	maxRateLimitRetries = 5
	maxRetryAfter       = 30 * time.Second
	// defaultRetryAfter is the wait after a 429 without Retry-After.
	defaultRetryAfter = time.Second
	// maxPage bounds how much of one answer is read.
	maxPage = 32 << 20
)

// List pages through GET /v1/events from p.Since (clamped to the last 30
// days, all Stripe keeps), newest first, yielding one page at a time. Types
// go to Stripe as types[] when there are at most 20, else every type is
// listed and filtered here. Listed events are parsed exactly as webhooks
// are, so ids (the evt_ ids) dedupe against events already received.
func (s *Connector) List(ctx context.Context, p connectors.ListParams, yield func(connectors.Page) error) error {
	if s.apiKey == "" {
		return &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "api_key is not set: this connector cannot list events"}
	}
	since := p.Since
	if floor := s.now().Add(-ListWindow); since.Before(floor) {
		since = floor
	}
	q := url.Values{}
	q.Set("created[gte]", strconv.FormatInt(since.Unix(), 10))
	q.Set("limit", strconv.Itoa(pageSize))
	var want map[string]bool
	if n := len(p.Types); n > 0 && n <= maxTypes {
		for _, t := range p.Types {
			q.Add("types[]", t)
		}
	} else if n > maxTypes {
		want = make(map[string]bool, n)
		for _, t := range p.Types {
			want[t] = true
		}
	}
	for {
		page, err := s.fetch(ctx, q)
		if err != nil {
			return err
		}
		if len(page.Data) == 0 {
			return nil
		}
		out := connectors.Page{Events: make([]connectors.Event, 0, len(page.Data))}
		var last string
		for _, raw := range page.Data {
			ev, err := s.event(raw)
			if err != nil {
				return &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "a listed event is not a Stripe event"}
			}
			last = ev.ID
			if ev.OccurredAt.After(out.Newest) {
				out.Newest = ev.OccurredAt
			}
			if want != nil && !want[ev.Type] {
				continue
			}
			out.Events = append(out.Events, ev)
		}
		if err := yield(out); err != nil {
			return err
		}
		if !page.HasMore {
			return nil
		}
		q.Set("starting_after", last)
	}
}

type listPage struct {
	Object  string            `json:"object"`
	HasMore bool              `json:"has_more"`
	Data    []json.RawMessage `json:"data"`
}

// fetch gets one page, waiting out 429s (Retry-After, bounded, within ctx).
func (s *Connector) fetch(ctx context.Context, q url.Values) (listPage, error) {
	u := s.baseURL + "/v1/events?" + q.Encode()
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return listPage{}, &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "base_url does not make a valid request URL"}
		}
		req.Header.Set("Authorization", "Bearer "+s.apiKey)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "clinicbridge")
		resp, err := s.client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return listPage{}, ctx.Err()
			}
			// The error text names the URL and nothing secret, but keep it
			// to a reason like the sinks do.
			return listPage{}, &connectors.Error{Class: connectors.Transient, Provider: provider, Msg: "listing events failed: " + connectors.TransportReason(err)}
		}
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxPage))
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests && attempt < maxRateLimitRetries {
			wait := connectors.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
			if wait <= 0 {
				wait = defaultRetryAfter
			}
			wait = min(wait, maxRetryAfter)
			if !s.sleep(ctx.Done(), wait) {
				return listPage{}, ctx.Err()
			}
			continue
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return listPage{}, apiError(resp, body)
		}
		if rerr != nil {
			return listPage{}, &connectors.Error{Class: connectors.Transient, Provider: provider, HTTPStatus: resp.StatusCode, Msg: "reading the events page failed"}
		}
		var page listPage
		if err := json.Unmarshal(body, &page); err != nil || page.Object != "list" {
			return listPage{}, &connectors.Error{Class: connectors.Transient, Provider: provider, HTTPStatus: resp.StatusCode, Msg: "the events page is not a Stripe list"}
		}
		return page, nil
	}
}

// apiError classifies a non-2xx answer. Stripe's error JSON is
// {"error":{"type","code","message","param"}}; the message is left out
// because Stripe quotes the (masked) API key and parameter values in it.
func apiError(resp *http.Response, body []byte) *connectors.Error {
	var e struct {
		Error struct {
			Type  string `json:"type"`
			Code  string `json:"code"`
			Param string `json:"param"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	msg := "listing events failed"
	if e.Error.Type != "" {
		msg += ": " + e.Error.Type
	}
	if e.Error.Param != "" {
		msg += " (param " + e.Error.Param + ")"
	}
	return connectors.HTTPError(provider, resp, e.Error.Code, msg)
}

// sleepCtx waits d or until done closes; it reports whether d elapsed.
func sleepCtx(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
