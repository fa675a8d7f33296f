package fhirfake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Payload content levels (Backport IG backport-payload-content, R5 content).
const (
	ContentEmpty        = "empty"
	ContentIDOnly       = "id-only"
	ContentFullResource = "full-resource"
)

// Notification types.
const (
	TypeHandshake         = "handshake"
	TypeHeartbeat         = "heartbeat"
	TypeEventNotification = "event-notification"
)

// Style is the notification shape a subscription gets.
type Style int

const (
	// StyleClassic is the R4 rest-hook: an empty POST to the endpoint
	// (content empty or id-only), or the resource PUT to
	// [endpoint]/Type/id (full-resource; POSTed to the endpoint itself with
	// ClassicPOST, as Medplum does).
	StyleClassic Style = iota
	// StyleBackportR4 is the Subscriptions R5 Backport IG on R4: a history
	// Bundle whose first entry is a Parameters status.
	StyleBackportR4
	// StyleR4B is a history Bundle whose first entry is a SubscriptionStatus.
	StyleR4B
	// StyleR5 is a subscription-notification Bundle with a SubscriptionStatus.
	StyleR5
)

// Subscription registers a notification channel.
type Subscription struct {
	// Endpoint is the rest-hook URL.
	Endpoint string
	// Criteria is a resource type and optional search criteria the
	// resource must match: "Appointment" or "Appointment?status=booked".
	Criteria string
	// Content is ContentEmpty, ContentIDOnly or ContentFullResource
	// (default full-resource).
	Content string
	Style   Style
	// Header lines sent with every notification ("Authorization: Bearer x").
	Header []string
	// ClassicPOST POSTs full resources to Endpoint instead of PUT
	// [Endpoint]/Type/id (StyleClassic only).
	ClassicPOST bool
	// Topic is the SubscriptionTopic canonical URL in topic-based styles.
	Topic string
}

type subscription struct {
	Subscription
	id     string
	typ    string
	sp     searchParams
	events int // events since subscription start
	skip   int
}

// Notification is one notification the fake sent, or skipped.
type Notification struct {
	Subscription string
	// Type is handshake, heartbeat or event-notification (classic
	// rest-hooks are event-notification too).
	Type string
	// EventNumber is the event's number (0 for handshake and heartbeat).
	EventNumber int
	// EventsSinceStart is the subscription's count when it was sent.
	EventsSinceStart int
	// Focus is Type/id/_history/version of the resource ("" for handshake
	// and heartbeat).
	Focus  string
	Method string
	URL    string
	// Status is the endpoint's answer (0 when it could not be reached or the
	// number was skipped).
	Status int
	Err    string
	// Skipped is set when SkipEventNumber consumed the number: nothing was sent.
	Skipped bool
	Body    []byte
}

type job struct {
	n      Notification
	header http.Header
}

// Subscribe registers sub and returns its id ("sub-1", ...).
func (s *Server) Subscribe(sub Subscription) (string, error) {
	u, err := url.Parse(sub.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "", errors.New("fhirfake: the endpoint must be an http(s) URL")
	}
	if sub.Content == "" {
		sub.Content = ContentFullResource
	}
	switch sub.Content {
	case ContentEmpty, ContentIDOnly, ContentFullResource:
	default:
		return "", fmt.Errorf("fhirfake: unknown content %q", sub.Content)
	}
	if sub.Topic == "" {
		sub.Topic = "http://clinicbridge.example/SubscriptionTopic/" + strings.SplitN(sub.Criteria, "?", 2)[0]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := fmt.Sprintf("sub-%d", len(s.subOrder)+1)
	return id, s.addSubscription(id, sub)
}

// addSubscription registers or replaces sub under id. Called with mu held.
func (s *Server) addSubscription(id string, sub Subscription) error {
	typ, query, _ := strings.Cut(sub.Criteria, "?")
	if !typeRE.MatchString(typ) {
		return errors.New("fhirfake: criteria must start with a resource type")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return errors.New("fhirfake: criteria has an invalid query")
	}
	sp, oo := parseSearch(typ, q)
	if oo != nil {
		return oo
	}
	if old, ok := s.subs[id]; ok {
		old.Subscription, old.typ, old.sp = sub, typ, sp
		return nil
	}
	s.subs[id] = &subscription{Subscription: sub, id: id, typ: typ, sp: sp}
	s.subOrder = append(s.subOrder, id)
	return nil
}

// registerClassic turns a stored R4 Subscription resource with a rest-hook
// channel into a live classic subscription (status "off" removes it).
func (s *Server) registerClassic(id string, res map[string]any) {
	ch, _ := res["channel"].(map[string]any)
	if t, _ := ch["type"].(string); t != "rest-hook" {
		return
	}
	if st, _ := res["status"].(string); st == "off" {
		if sub, ok := s.subs[id]; ok {
			sub.typ = "" // matches nothing
		}
		return
	}
	sub := Subscription{Style: StyleClassic, Content: ContentEmpty}
	sub.Endpoint, _ = ch["endpoint"].(string)
	sub.Criteria, _ = res["criteria"].(string)
	if p, _ := ch["payload"].(string); p != "" {
		sub.Content = ContentFullResource
	}
	if hs, ok := ch["header"].([]any); ok {
		for _, h := range hs {
			if line, ok := h.(string); ok {
				sub.Header = append(sub.Header, line)
			}
		}
	}
	_ = s.addSubscription(id, sub)
}

// SkipEventNumber makes the subscription's next event consume its number
// without sending anything: a lost notification.
func (s *Server) SkipEventNumber(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sub, ok := s.subs[id]; ok {
		sub.skip++
	}
}

// SendHandshake sends a handshake notification (topic-based styles only).
func (s *Server) SendHandshake(id string) (Notification, error) {
	return s.sendStatus(id, TypeHandshake)
}

// SendHeartbeat sends a heartbeat with the running event count (topic-based
// styles only).
func (s *Server) SendHeartbeat(id string) (Notification, error) {
	return s.sendStatus(id, TypeHeartbeat)
}

func (s *Server) sendStatus(id, kind string) (Notification, error) {
	s.mu.Lock()
	sub, ok := s.subs[id]
	if !ok {
		s.mu.Unlock()
		return Notification{}, errors.New("fhirfake: no such subscription")
	}
	if sub.Style == StyleClassic {
		s.mu.Unlock()
		return Notification{}, errors.New("fhirfake: classic rest-hook subscriptions have no handshake or heartbeat")
	}
	j := s.topicJob(sub, kind, 0, nil, nil)
	s.mu.Unlock()
	s.deliver([]job{j})
	sent := s.Notifications()
	return sent[len(sent)-1], nil
}

// Notifications returns every notification sent or skipped so far.
func (s *Server) Notifications() []Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Notification, len(s.sent))
	copy(out, s.sent)
	return out
}

func (s *Server) baseOrDefault() string {
	if s.base == "" {
		return "http://fhirfake.invalid"
	}
	return s.base
}

// matchSubscriptions numbers the write for every subscription whose
// criteria it matches and builds the notifications. Called with mu held.
func (s *Server) matchSubscriptions(rec *record, v *version) []job {
	var jobs []job
	for _, id := range s.subOrder {
		sub := s.subs[id]
		if sub.typ != rec.typ {
			continue
		}
		ok := true
		for _, f := range sub.sp.filters {
			ok = ok && f(rec, v)
		}
		if !ok {
			continue
		}
		sub.events++
		focus := fmt.Sprintf("%s/%s/_history/%d", rec.typ, rec.id, v.vid)
		if sub.skip > 0 {
			sub.skip--
			s.sent = append(s.sent, Notification{Subscription: id, Type: TypeEventNotification, EventNumber: sub.events,
				EventsSinceStart: sub.events, Focus: focus, Skipped: true})
			continue
		}
		if sub.Style == StyleClassic {
			jobs = append(jobs, s.classicJob(sub, rec, v))
		} else {
			jobs = append(jobs, s.topicJob(sub, TypeEventNotification, sub.events, rec, v))
		}
	}
	return jobs
}

func (s *Server) classicJob(sub *subscription, rec *record, v *version) job {
	n := Notification{Subscription: sub.id, Type: TypeEventNotification, EventNumber: sub.events, EventsSinceStart: sub.events,
		Focus: fmt.Sprintf("%s/%s/_history/%d", rec.typ, rec.id, v.vid), Method: http.MethodPost, URL: sub.Endpoint}
	h := headerLines(sub.Header)
	if sub.Content == ContentFullResource {
		n.Body, _ = json.Marshal(v.res)
		h.Set("Content-Type", ContentType)
		if !sub.ClassicPOST {
			n.Method = http.MethodPut
			n.URL = strings.TrimRight(sub.Endpoint, "/") + "/" + rec.typ + "/" + rec.id
		}
	}
	return job{n: n, header: h}
}

// topicJob builds a topic-based notification Bundle. Called with mu held.
func (s *Server) topicJob(sub *subscription, kind string, number int, rec *record, v *version) job {
	base := s.baseOrDefault()
	subRef := base + "/Subscription/" + sub.id
	now := s.now().UTC().Format(instantLayout)
	n := Notification{Subscription: sub.id, Type: kind, EventNumber: number, EventsSinceStart: sub.events, Method: http.MethodPost, URL: sub.Endpoint}
	var focusURL string
	if rec != nil {
		n.Focus = fmt.Sprintf("%s/%s/_history/%d", rec.typ, rec.id, v.vid)
		focusURL = base + "/" + rec.typ + "/" + rec.id
	}
	statusID := newID()
	var status map[string]any
	if sub.Style == StyleBackportR4 {
		params := []any{
			map[string]any{"name": "subscription", "valueReference": map[string]any{"reference": subRef}},
			map[string]any{"name": "topic", "valueCanonical": sub.Topic},
			map[string]any{"name": "status", "valueCode": "active"},
			map[string]any{"name": "type", "valueCode": kind},
			map[string]any{"name": "events-since-subscription-start", "valueString": strconv.Itoa(sub.events)},
		}
		if rec != nil {
			parts := []any{
				map[string]any{"name": "event-number", "valueString": strconv.Itoa(number)},
				map[string]any{"name": "timestamp", "valueInstant": v.lastUpdated.Format(instantLayout)},
			}
			if sub.Content != ContentEmpty {
				parts = append(parts, map[string]any{"name": "focus", "valueReference": map[string]any{"reference": focusURL}})
			}
			params = append(params, map[string]any{"name": "notification-event", "part": parts})
		}
		status = map[string]any{
			"resourceType": "Parameters", "id": statusID,
			"meta":      map[string]any{"profile": []any{"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"}},
			"parameter": params,
		}
	} else {
		status = map[string]any{
			"resourceType": "SubscriptionStatus", "id": statusID,
			"status": "active", "type": kind,
			"eventsSinceSubscriptionStart": strconv.Itoa(sub.events),
			"subscription":                 map[string]any{"reference": subRef},
			"topic":                        sub.Topic,
		}
		if rec != nil {
			ev := map[string]any{"eventNumber": strconv.Itoa(number), "timestamp": v.lastUpdated.Format(instantLayout)}
			if sub.Content != ContentEmpty {
				ev["focus"] = map[string]any{"reference": focusURL}
			}
			status["notificationEvent"] = []any{ev}
		}
	}
	entries := []any{map[string]any{
		"fullUrl":  "urn:uuid:" + statusID,
		"resource": status,
		"request":  map[string]any{"method": "GET", "url": subRef + "/$status"},
		"response": map[string]any{"status": "200"},
	}}
	if rec != nil && sub.Content != ContentEmpty {
		e := map[string]any{"fullUrl": focusURL}
		if sub.Style != StyleR5 {
			// A history Bundle's entries carry request and response (bdl-3, bdl-4).
			e["request"] = requestOf(histRef{rec, v})
			e["response"] = map[string]any{"status": strings.SplitN(responseOf(histRef{rec, v})["status"].(string), " ", 2)[0]}
		}
		if sub.Content == ContentFullResource {
			e["resource"] = v.res
		}
		entries = append(entries, e)
	}
	bundleType := "history"
	if sub.Style == StyleR5 {
		bundleType = "subscription-notification"
	}
	n.Body, _ = json.Marshal(map[string]any{
		"resourceType": "Bundle", "id": newID(), "type": bundleType, "timestamp": now, "entry": entries,
	})
	h := headerLines(sub.Header)
	h.Set("Content-Type", ContentType)
	return job{n: n, header: h}
}

func headerLines(lines []string) http.Header {
	h := http.Header{}
	for _, l := range lines {
		if k, v, ok := strings.Cut(l, ":"); ok {
			h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	return h
}

// deliver sends notifications in order, without the lock held (an id-only
// receiver reads back from this server), and records the answers.
func (s *Server) deliver(jobs []job) {
	for _, j := range jobs {
		n := j.n
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		var body *bytes.Reader
		if n.Body != nil {
			body = bytes.NewReader(n.Body)
		} else {
			body = bytes.NewReader(nil)
		}
		req, err := http.NewRequestWithContext(ctx, n.Method, n.URL, body)
		if err == nil {
			req.Header = j.header.Clone()
			var resp *http.Response
			resp, err = s.notifyClient.Do(req)
			if err == nil {
				n.Status = resp.StatusCode
				_ = resp.Body.Close()
			}
		}
		cancel()
		if err != nil {
			n.Err = err.Error()
		}
		s.mu.Lock()
		s.sent = append(s.sent, n)
		if s.log != nil {
			fmt.Fprintf(s.log, "fhirfake: notify %s %s #%d -> %d\n", n.Subscription, n.Type, n.EventNumber, n.Status)
		}
		s.mu.Unlock()
	}
}
