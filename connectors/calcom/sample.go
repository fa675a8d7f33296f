package calcom

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// sample signs a webhook for `clinicbridge send-test` exactly as Cal.com
// would. Without a payload it is a realistic booking of eventType (default
// BOOKING_CREATED) starting about two days ahead, whose attendee has a phone
// number. A payload with a `triggerEvent` is sent as the whole body; any
// other JSON object becomes the envelope's inner `payload`.
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
		eventType = TriggerBookingCreated
	}
	now := env.Clock()().UTC()
	var body []byte
	if payload != nil {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(payload, &m); err != nil {
			return nil, nil, fmt.Errorf("--payload must be a JSON object: %w", err)
		}
		if _, ok := m["triggerEvent"]; ok {
			body = payload
		} else {
			b, err := json.Marshal(map[string]any{"triggerEvent": eventType, "createdAt": now.Format(time.RFC3339Nano), "payload": json.RawMessage(payload)})
			if err != nil {
				return nil, nil, err
			}
			body = b
		}
	} else {
		b, err := json.Marshal(map[string]any{"triggerEvent": eventType, "createdAt": now.Format("2006-01-02T15:04:05.000Z"), "payload": SamplePayload(eventType, now)})
		if err != nil {
			return nil, nil, err
		}
		body = b
	}
	return Headers(c.WebhookSecret, body), body, nil
}

// SamplePayload is a realistic inner payload of trigger (version 2021-10-20):
// a 30-minute appointment about two days after now, with an attendee who
// gave a phone number, and a fresh uid.
func SamplePayload(trigger string, now time.Time) map[string]any {
	start := now.Add(48 * time.Hour).Truncate(time.Hour)
	end := start.Add(30 * time.Minute)
	uid := randomUID()
	status := "ACCEPTED"
	p := map[string]any{
		"type":            "follow-up-consultation",
		"title":           "Follow-up consultation between Dr Amira Shah and Sam Taylor",
		"description":     "",
		"additionalNotes": "",
		"customInputs":    map[string]any{},
		"startTime":       start.Format(time.RFC3339),
		"endTime":         end.Format(time.RFC3339),
		"organizer": map[string]any{
			"id": 4, "name": "Dr Amira Shah", "email": "amira.shah@northclinic.example", "username": "amira-shah",
			"timeZone": "Europe/London", "language": map[string]any{"locale": "en"}, "timeFormat": "h:mma", "utcOffset": 0,
		},
		"responses": map[string]any{
			"name":                map[string]any{"label": "your_name", "value": "Sam Taylor"},
			"email":               map[string]any{"label": "email_address", "value": "sam.taylor@example.com"},
			"attendeePhoneNumber": map[string]any{"label": "phone_number", "value": "+447700900123"},
			"location":            map[string]any{"label": "location", "value": map[string]any{"optionValue": "", "value": "inPerson"}},
		},
		"userFieldsResponses": map[string]any{},
		"attendees": []any{map[string]any{
			"email": "sam.taylor@example.com", "name": "Sam Taylor", "firstName": "Sam", "lastName": "Taylor",
			"timeZone": "Europe/London", "phoneNumber": "+447700900123", "language": map[string]any{"locale": "en"}, "utcOffset": 0,
		}},
		"location":             "North Clinic, 12 High Street",
		"destinationCalendar":  nil,
		"hideCalendarNotes":    false,
		"requiresConfirmation": false,
		"eventTypeId":          1207,
		"seatsShowAttendees":   true,
		"seatsPerTimeSlot":     nil,
		"uid":                  uid,
		"bookingId":            48213,
		"smsReminderNumber":    "+447700900123",
		"eventTitle":           "Follow-up consultation",
		"eventDescription":     "",
		"price":                0,
		"currency":             "gbp",
		"length":               30,
		"metadata":             map[string]any{},
	}
	switch trigger {
	case TriggerBookingCancelled:
		status = "CANCELLED"
		p["cancellationReason"] = "Feeling better"
		p["cancelledBy"] = "sam.taylor@example.com"
		p["requestReschedule"] = false
	case TriggerBookingRescheduled:
		prev := start.Add(-24 * time.Hour)
		p["rescheduleUid"] = randomUID()
		p["rescheduleId"] = 48190
		p["rescheduleStartTime"] = prev.Format(time.RFC3339)
		p["rescheduleEndTime"] = prev.Add(30 * time.Minute).Format(time.RFC3339)
		p["rescheduledBy"] = "sam.taylor@example.com"
	case TriggerBookingRequested:
		status = "PENDING"
		p["requiresConfirmation"] = true
	case TriggerBookingRejected:
		status = "REJECTED"
	}
	p["status"] = status
	return p
}

const uidAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"

// randomUID is a 22-character uid in the style Cal.com uses.
func randomUID() string {
	b := make([]byte, 22)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(uidAlphabet))))
		b[i] = uidAlphabet[n.Int64()]
	}
	return string(b)
}
