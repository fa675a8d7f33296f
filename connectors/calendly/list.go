package calendly

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// Listing constants.
const (
	// PageSize is the `count` of each page (Calendly's maximum).
	PageSize = 100
	// StartSlack widens the start-time window below Since, so an event that
	// started shortly before it and changed after it is still seen.
	StartSlack = 24 * time.Hour
	// DefaultMaxWait bounds one wait for a rate limit to reset.
	DefaultMaxWait = 2 * time.Minute
	// defaultRateLimitWait is waited when a 429 says nothing about when to retry.
	defaultRateLimitWait = 60 * time.Second
	// maxRateLimitRetries is how often one request is sent again after 429s.
	maxRateLimitRetries = 5
	// maxPageBytes bounds one page's body.
	maxPageBytes = 32 << 20
)

// timeFormat is how Calendly writes times, and how the lister sends them.
const timeFormat = "2006-01-02T15:04:05.000000Z"

type collection struct {
	Collection []json.RawMessage `json:"collection"`
	Pagination struct {
		NextPage      *string `json:"next_page"`
		NextPageToken *string `json:"next_page_token"`
	} `json:"pagination"`
}

// next returns the token of the next page, or "".
func (c *collection) next() string {
	if t := c.Pagination.NextPageToken; t != nil && *t != "" {
		return *t
	}
	if p := c.Pagination.NextPage; p != nil && *p != "" {
		if u, err := url.Parse(*p); err == nil {
			return u.Query().Get("page_token")
		}
	}
	return ""
}

type scheduledEvent struct {
	URI             string `json:"uri"`
	UpdatedAt       string `json:"updated_at"`
	InviteesCounter struct {
		Limit int `json:"limit"`
	} `json:"invitees_counter"`
}

type invitee struct {
	URI        string `json:"uri"`
	Status     string `json:"status"`
	OldInvitee string `json:"old_invitee"`
	CreatedAt  string `json:"created_at"`
	UpdatedAt  string `json:"updated_at"`
}

func (i *invitee) updated() time.Time {
	if t, ok := parseTime(i.UpdatedAt); ok {
		return t
	}
	t, _ := parseTime(i.CreatedAt)
	return t
}

// List reconciles invitees. Calendly has no updated-since filter, so it pages
// through the organization's scheduled events (active and canceled) whose
// start time lies between Since − StartSlack (now − StartSlack when Since is
// zero) and now + lookahead, oldest start first; it fetches the invitees of
// each event updated at or after Since (and of every group event, whose
// updated_at may not move when one invitee books or cancels), and emits each
// invitee updated at or after Since as the event its last webhook was:
// invitee.canceled:<uri> for a canceled invitee, else invitee.created:<uri>
// (Replaces = old_invitee). It yields one page per page of scheduled events;
// Page.Newest is the newest updated_at among what it emitted.
func (k *Connector) List(ctx context.Context, p connectors.ListParams, yield func(connectors.Page) error) error {
	if k.apiKey == "" {
		return &connectors.Error{Class: connectors.Auth, Provider: provider,
			Msg: "api_key is not set: listing scheduled events for reconciliation needs a Calendly access token"}
	}
	if k.organization == "" {
		return &connectors.Error{Class: connectors.Permanent, Provider: provider,
			Msg: "organization is not set: listing scheduled events for reconciliation needs the organization URI"}
	}
	var want map[string]bool
	if len(p.Types) > 0 {
		want = map[string]bool{}
		for _, t := range p.Types {
			want[t] = true
		}
	}
	now := k.now().UTC()
	since := p.Since.UTC()
	from := since.Add(-StartSlack)
	if p.Since.IsZero() {
		from = now.Add(-StartSlack)
	}
	to := now.Add(k.lookahead)
	for token, n := "", 1; ; n++ {
		var events collection
		if err := k.get(ctx, k.eventsURL(from, to, token), fmt.Sprintf("listing scheduled events (page %d)", n), &events); err != nil {
			return err
		}
		page := connectors.Page{}
		for _, raw := range events.Collection {
			var se scheduledEvent
			if json.Unmarshal(raw, &se) != nil || se.URI == "" {
				return &connectors.Error{Class: connectors.Permanent, Provider: provider,
					Msg: fmt.Sprintf("listing scheduled events (page %d): an item is not a scheduled event", n)}
			}
			updated, _ := parseTime(se.UpdatedAt)
			if !p.Since.IsZero() && updated.Before(since) && se.InviteesCounter.Limit <= 1 {
				continue // unchanged since the watermark
			}
			if !updated.Before(since) && updated.After(page.Newest) {
				page.Newest = updated
			}
			evs, newest, err := k.invitees(ctx, se.URI, raw, since, p.Since.IsZero())
			if err != nil {
				return err
			}
			if newest.After(page.Newest) {
				page.Newest = newest
			}
			for _, ev := range evs {
				if want == nil || want[ev.Type] {
					page.Events = append(page.Events, ev)
				}
			}
		}
		if len(page.Events) > 0 || !page.Newest.IsZero() {
			if err := yield(page); err != nil {
				return err
			}
		}
		token = events.next()
		if token == "" {
			return nil
		}
	}
}

// invitees lists one scheduled event's invitees and turns those updated at or
// after since into events.
func (k *Connector) invitees(ctx context.Context, eventURI string, eventRaw json.RawMessage, since time.Time, all bool) ([]connectors.Event, time.Time, error) {
	uuid := path.Base(strings.TrimSuffix(eventURI, "/"))
	var out []connectors.Event
	var newest time.Time
	for token, n := "", 1; ; n++ {
		var list collection
		if err := k.get(ctx, k.inviteesURL(uuid, token), fmt.Sprintf("listing invitees of scheduled event %s (page %d)", uuid, n), &list); err != nil {
			return nil, time.Time{}, err
		}
		for _, raw := range list.Collection {
			var inv invitee
			if json.Unmarshal(raw, &inv) != nil || inv.URI == "" {
				return nil, time.Time{}, &connectors.Error{Class: connectors.Permanent, Provider: provider,
					Msg: fmt.Sprintf("listing invitees of scheduled event %s: an item is not an invitee", uuid)}
			}
			u := inv.updated()
			if !all && u.Before(since) {
				continue
			}
			ev, err := inviteeEvent(&inv, raw, eventRaw)
			if err != nil {
				return nil, time.Time{}, err
			}
			out = append(out, ev)
			if u.After(newest) {
				newest = u
			}
		}
		token = list.next()
		if token == "" {
			return out, newest, nil
		}
	}
}

// inviteeEvent builds the event the invitee's last webhook was, with the
// webhook's payload: the Invitee with its scheduled_event embedded.
func inviteeEvent(inv *invitee, raw, eventRaw json.RawMessage) (connectors.Event, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return connectors.Event{}, err
	}
	m["scheduled_event"] = eventRaw
	body, err := json.Marshal(m)
	if err != nil {
		return connectors.Event{}, err
	}
	ev := connectors.Event{Key: inv.URI, OccurredAt: inv.updated(), Payload: body}
	if inv.Status == "canceled" {
		ev.Type = EventInviteeCanceled
	} else {
		ev.Type = EventInviteeCreated
		if inv.OldInvitee != inv.URI {
			ev.Replaces = inv.OldInvitee
		}
	}
	ev.ID = eventID(ev.Type, inv.URI, "", nil)
	return ev, nil
}

func (k *Connector) url(p string, q url.Values) string {
	u := *k.base
	u.Path = strings.TrimSuffix(u.Path, "/") + p
	u.RawQuery = q.Encode()
	return u.String()
}

func (k *Connector) eventsURL(from, to time.Time, token string) string {
	q := url.Values{}
	q.Set("organization", k.organization)
	q.Set("min_start_time", from.UTC().Format(timeFormat))
	q.Set("max_start_time", to.UTC().Format(timeFormat))
	q.Set("sort", "start_time:asc")
	q.Set("count", strconv.Itoa(PageSize))
	if token != "" {
		q.Set("page_token", token)
	}
	return k.url("/scheduled_events", q)
}

func (k *Connector) inviteesURL(uuid, token string) string {
	q := url.Values{}
	q.Set("count", strconv.Itoa(PageSize))
	q.Set("sort", "created_at:asc")
	if token != "" {
		q.Set("page_token", token)
	}
	return k.url("/scheduled_events/"+url.PathEscape(uuid)+"/invitees", q)
}

type apiError struct {
	Title string `json:"title"`
}

// get fetches u into out, waiting out rate limits.
func (k *Connector) get(ctx context.Context, u, what string, out any) error {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+k.apiKey)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "clinicbridge")
		resp, err := k.client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("calendly: %s: %w", what, redact(err))
		}
		if resp.StatusCode == http.StatusOK {
			err := json.NewDecoder(io.LimitReader(resp.Body, maxPageBytes)).Decode(out)
			resp.Body.Close()
			if err != nil {
				return &connectors.Error{Class: connectors.Transient, Provider: provider, HTTPStatus: resp.StatusCode,
					Msg: what + ": the answer is not Calendly's list JSON"}
			}
			return nil
		}
		title := errorTitle(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusTooManyRequests:
			wait := retryWait(resp.Header, k.now())
			if attempt >= maxRateLimitRetries || wait > k.maxWait {
				return &connectors.Error{Class: connectors.RateLimited, Provider: provider, HTTPStatus: resp.StatusCode,
					RetryAfter: wait, Msg: "rate limited while " + what}
			}
			if err := k.sleep(ctx, wait); err != nil {
				return err
			}
			continue
		case http.StatusUnauthorized:
			return &connectors.Error{Class: connectors.Auth, Provider: provider, HTTPStatus: resp.StatusCode, Code: title,
				Msg: "Calendly rejected api_key: check the connector's api_key (a personal access token)"}
		case http.StatusForbidden:
			return &connectors.Error{Class: connectors.Auth, Provider: provider, HTTPStatus: resp.StatusCode, Code: title,
				Msg: "Calendly refused " + what + ": api_key must belong to an admin or owner of the configured organization"}
		default:
			return connectors.HTTPError(provider, resp, title, what+" failed")
		}
	}
}

// errorTitle reads Calendly's {"title"} (e.g. "Resource Not Found"), which
// names the failure without echoing values; its `message` and `details` may.
func errorTitle(r io.Reader) string {
	var e apiError
	if json.NewDecoder(io.LimitReader(r, 64<<10)).Decode(&e) != nil || len(e.Title) > 64 {
		return ""
	}
	return e.Title
}

// retryWait reads how long a 429 asks to wait: Retry-After, else
// X-RateLimit-Reset (seconds until the window resets; a value that looks like
// unix seconds is read as a time), else a minute.
func retryWait(h http.Header, now time.Time) time.Duration {
	if d := connectors.ParseRetryAfter(h.Get("Retry-After"), now); d > 0 {
		return d
	}
	var resets []string
	for name, vs := range h {
		if strings.HasPrefix(strings.ToLower(name), "x-ratelimit-reset") && len(vs) > 0 {
			resets = append(resets, vs[0])
		}
	}
	sort.Strings(resets)
	var longest time.Duration
	for _, v := range resets {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			continue
		}
		var d time.Duration
		if f > 1e9 {
			d = time.Unix(int64(f), 0).Sub(now)
		} else if f < 1e7 {
			d = time.Duration(f * float64(time.Second))
		}
		longest = max(longest, d)
	}
	if longest > 0 {
		return longest
	}
	return defaultRateLimitWait
}

func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
