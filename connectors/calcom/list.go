package calcom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// Listing constants.
const (
	// APIVersion is the cal-api-version the lister speaks; the booking shape
	// below is API v2's BookingOutput_2024_08_13.
	APIVersion = "2024-08-13"
	// PageSize is the `take` of each page.
	PageSize = 100
	// DefaultMaxWait bounds one wait for a rate limit to reset.
	DefaultMaxWait = 2 * time.Minute
	// defaultRateLimitWait is waited when a 429 says nothing about when to retry.
	defaultRateLimitWait = 60 * time.Second
	// maxRateLimitRetries is how often one page is asked again after 429s.
	maxRateLimitRetries = 5
	// maxPageBytes bounds one page's body.
	maxPageBytes = 32 << 20
)

// booking is the part of API v2's BookingOutput_2024_08_13 the lister reads.
type booking struct {
	ID                 int            `json:"id"`
	UID                string         `json:"uid"`
	Title              string         `json:"title"`
	Description        string         `json:"description"`
	Hosts              []host         `json:"hosts"`
	Status             string         `json:"status"`
	CancellationReason string         `json:"cancellationReason"`
	CancelledByEmail   string         `json:"cancelledByEmail"`
	ReschedulingReason string         `json:"reschedulingReason"`
	RescheduledByEmail string         `json:"rescheduledByEmail"`
	RescheduledFromUID string         `json:"rescheduledFromUid"`
	RescheduledToUID   string         `json:"rescheduledToUid"`
	Start              string         `json:"start"`
	End                string         `json:"end"`
	Duration           int            `json:"duration"`
	EventTypeID        int            `json:"eventTypeId"`
	EventType          *eventType     `json:"eventType"`
	MeetingURL         string         `json:"meetingUrl"`
	Location           string         `json:"location"`
	Attendees          []attendee     `json:"attendees"`
	Guests             []string       `json:"guests"`
	Responses          map[string]any `json:"bookingFieldsResponses"`
	Metadata           map[string]any `json:"metadata"`
	CreatedAt          string         `json:"createdAt"`
	UpdatedAt          *string        `json:"updatedAt"`
}

type host struct {
	ID       int    `json:"id"`
	Name     string `json:"name"`
	Email    string `json:"email"`
	Username string `json:"username"`
	TimeZone string `json:"timeZone"`
}

type eventType struct {
	ID   int    `json:"id"`
	Slug string `json:"slug"`
}

type attendee struct {
	Name        string `json:"name"`
	Email       string `json:"email"`
	TimeZone    string `json:"timeZone"`
	Language    string `json:"language"`
	Absent      bool   `json:"absent"`
	PhoneNumber string `json:"phoneNumber"`
}

type listResponse struct {
	Status string            `json:"status"`
	Data   []json.RawMessage `json:"data"`
}

type apiError struct {
	Error struct {
		Code string `json:"code"`
	} `json:"error"`
}

// updated is when the booking last changed: updatedAt, else createdAt.
func (b *booking) updated() time.Time {
	if b.UpdatedAt != nil {
		if t, ok := parseTime(*b.UpdatedAt); ok {
			return t
		}
	}
	t, _ := parseTime(b.CreatedAt)
	return t
}

// List pages through GET /v2/bookings for bookings updated at or after
// p.Since, oldest change first, and yields each page's events. A booking
// becomes the event its last webhook would have been (see bookingEvent).
// Page.Newest is the newest updatedAt on the page. On 429 it waits as Cal.com
// asks (bounded by the max wait) and asks for the page again; a 5xx or any
// other failure returns an error, so the reconciler keeps its watermark.
func (k *Connector) List(ctx context.Context, p connectors.ListParams, yield func(connectors.Page) error) error {
	if k.apiKey == "" {
		return &connectors.Error{Class: connectors.Auth, Provider: provider,
			Msg: "api_key is not set: listing bookings for reconciliation needs a Cal.com API key"}
	}
	var want map[string]bool
	if len(p.Types) > 0 {
		want = map[string]bool{}
		for _, t := range p.Types {
			want[t] = true
		}
	}
	for skip := 0; ; {
		raw, err := k.fetchPage(ctx, p.Since, skip)
		if err != nil {
			return err
		}
		page := connectors.Page{}
		supersededN := 0
		for i, r := range raw {
			var b booking
			if err := json.Unmarshal(r, &b); err != nil || b.UID == "" {
				return &connectors.Error{Class: connectors.Permanent, Provider: provider,
					Msg: fmt.Sprintf("listing bookings: item %d of the page at skip=%d is not a booking", i, skip)}
			}
			if t := b.updated(); t.After(page.Newest) {
				page.Newest = t
			}
			ev, superseded, ok := bookingEvent(&b)
			if !ok || (want != nil && !want[ev.Type]) {
				continue
			}
			if superseded {
				// Before its successor, whose Replaces names it, however
				// the page orders bookings with equal updatedAt.
				page.Events = slices.Insert(page.Events, supersededN, ev)
				supersededN++
				continue
			}
			page.Events = append(page.Events, ev)
		}
		if len(raw) > 0 {
			if err := yield(page); err != nil {
				return err
			}
		}
		if len(raw) < PageSize {
			return nil
		}
		skip += len(raw)
	}
}

// bookingEvent turns a listed booking into the event its last webhook was.
// Cal.com sends no BOOKING_CANCELLED for a booking a reschedule replaced
// (cancelled, with rescheduledToUid): its last webhook was the one that
// created it, and its successor's BOOKING_RESCHEDULED names it in Replaces.
//
//	cancelled, rescheduledToUid, rescheduledFromUid  BOOKING_RESCHEDULED:<uid>, Replaces = rescheduledFromUid (superseded)
//	cancelled, rescheduledToUid                      nothing (superseded; a stale BOOKING_CREATED must not schedule)
//	cancelled                                        BOOKING_CANCELLED:<uid>
//	accepted, rescheduledFromUid                     BOOKING_RESCHEDULED:<uid>, Replaces = rescheduledFromUid
//	accepted                                         BOOKING_CREATED:<uid>
//	pending                                          BOOKING_REQUESTED:<uid>
//	rejected                                         BOOKING_REJECTED:<uid>
//
// A superseded booking that was itself a reschedule is listed so that, when
// its webhook was lost, the chain still reaches the first booking (A moved
// to B moved to C: C replaces B, B replaces A).
func bookingEvent(b *booking) (ev connectors.Event, superseded, ok bool) {
	var trigger, replaces string
	switch strings.ToLower(b.Status) {
	case "cancelled":
		switch {
		case b.RescheduledToUID == "":
			trigger = TriggerBookingCancelled
		case b.RescheduledFromUID != "" && b.RescheduledFromUID != b.UID:
			trigger, replaces, superseded = TriggerBookingRescheduled, b.RescheduledFromUID, true
		default:
			return connectors.Event{}, true, false
		}
	case "accepted":
		trigger = TriggerBookingCreated
		if b.RescheduledFromUID != "" && b.RescheduledFromUID != b.UID {
			trigger, replaces = TriggerBookingRescheduled, b.RescheduledFromUID
		}
	case "pending":
		trigger = TriggerBookingRequested
	case "rejected":
		trigger = TriggerBookingRejected
	default:
		return connectors.Event{}, false, false
	}
	body, err := json.Marshal(webhookPayload(b))
	if err != nil {
		return connectors.Event{}, false, false
	}
	return connectors.Event{
		ID:         eventID(trigger, b.UID, "", nil),
		Type:       trigger,
		Key:        b.UID,
		OccurredAt: b.updated(),
		Replaces:   replaces,
		Payload:    body,
	}, superseded, true
}

// payload is the webhook's inner payload (version 2021-10-20), as far as API
// v2 reports it, so a mapping reads a listed booking as it reads a webhook.
type payload struct {
	Type               string                   `json:"type,omitempty"`
	Title              string                   `json:"title"`
	Description        string                   `json:"description"`
	StartTime          string                   `json:"startTime"`
	EndTime            string                   `json:"endTime"`
	Length             int                      `json:"length,omitempty"`
	Organizer          *person                  `json:"organizer,omitempty"`
	Attendees          []person                 `json:"attendees"`
	Responses          map[string]responseValue `json:"responses,omitempty"`
	Location           string                   `json:"location,omitempty"`
	EventTypeID        int                      `json:"eventTypeId,omitempty"`
	UID                string                   `json:"uid"`
	BookingID          int                      `json:"bookingId,omitempty"`
	Status             string                   `json:"status"`
	Metadata           map[string]any           `json:"metadata"`
	CancellationReason string                   `json:"cancellationReason,omitempty"`
	CancelledBy        string                   `json:"cancelledBy,omitempty"`
	RescheduleUID      string                   `json:"rescheduleUid,omitempty"`
	RescheduledBy      string                   `json:"rescheduledBy,omitempty"`
}

type person struct {
	ID          int       `json:"id,omitempty"`
	Name        string    `json:"name"`
	Email       string    `json:"email"`
	FirstName   string    `json:"firstName,omitempty"`
	LastName    string    `json:"lastName,omitempty"`
	Username    string    `json:"username,omitempty"`
	TimeZone    string    `json:"timeZone"`
	PhoneNumber string    `json:"phoneNumber,omitempty"`
	Language    *language `json:"language,omitempty"`
}

type language struct {
	Locale string `json:"locale"`
}

type responseValue struct {
	Value any `json:"value"`
}

func webhookPayload(b *booking) payload {
	p := payload{
		Title:              b.Title,
		Description:        b.Description,
		StartTime:          normTime(b.Start),
		EndTime:            normTime(b.End),
		Length:             b.Duration,
		Location:           b.Location,
		EventTypeID:        b.EventTypeID,
		UID:                b.UID,
		BookingID:          b.ID,
		Status:             strings.ToUpper(b.Status),
		Metadata:           map[string]any{},
		CancellationReason: b.CancellationReason,
		CancelledBy:        b.CancelledByEmail,
		RescheduleUID:      b.RescheduledFromUID,
		RescheduledBy:      b.RescheduledByEmail,
		Attendees:          []person{},
	}
	if b.EventType != nil {
		p.Type = b.EventType.Slug
		if p.EventTypeID == 0 {
			p.EventTypeID = b.EventType.ID
		}
	}
	if len(b.Hosts) > 0 {
		h := b.Hosts[0]
		p.Organizer = &person{ID: h.ID, Name: h.Name, Email: h.Email, Username: h.Username, TimeZone: h.TimeZone}
	}
	for _, a := range b.Attendees {
		first, last := splitName(a.Name)
		pa := person{Name: a.Name, Email: a.Email, FirstName: first, LastName: last, TimeZone: a.TimeZone, PhoneNumber: a.PhoneNumber}
		if a.Language != "" {
			pa.Language = &language{Locale: a.Language}
		}
		p.Attendees = append(p.Attendees, pa)
	}
	if len(b.Responses) > 0 {
		p.Responses = make(map[string]responseValue, len(b.Responses))
		for k, v := range b.Responses {
			p.Responses[k] = responseValue{Value: v}
		}
	}
	for k, v := range b.Metadata {
		p.Metadata[k] = v
	}
	if _, ok := p.Metadata["videoCallUrl"]; !ok && b.MeetingURL != "" {
		p.Metadata["videoCallUrl"] = b.MeetingURL
	}
	return p
}

// splitName is Cal.com's legacy firstName/lastName split: at the first space.
func splitName(name string) (string, string) {
	name = strings.TrimSpace(name)
	first, last, _ := strings.Cut(name, " ")
	return first, strings.TrimSpace(last)
}

// normTime writes an ISO time as RFC 3339 in UTC without fractional seconds,
// as Cal.com's webhooks do; anything unreadable is passed through.
func normTime(s string) string {
	if t, ok := parseTime(s); ok {
		return t.Format(time.RFC3339)
	}
	return s
}

func (k *Connector) pageURL(since time.Time, skip int) string {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("afterUpdatedAt", since.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	}
	q.Set("sortUpdatedAt", "asc")
	q.Set("take", strconv.Itoa(PageSize))
	q.Set("skip", strconv.Itoa(skip))
	u := *k.base
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v2/bookings"
	u.RawQuery = q.Encode()
	return u.String()
}

// fetchPage gets one page, waiting out rate limits.
func (k *Connector) fetchPage(ctx context.Context, since time.Time, skip int) ([]json.RawMessage, error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.pageURL(since, skip), nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+k.apiKey)
		req.Header.Set("cal-api-version", APIVersion)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "clinicbridge")
		resp, err := k.client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("calcom: listing bookings (skip=%d): %w", skip, redact(err))
		}
		if resp.StatusCode == http.StatusOK {
			var lr listResponse
			err := json.NewDecoder(io.LimitReader(resp.Body, maxPageBytes)).Decode(&lr)
			resp.Body.Close()
			if err != nil {
				return nil, &connectors.Error{Class: connectors.Transient, Provider: provider, HTTPStatus: resp.StatusCode,
					Msg: fmt.Sprintf("listing bookings (skip=%d): the answer is not Cal.com's list JSON", skip)}
			}
			return lr.Data, nil
		}
		code := errorCode(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusTooManyRequests:
			wait := retryWait(resp.Header, k.now())
			if attempt >= maxRateLimitRetries || wait > k.maxWait {
				return nil, &connectors.Error{Class: connectors.RateLimited, Provider: provider, HTTPStatus: resp.StatusCode,
					Code: code, RetryAfter: wait, Msg: fmt.Sprintf("rate limited while listing bookings (skip=%d)", skip)}
			}
			if err := k.sleep(ctx, wait); err != nil {
				return nil, err
			}
			continue
		case http.StatusUnauthorized, http.StatusForbidden:
			return nil, &connectors.Error{Class: connectors.Auth, Provider: provider, HTTPStatus: resp.StatusCode, Code: code,
				Msg: "Cal.com rejected api_key: check the connector's api_key (a cal_live_ key with access to the bookings)"}
		default:
			return nil, connectors.HTTPError(provider, resp, code, fmt.Sprintf("listing bookings (skip=%d) failed", skip))
		}
	}
}

// errorCode reads Cal.com's {"error":{"code"}} (e.g. ThrottlerException),
// which names the failure without echoing request values.
func errorCode(r io.Reader) string {
	var e apiError
	if json.NewDecoder(io.LimitReader(r, 64<<10)).Decode(&e) != nil {
		return ""
	}
	c := e.Error.Code
	if len(c) > 64 || strings.ContainsAny(c, " \n\r\t") {
		return ""
	}
	return c
}

// retryWait reads how long a 429 asks to wait: Retry-After, else Cal.com's
// X-RateLimit-Reset-<Name> (seconds until the window resets; a value that
// looks like unix seconds is read as a time), else a minute.
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
		if f > 1e9 { // unix seconds
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

// redact drops the URL from a transport error: it is ours, but keeping
// errors to the operation and cause keeps them short and free of query values.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
