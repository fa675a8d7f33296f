package calendly

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// sample signs a webhook for `clinicbridge send-test` exactly as Calendly
// would. Without a payload it is a realistic Invitee of eventType (default
// invitee.created) whose appointment starts about two days ahead and who gave
// a phone number for text reminders. A payload with an `event` is sent as
// the whole body; any other JSON object becomes the inner `payload`.
func sample(node *yaml.Node, env connectors.Env, eventType string, payload []byte) (http.Header, []byte, error) {
	var c Config
	if node != nil {
		if err := node.Decode(&c); err != nil {
			return nil, nil, err
		}
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	if eventType == "" {
		eventType = EventInviteeCreated
	}
	now := env.Clock()().UTC()
	var body []byte
	var err error
	switch {
	case payload == nil:
		body, err = json.Marshal(map[string]any{
			"event": eventType, "created_at": now.Format(timeFormat),
			"created_by": "https://api.calendly.com/users/BDHGHFGKK4ZCLW2B", "payload": SamplePayload(eventType, now),
		})
	default:
		var m map[string]json.RawMessage
		if err := json.Unmarshal(payload, &m); err != nil {
			return nil, nil, fmt.Errorf("--payload must be a JSON object: %w", err)
		}
		if _, ok := m["event"]; ok && m["payload"] != nil {
			body = payload
		} else {
			body, err = json.Marshal(map[string]any{
				"event": eventType, "created_at": now.Format(timeFormat),
				"created_by": "https://api.calendly.com/users/BDHGHFGKK4ZCLW2B", "payload": json.RawMessage(payload),
			})
		}
	}
	if err != nil {
		return nil, nil, err
	}
	return Headers(c.WebhookSecret, now, body), body, nil
}

// SamplePayload is a realistic Invitee (with its scheduled_event) for event:
// a 30-minute appointment about two days after now, booked by someone who
// gave a phone number for text reminders, with fresh URIs.
func SamplePayload(event string, now time.Time) map[string]any {
	start := now.Add(48 * time.Hour).Truncate(time.Hour)
	eventURI := "https://api.calendly.com/scheduled_events/" + randomUUID()
	inviteeURI := eventURI + "/invitees/" + randomUUID()
	status, eventStatus := "active", "active"
	var cancellation any
	if event == EventInviteeCanceled {
		status, eventStatus = "canceled", "canceled"
		cancellation = map[string]any{"canceled_by": "Sam Taylor", "reason": "Feeling better", "canceler_type": "invitee", "created_at": now.Format(timeFormat)}
	}
	return map[string]any{
		"uri":                     inviteeURI,
		"email":                   "sam.taylor@example.com",
		"name":                    "Sam Taylor",
		"first_name":              "Sam",
		"last_name":               "Taylor",
		"status":                  status,
		"timezone":                "Europe/London",
		"event":                   eventURI,
		"created_at":              now.Format(timeFormat),
		"updated_at":              now.Format(timeFormat),
		"cancel_url":              "https://calendly.com/cancellations/" + randomUUID(),
		"reschedule_url":          "https://calendly.com/reschedulings/" + randomUUID(),
		"rescheduled":             false,
		"old_invitee":             nil,
		"new_invitee":             nil,
		"text_reminder_number":    "+447700900123",
		"questions_and_answers":   []any{map[string]any{"question": "Reason for your visit", "answer": "Follow-up on knee physio", "position": 0}},
		"tracking":                map[string]any{"utm_campaign": nil, "utm_source": nil, "utm_medium": nil, "utm_content": nil, "utm_term": nil, "salesforce_uuid": nil},
		"cancellation":            cancellation,
		"payment":                 nil,
		"no_show":                 nil,
		"reconfirmation":          nil,
		"routing_form_submission": nil,
		"scheduling_method":       nil,
		"invitee_scheduled_by":    nil,
		"scheduled_event": map[string]any{
			"uri":              eventURI,
			"name":             "Follow-up consultation",
			"status":           eventStatus,
			"start_time":       start.Format(timeFormat),
			"end_time":         start.Add(30 * time.Minute).Format(timeFormat),
			"event_type":       "https://api.calendly.com/event_types/GBGBDCAADAEDCRZ2",
			"location":         map[string]any{"type": "physical", "location": "North Clinic, 12 High Street"},
			"invitees_counter": map[string]any{"total": 1, "active": 1, "limit": 1},
			"created_at":       now.Format(timeFormat),
			"updated_at":       now.Format(timeFormat),
			"event_memberships": []any{map[string]any{
				"user": "https://api.calendly.com/users/BDHGHFGKK4ZCLW2B", "user_email": "amira.shah@northclinic.example", "user_name": "Dr Amira Shah",
			}},
			"event_guests": []any{},
		},
	}
}

// randomUUID is a random version 4 UUID, as Calendly's URIs carry.
func randomUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
