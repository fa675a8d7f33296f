package fhir

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// maxFetches bounds the reads one id-only notification may cause; beyond
// it the rest is left to reconciliation.
const maxFetches = 50

// readBudget bounds the time all id-only reads of one notification take.
const readBudget = 20 * time.Second

func unauthorized(reason string) error {
	return fmt.Errorf("%w: %s", connectors.ErrUnauthorized, reason)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{connectors.ErrMalformed}, args...)...)
}

// Verify checks `Authorization: Bearer <webhook_secret>`, the header a
// Subscription's channel.header carries, in constant time.
func (c *Connector) Verify(r *connectors.Request) error {
	if len(c.secret) == 0 {
		return unauthorized("webhook_secret is not configured: this connector accepts no notifications")
	}
	v := r.Header.Get("Authorization")
	if v == "" {
		return unauthorized("missing Authorization header")
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return unauthorized("Authorization is not a Bearer token")
	}
	// Hashing first makes the comparison constant-time in the length too.
	got, want := sha256.Sum256([]byte(strings.TrimSpace(tok))), sha256.Sum256(c.secret)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return unauthorized("bearer token does not match webhook_secret")
	}
	return nil
}

// Parse turns a verified notification into events:
//
//   - an empty POST (classic rest-hook without payload) gives no events and
//     asks for a reconcile run (Inbound.Reconcile), which lists what changed;
//   - a resource, POSTed to the endpoint or PUT to [endpoint]/Type/id
//     (classic rest-hook with payload), gives one event;
//   - a notification Bundle (Backport IG R4 `Parameters`, R4B/R5
//     `SubscriptionStatus` first entry) gives nothing for handshake and
//     heartbeat, and for event-notification one event per focus resource,
//     read from the server for id-only content. Event numbers are tracked
//     per subscription in State; a skipped number sets Inbound.Reconcile.
//
// Resources of types not in `resources` are ignored. Errors wrap
// ErrMalformed and never contain payload values.
func (c *Connector) Parse(r *connectors.Request) (connectors.Inbound, error) {
	method := r.Method
	if method == "" {
		method = http.MethodPost
	}
	if method != http.MethodPost && method != http.MethodPut {
		return connectors.Inbound{}, malformed("a notification is a POST or a PUT")
	}
	body := bytes.TrimSpace(r.Body)
	sub := strings.Trim(r.Subpath, "/")
	if len(body) == 0 {
		if method == http.MethodPut {
			return connectors.Inbound{}, malformed("a PUT notification carries the resource")
		}
		// Classic rest-hook without payload: something matching the
		// criteria changed; the listing finds what.
		return connectors.Inbound{Reconcile: true}, nil
	}
	if body[0] == '<' {
		return connectors.Inbound{}, malformed("XML notifications are not supported: set the Subscription's payload to application/fhir+json")
	}
	if body[0] != '{' {
		return connectors.Inbound{}, malformed("the body is not a JSON object")
	}
	h, err := parseHead(body)
	if err != nil {
		return connectors.Inbound{}, malformed("%v", err)
	}
	if h.ResourceType == "Bundle" && sub == "" {
		if st, b, ok, err := parseNotification(body); err != nil {
			return connectors.Inbound{}, malformed("%v", err)
		} else if ok {
			return c.notification(st, b)
		}
	}
	if sub != "" {
		want, ok := parseRef(sub)
		if !ok || want.Version != "" || strings.Count(sub, "/") != 1 {
			return connectors.Inbound{}, malformed("the notification path is not [endpoint]/Type/id")
		}
		if want.Type != h.ResourceType || want.ID != h.ID {
			return connectors.Inbound{}, malformed("the resource does not match the notification path (%s)", want.Type)
		}
	} else if method == http.MethodPut {
		return connectors.Inbound{}, malformed("a PUT notification goes to [endpoint]/Type/id")
	}
	if !c.resources[h.ResourceType] {
		return connectors.Inbound{}, nil
	}
	ev, err := EventFor(body)
	if err != nil {
		return connectors.Inbound{}, malformed("%v", err)
	}
	return connectors.Inbound{Events: []connectors.Event{ev}}, nil
}

// Notification types.
const (
	Handshake         = "handshake"
	Heartbeat         = "heartbeat"
	EventNotification = "event-notification"
	QueryStatus       = "query-status"
	QueryEvent        = "query-event"
)

// status is a notification's subscription status, from the R4 Backport
// Parameters or an R4B/R5 SubscriptionStatus.
type status struct {
	subscription string
	kind         string
	eventsSince  int64
	hasSince     bool
	events       []notificationEvent
}

type notificationEvent struct {
	number    int64
	hasNumber bool
	focus     string
}

type bundle struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Entry        []struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource"`
		Request  *struct {
			Method string `json:"method"`
			URL    string `json:"url"`
		} `json:"request"`
	} `json:"entry"`
}

// parseNotification reports whether body is a notification Bundle (its
// first entry a Parameters or SubscriptionStatus) and decodes its status.
func parseNotification(body []byte) (status, bundle, bool, error) {
	var b bundle
	if err := json.Unmarshal(body, &b); err != nil {
		return status{}, bundle{}, false, errors.New("the Bundle does not have FHIR's shape")
	}
	if len(b.Entry) == 0 || len(b.Entry[0].Resource) == 0 {
		return status{}, b, false, nil
	}
	first, err := parseHead(b.Entry[0].Resource)
	if err != nil {
		return status{}, b, false, nil
	}
	var st status
	switch first.ResourceType {
	case "Parameters":
		st, err = statusFromParameters(b.Entry[0].Resource)
		if err != nil {
			return status{}, b, false, err
		}
		if st.subscription == "" && st.kind == "" {
			return status{}, b, false, nil // some other Parameters: not a notification
		}
	case "SubscriptionStatus":
		st, err = statusFromSubscriptionStatus(b.Entry[0].Resource)
		if err != nil {
			return status{}, b, false, err
		}
	default:
		return status{}, b, false, nil
	}
	switch {
	case st.subscription == "":
		return status{}, b, false, errors.New("the notification status names no subscription")
	case st.kind == "":
		return status{}, b, false, errors.New("the notification status has no type")
	}
	return st, b, true, nil
}

func statusFromParameters(raw []byte) (status, error) {
	var p struct {
		Parameter []map[string]json.RawMessage `json:"parameter"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return status{}, errors.New("the status Parameters does not have FHIR's shape")
	}
	var st status
	for _, prm := range p.Parameter {
		var name string
		_ = json.Unmarshal(prm["name"], &name)
		switch name {
		case "subscription":
			st.subscription = referenceValue(prm)
		case "type":
			st.kind = stringValue(prm)
		case "events-since-subscription-start":
			n, ok, err := numberValue(prm)
			if err != nil {
				return status{}, fmt.Errorf("events-since-subscription-start: %w", err)
			}
			st.eventsSince, st.hasSince = n, ok
		case "notification-event":
			var parts []map[string]json.RawMessage
			if err := json.Unmarshal(prm["part"], &parts); err != nil && prm["part"] != nil {
				return status{}, errors.New("notification-event does not have FHIR's shape")
			}
			var ev notificationEvent
			for _, part := range parts {
				var pn string
				_ = json.Unmarshal(part["name"], &pn)
				switch pn {
				case "event-number":
					n, ok, err := numberValue(part)
					if err != nil {
						return status{}, fmt.Errorf("event-number: %w", err)
					}
					ev.number, ev.hasNumber = n, ok
				case "focus":
					ev.focus = referenceValue(part)
				}
			}
			st.events = append(st.events, ev)
		}
	}
	return st, nil
}

func statusFromSubscriptionStatus(raw []byte) (status, error) {
	var s struct {
		Type                         string          `json:"type"`
		EventsSinceSubscriptionStart json.RawMessage `json:"eventsSinceSubscriptionStart"`
		Subscription                 struct {
			Reference string `json:"reference"`
		} `json:"subscription"`
		NotificationEvent []struct {
			EventNumber json.RawMessage `json:"eventNumber"`
			Focus       struct {
				Reference string `json:"reference"`
			} `json:"focus"`
		} `json:"notificationEvent"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return status{}, errors.New("the SubscriptionStatus does not have FHIR's shape")
	}
	st := status{subscription: s.Subscription.Reference, kind: s.Type}
	var err error
	if st.eventsSince, st.hasSince, err = number(s.EventsSinceSubscriptionStart); err != nil {
		return status{}, fmt.Errorf("eventsSinceSubscriptionStart: %w", err)
	}
	for _, ne := range s.NotificationEvent {
		ev := notificationEvent{focus: ne.Focus.Reference}
		if ev.number, ev.hasNumber, err = number(ne.EventNumber); err != nil {
			return status{}, fmt.Errorf("eventNumber: %w", err)
		}
		st.events = append(st.events, ev)
	}
	return st, nil
}

func stringValue(p map[string]json.RawMessage) string {
	for _, k := range []string{"valueCode", "valueString", "valueUri", "valueCanonical"} {
		var s string
		if json.Unmarshal(p[k], &s) == nil && s != "" {
			return s
		}
	}
	return ""
}

func referenceValue(p map[string]json.RawMessage) string {
	var r struct {
		Reference string `json:"reference"`
	}
	if json.Unmarshal(p["valueReference"], &r) == nil && r.Reference != "" {
		return r.Reference
	}
	return stringValue(p) // valueUri / valueCanonical in older drafts
}

// numberValue reads an integer parameter written as valueString (STU 1.1,
// for int64 range), valueInteger64, valueInteger, valueUnsignedInt,
// valuePositiveInt or valueDecimal.
func numberValue(p map[string]json.RawMessage) (int64, bool, error) {
	for _, k := range []string{"valueString", "valueInteger64", "valueInteger", "valueUnsignedInt", "valuePositiveInt", "valueDecimal"} {
		if raw, ok := p[k]; ok {
			return number(raw)
		}
	}
	return 0, false, nil
}

// number reads a non-negative integer written as a JSON number or string.
func number(raw json.RawMessage) (int64, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = string(raw)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, false, errors.New("not a non-negative integer")
	}
	return n, true, nil
}

// notification handles a topic-based notification.
func (c *Connector) notification(st status, b bundle) (connectors.Inbound, error) {
	var in connectors.Inbound
	switch st.kind {
	case Handshake:
		if st.hasSince {
			in.Reconcile = c.track(st.subscription, st.eventsSince, st.eventsSince, true)
		}
		return in, nil
	case Heartbeat, QueryStatus:
		// A heartbeat carries the running count: a count beyond the last
		// number seen means notifications were lost.
		if st.hasSince {
			in.Reconcile = c.track(st.subscription, st.eventsSince+1, st.eventsSince, false)
		}
		return in, nil
	case EventNotification, QueryEvent:
	default:
		return connectors.Inbound{}, malformed("unknown notification type")
	}

	// Gap detection over this notification's event numbers.
	var nums []int64
	for _, ev := range st.events {
		if ev.hasNumber {
			nums = append(nums, ev.number)
		}
	}
	if len(nums) == 0 && st.hasSince && st.kind == EventNotification {
		nums = []int64{st.eventsSince} // older servers number only the status
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	if len(nums) > 0 {
		for i := 1; i < len(nums); i++ {
			if nums[i] > nums[i-1]+1 {
				in.Reconcile = true
			}
		}
		if c.track(st.subscription, nums[0], nums[len(nums)-1], false) {
			in.Reconcile = true
		}
	}

	// Focus resources: the notification events name them; full-resource
	// content carries them as entries, id-only only as references.
	focus := map[string]ref{}
	var focusOrder []string
	for _, ev := range st.events {
		if r, ok := parseRef(ev.focus); ok {
			if _, dup := focus[r.key()]; !dup {
				focusOrder = append(focusOrder, r.key())
			}
			focus[r.key()] = r
		}
	}
	seen := map[string]bool{}
	done := map[string]bool{}
	var fetch []ref
	for _, e := range b.Entry[1:] {
		if e.Request != nil && strings.EqualFold(e.Request.Method, http.MethodDelete) {
			if r, ok := parseRef(e.FullURL); ok {
				done[r.key()] = true // deletions are not events
			}
			continue
		}
		if len(e.Resource) == 0 {
			if r, ok := parseRef(e.FullURL); ok && len(focus) == 0 && !done[r.key()] {
				done[r.key()] = true
				fetch = append(fetch, r)
			}
			continue
		}
		h, err := parseHead(e.Resource)
		if err != nil {
			return connectors.Inbound{}, malformed("a notification entry: %v", err)
		}
		key := h.ResourceType + "/" + h.ID
		if len(focus) > 0 && focus[key] == (ref{}) {
			continue // additional context, not what changed
		}
		done[key] = true
		if !c.resources[h.ResourceType] {
			continue
		}
		ev, err := EventFor(e.Resource)
		if err != nil {
			return connectors.Inbound{}, malformed("a notification entry: %v", err)
		}
		if !seen[ev.ID] {
			seen[ev.ID] = true
			in.Events = append(in.Events, ev)
		}
	}
	for _, k := range focusOrder {
		if !done[k] {
			fetch = append(fetch, focus[k])
		}
	}
	if len(focus) == 0 && len(fetch) == 0 && len(in.Events) == 0 {
		// Empty content: the status says something changed, not what.
		in.Reconcile = true
	}
	// Parse has no context: the reads share one budget, so a slow server
	// cannot hold the notification (and the sender) for long.
	ctx, cancel := context.WithTimeout(context.Background(), min(c.timeout, readBudget))
	defer cancel()
	n := 0
	for _, r := range fetch {
		if !c.resources[r.Type] {
			continue
		}
		if n++; n > maxFetches || ctx.Err() != nil {
			in.Reconcile = true
			break
		}
		ev, found, err := c.read(ctx, r)
		switch {
		case err != nil:
			// The server could not be read now: the listing will find it.
			in.Reconcile = true
		case found && !seen[ev.ID]:
			seen[ev.ID] = true
			in.Events = append(in.Events, ev)
		}
	}
	return in, nil
}

// read fetches one resource from base_url (never from the host a
// notification names) for an id-only notification: the version read when
// the reference has one, else the current version. Gone resources (404,
// 410) are not found, not errors.
func (c *Connector) read(ctx context.Context, r ref) (connectors.Event, bool, error) {
	u := c.base + "/" + r.Type + "/" + r.ID
	if r.Version != "" {
		u += "/_history/" + r.Version
	}
	resp, err := c.call(ctx, http.MethodGet, u, nil, nil)
	if err != nil {
		return connectors.Event{}, false, err
	}
	switch {
	case resp.status == http.StatusNotFound || resp.status == http.StatusGone:
		return connectors.Event{}, false, nil
	case resp.status != http.StatusOK:
		return connectors.Event{}, false, classify(resp, true)
	}
	ev, err := EventFor(resp.body)
	if err != nil {
		return connectors.Event{}, false, err
	}
	if ev.Key != r.key() {
		return connectors.Event{}, false, errors.New("the server answered with another resource")
	}
	return ev, true, nil
}

// track records that event numbers low..high of subscription arrived and
// reports a gap: low beyond the highest number seen + 1. reset replaces the
// stored number (a handshake). Without State (validating) nothing is
// tracked; a State failure reports a gap, since reconciling is harmless.
func (c *Connector) track(subscription string, low, high int64, reset bool) bool {
	if c.state == nil {
		return false
	}
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	sum := sha256.Sum256([]byte(subscription))
	key := "events-since/" + hex.EncodeToString(sum[:16])
	var last int64
	b, ok, err := c.state.Get(ctx, key)
	if err != nil {
		return true
	}
	if ok {
		last, _ = strconv.ParseInt(string(b), 10, 64)
	}
	gap := !reset && low > last+1
	next := max(last, high)
	if reset {
		next = high
	}
	if !ok || next != last {
		if err := c.state.Put(ctx, key, []byte(strconv.FormatInt(next, 10))); err != nil {
			return true
		}
	}
	return gap
}
