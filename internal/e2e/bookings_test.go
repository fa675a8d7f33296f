package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors/calcom"
	"github.com/clinicbridge/clinicbridge/connectors/calcom/calcomfake"
	"github.com/clinicbridge/clinicbridge/connectors/calendly"
	"github.com/clinicbridge/clinicbridge/connectors/smtp/smtpfake"
	"github.com/clinicbridge/clinicbridge/connectors/twilio/twiliofake"
	"github.com/clinicbridge/clinicbridge/connectors/webhook"
	"github.com/clinicbridge/clinicbridge/internal/crashtest/agentproc"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// bookingConfig is the booking use case as examples/booking-reminders sets
// it up, with inline mappings whose bodies say which route sent them, short
// retry backoffs, and no quiet hours (the tests run at any time of day).
const bookingConfig = `version: 1
server: {listen: "@LISTEN@", public_url: "@PUBLIC_URL@"}
admin: {listen: "127.0.0.1:0"}
log: {level: debug}
connectors:
  booking: {type: calcom, webhook_secret: "` + calcomSecret + `"}
  sms:
    type: twilio
    account_sid: "` + twilioSID + `"
    auth_token: "` + twilioToken + `"
    from: "` + twilioFrom + `"
    base_url: "@TWILIO@"
    timeout: 5s
routes:
  - name: confirmation-sms
    from: booking
    events: [BOOKING_CREATED]
    when: 'payload.attendees[0].phoneNumber != nil'
    map:
      fields:
        to: {from: 'payload.attendees[0].phoneNumber', required: true}
        body: {template: "Confirmed: {{ payload.title }}, {{ format_time(payload.startTime, 'Europe/London', 'Mon 2 Jan 15:04') }}."}
    to: sms
    retry: {backoff: [200ms]}
  - name: reminder-sms
    from: booking
    events: [BOOKING_CREATED, BOOKING_RESCHEDULED]
    when: 'payload.status != "CANCELLED" && payload.attendees[0].phoneNumber != nil'
    key: payload.uid
    at: 'date(payload.startTime) - duration("24h")'
    cancel_on: [BOOKING_CANCELLED]
    late: skip
    map:
      fields:
        to: {from: 'payload.attendees[0].phoneNumber', required: true}
        body: {template: "Reminder: {{ payload.title }} tomorrow at {{ format_time(payload.startTime, 'Europe/London', '15:04') }}."}
    to: sms
    retry: {backoff: [200ms]}
  - name: cancellation-sms
    from: booking
    events: [BOOKING_CANCELLED]
    when: 'payload.attendees[0].phoneNumber != nil'
    map:
      fields:
        to: {from: 'payload.attendees[0].phoneNumber', required: true}
        body: {template: "Cancelled: {{ payload.title }}. Book again at https://cal.com/{{ payload.organizer.username }}/{{ payload.type }}"}
    to: sms
    retry: {backoff: [200ms]}
`

// emailRoute sends a confirmation email through the smtp connector `mail`.
const emailRoute = `  - name: confirmation-email
    from: booking
    events: [BOOKING_CREATED]
    when: 'payload.attendees[0].email != nil'
    map:
      fields:
        to: {from: 'payload.attendees[0].email', required: true}
        subject: {value: "Your appointment at North Clinic"}
        text: {template: "Dear {{ payload.attendees[0].name }}, see you on {{ format_time(payload.startTime, 'Europe/London', 'Mon 2 Jan at 15:04') }}."}
    to: {connector: mail, action: send_email}
    retry: {max_attempts: 5, backoff: [200ms]}
`

// bookingEnv is an agent on bookingConfig with a Twilio fake behind it and
// a Cal.com fake in front of it.
type bookingEnv struct {
	*agent
	sms *twiliofake.Server
	cal *calcomfake.Server
}

func newBookingEnv(t *testing.T) *bookingEnv {
	t.Helper()
	sms, smsURL := startTwilio(t)
	a := startAgent(t, strings.ReplaceAll(bookingConfig, "@TWILIO@", smsURL))
	return &bookingEnv{agent: a, sms: sms, cal: startCalcom(a)}
}

// book creates a booking at the Cal.com fake, which posts BOOKING_CREATED
// to the agent, and checks the agent took it.
func (e *bookingEnv) book(t *testing.T, who calcomfake.Attendee, start time.Time) calcomfake.Booking {
	t.Helper()
	b, err := e.cal.Create(calcomfake.Booking{Title: "Follow-up consultation", Start: start, Attendees: []calcomfake.Attendee{who}})
	require.NoError(t, err)
	e.requireAccepted(t)
	return b
}

// requireAccepted checks the agent answered the fake's last webhook 2xx.
func (e *bookingEnv) requireAccepted(t *testing.T) {
	t.Helper()
	ds := e.cal.Deliveries()
	require.NotEmpty(t, ds)
	last := ds[len(ds)-1]
	require.Equal(t, http.StatusOK, last.Status, "%s webhook: %s", last.Trigger, last.Err)
}

func createdID(uid string) string     { return calcom.TriggerBookingCreated + ":" + uid }
func cancelledID(uid string) string   { return calcom.TriggerBookingCancelled + ":" + uid }
func rescheduledID(uid string) string { return calcom.TriggerBookingRescheduled + ":" + uid }

// reminderStart is an appointment start whose 24 h reminder is due in
// ahead, less up to a second: Cal.com's startTime has whole seconds. Keep
// ahead above 6 s: River's scheduler makes due jobs available every 5 s,
// looking 5 s ahead, so a job due sooner than that after it was stored can
// wait for the next pass (as a real reminder, due hours later, never does).
func reminderStart(ahead time.Duration) time.Time {
	return time.Now().Add(24*time.Hour + ahead).Truncate(time.Second)
}

// Acceptance 1: BOOKING_CREATED, signed by Cal.com, gives a confirmation SMS
// at once and a reminder at start - 24 h, not before and not much after.
func TestBookingConfirmationAndReminderOnTime(t *testing.T) {
	t.Parallel()
	e := newBookingEnv(t)
	const phone = "+447700900101"
	start := reminderStart(7 * time.Second)
	remindAt := start.Add(-24 * time.Hour)

	sent := time.Now()
	b := e.book(t, bookingPatient("Ada Lovelace", phone), start)

	require.Eventually(t, func() bool { return len(withPrefix(sentTo(e.sms, phone), "Confirmed:")) == 1 },
		2*time.Second, 10*time.Millisecond, "no confirmation SMS within 2 s")
	conf := withPrefix(sentTo(e.sms, phone), "Confirmed:")[0]
	require.Less(t, conf.At.Sub(sent), 2*time.Second)
	require.Equal(t, twilioFrom, conf.Form.Get("From"))
	require.Equal(t, e.hooks+"/hooks/sms", conf.Form.Get("StatusCallback"))

	// The reminder waits for its time.
	d := e.delivery(t, "booking", createdID(b.UID), "reminder-sms")
	require.Equal(t, store.Scheduled, d.State)
	require.True(t, d.RunAt.Equal(remindAt), "reminder scheduled at %s, want %s", d.RunAt, remindAt)
	require.Empty(t, withPrefix(sentTo(e.sms, phone), "Reminder:"))

	require.Eventually(t, func() bool { return len(withPrefix(sentTo(e.sms, phone), "Reminder:")) == 1 },
		time.Until(remindAt)+3*time.Second, 10*time.Millisecond, "no reminder SMS")
	rem := withPrefix(sentTo(e.sms, phone), "Reminder:")[0]
	t.Logf("reminder due %s, sent %s after", remindAt.Format(time.RFC3339), rem.At.Sub(remindAt))
	require.False(t, rem.At.Before(remindAt), "reminder sent at %s, before its time %s", rem.At, remindAt)
	require.LessOrEqual(t, rem.At.Sub(remindAt), 2*time.Second, "reminder sent at %s, long after its time %s", rem.At, remindAt)
	require.Contains(t, rem.Form.Get("Body"), "Follow-up consultation tomorrow at")
	e.waitState(t, "booking", createdID(b.UID), "reminder-sms", store.Succeeded)
	require.Len(t, sentTo(e.sms, phone), 2)
}

// Acceptance 2: a cancellation cancels the pending reminder, which is never
// sent; a reschedule cancels the old reminder and schedules one new one at
// the new time.
func TestCancelAndRescheduleMoveTheReminder(t *testing.T) {
	t.Parallel()
	e := newBookingEnv(t)

	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		const phone = "+447700900201"
		start := reminderStart(7 * time.Second)
		b := e.book(t, bookingPatient("Grace Hopper", phone), start)
		e.waitState(t, "booking", createdID(b.UID), "reminder-sms", store.Scheduled)

		require.NoError(t, e.cal.Cancel(b.UID, "Feeling better"))
		e.requireAccepted(t)
		d := e.waitState(t, "booking", createdID(b.UID), "reminder-sms", store.Cancelled)
		require.Contains(t, d.LastError, "cancelled by BOOKING_CANCELLED")
		// The cancellation itself is told to the patient, with a link to book again.
		e.waitState(t, "booking", cancelledID(b.UID), "cancellation-sms", store.Succeeded)

		// Past the reminder's time: still cancelled, and never sent.
		time.Sleep(time.Until(start.Add(-24*time.Hour)) + time.Second)
		require.Equal(t, store.Cancelled, e.delivery(t, "booking", createdID(b.UID), "reminder-sms").State)
		require.Empty(t, withPrefix(sentTo(e.sms, phone), "Reminder:"))
		require.Len(t, sentTo(e.sms, phone), 2, "a confirmation and a cancellation")
		notice := withPrefix(sentTo(e.sms, phone), "Cancelled:")
		require.Len(t, notice, 1)
		require.Equal(t, "Cancelled: Follow-up consultation. Book again at https://cal.com/amira-shah/follow-up-consultation", notice[0].Form.Get("Body"))
	})

	t.Run("rescheduled", func(t *testing.T) {
		t.Parallel()
		const phone = "+447700900202"
		oldStart := reminderStart(7 * time.Second)
		newStart := oldStart.Add(2 * time.Second)
		b := e.book(t, bookingPatient("Alan Turing", phone), oldStart)
		e.waitState(t, "booking", createdID(b.UID), "reminder-sms", store.Scheduled)

		newUID, err := e.cal.Reschedule(b.UID, newStart)
		require.NoError(t, err)
		e.requireAccepted(t)
		old := e.waitState(t, "booking", createdID(b.UID), "reminder-sms", store.Cancelled)
		require.Contains(t, old.LastError, "replaced by BOOKING_RESCHEDULED")
		moved := e.delivery(t, "booking", rescheduledID(newUID), "reminder-sms")
		require.Equal(t, store.Scheduled, moved.State)
		require.True(t, moved.RunAt.Equal(newStart.Add(-24*time.Hour)), "new reminder at %s, want %s", moved.RunAt, newStart.Add(-24*time.Hour))

		e.waitState(t, "booking", rescheduledID(newUID), "reminder-sms", store.Succeeded)
		// A moment for a wrongly kept old reminder to show up too.
		time.Sleep(300 * time.Millisecond)
		reminders := withPrefix(sentTo(e.sms, phone), "Reminder:")
		require.Len(t, reminders, 1, "want exactly one reminder")
		require.False(t, reminders[0].At.Before(newStart.Add(-24*time.Hour)), "the reminder went at the old time")
		require.Equal(t, store.Cancelled, e.delivery(t, "booking", createdID(b.UID), "reminder-sms").State)
	})
}

// Acceptance 3: Twilio refuses an opted-out number (21610): that delivery
// is dead with the reason, and the next SMS to the number is skipped
// (opted_out) without calling Twilio.
func TestOptedOutNumberIsDeadThenSkipped(t *testing.T) {
	t.Parallel()
	e := newBookingEnv(t)
	const phone = twiliofake.MagicToBlocked // Twilio answers 21610 for it

	first := e.book(t, bookingPatient("Mary Seacole", phone), time.Now().Add(72*time.Hour))
	d := e.waitState(t, "booking", createdID(first.UID), "confirmation-sms", store.Dead)
	require.Contains(t, d.LastError, "21610")
	require.Contains(t, d.LastError, "opted out")
	require.Equal(t, 1, d.Attempts, "21610 is final: not retried")
	require.NotContains(t, d.LastError, phone, "errors never quote the number")

	second := e.book(t, bookingPatient("Mary Seacole", phone), time.Now().Add(96*time.Hour))
	d = e.waitState(t, "booking", createdID(second.UID), "confirmation-sms", store.Skipped)
	require.Equal(t, "opted_out", d.LastError)
	require.Len(t, attemptsTo(e.sms, phone), 1, "Twilio must not be called for an opted-out number")
}

// Acceptance 4: Twilio's signed status callbacks move the receipt to
// delivered; a late `sent` does not move it back; a bad signature is 401.
func TestStatusCallbacksMoveTheReceipt(t *testing.T) {
	t.Parallel()
	e := newBookingEnv(t)
	const phone = "+447700900401"
	b := e.book(t, bookingPatient("Florence Nightingale", phone), time.Now().Add(72*time.Hour))

	d := e.waitState(t, "booking", createdID(b.UID), "confirmation-sms", store.Succeeded)
	require.True(t, strings.HasPrefix(d.ExternalID, "SM"), "the receipt's external id is the message SID: %q", d.ExternalID)
	// The fake posts `sent`, then `delivered`, signed, to server.public_url + /hooks/sms.
	d = e.waitFor(t, "booking", createdID(b.UID), "confirmation-sms", func(d store.Delivery) bool { return d.ReceiptStatus == "delivered" }, "delivered")
	e.sms.Wait()
	var statuses []string
	for _, cb := range e.sms.Callbacks() {
		require.Equal(t, e.hooks+"/hooks/sms", cb.URL)
		require.Equal(t, http.StatusOK, cb.Status, "callback %s", cb.Params.Get("MessageStatus"))
		statuses = append(statuses, cb.Params.Get("MessageStatus"))
	}
	require.Equal(t, []string{"sent", "delivered"}, statuses)

	ctx := context.Background()
	late, err := e.sms.SendStatus(ctx, d.ExternalID, "sent")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, late.Status)
	require.Equal(t, "delivered", e.delivery(t, "booking", createdID(b.UID), "confirmation-sms").ReceiptStatus, "a late sent moved the receipt back")

	// `read` would move it on, but the signature is wrong: 401, no change.
	forged, err := e.sms.SendStatus(ctx, d.ExternalID, "read", twiliofake.CorruptSignature())
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, forged.Status)
	forged, err = e.sms.SendStatus(ctx, d.ExternalID, "read", twiliofake.SignWith("0123456789abcdef0123456789abcdef"))
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, forged.Status)
	require.Equal(t, "delivered", e.delivery(t, "booking", createdID(b.UID), "confirmation-sms").ReceiptStatus)
}

// signatureConfig has one source of each signed kind and no routes.
const signatureConfig = `version: 1
server: {listen: "@LISTEN@", public_url: "@PUBLIC_URL@"}
admin: {listen: "127.0.0.1:0"}
log: {level: debug}
connectors:
  booking: {type: calcom, webhook_secret: "` + calcomSecret + `"}
  calendly: {type: calendly, webhook_secret: "` + sigCalendlyKey + `"}
  sms: {type: twilio, account_sid: "` + twilioSID + `", auth_token: "` + twilioToken + `", from: "` + twilioFrom + `"}
  survey: {type: webhook, webhook_secret: "` + sigSurveySecret + `"}
`

const (
	sigCalendlyKey  = "calendly-e2e-signing-key-0123456789"
	sigSurveySecret = "whsec_ZTJlLXN1cnZleS1zZWNyZXQtZm9yLWNsaW5pY2JyaWRnZQ=="
	sigWrongSecret  = "not-the-secret-0123456789"
	sigWrongWhsec   = "whsec_bm90LXRoZS1zdXJ2ZXktc2VjcmV0LWF0LWFsbA=="
)

// signedSource says how one source type signs a request.
type signedSource struct {
	connector string
	// body is a distinct valid body per n.
	body func(n int) []byte
	// sign signs body with secret at t.
	sign func(t *testing.T, secret string, at time.Time, body []byte) http.Header
	// tamper changes one character of a signed body, keeping it valid.
	tamper        func(body []byte) []byte
	secret, wrong string
	sigHeader     string
	stale         bool // the scheme signs a timestamp
}

// Acceptance 5: through the running agent, each source accepts a validly
// signed request and answers 401 to a tampered body, a wrong secret, a stale
// timestamp (where the scheme has one) and a missing signature header;
// nothing refused is stored.
func TestSignaturesThroughTheAgent(t *testing.T) {
	t.Parallel()
	a := startAgent(t, signatureConfig)
	jsonTamper := func(b []byte) []byte { return []byte(strings.Replace(string(b), "Taylor", "Tayler", 1)) }
	sources := []signedSource{{
		connector: "booking", secret: calcomSecret, wrong: sigWrongSecret, sigHeader: calcom.HeaderSignature,
		body: func(n int) []byte {
			p := calcom.SamplePayload(calcom.TriggerBookingCreated, time.Now())
			p["uid"] = "e2eSignatureUid" + string(rune('A'+n))
			b, err := json.Marshal(map[string]any{"triggerEvent": "BOOKING_CREATED", "createdAt": time.Now().UTC().Format(time.RFC3339), "payload": p})
			if err != nil {
				panic(err)
			}
			return b
		},
		sign: func(_ *testing.T, secret string, _ time.Time, body []byte) http.Header {
			return calcom.Headers(secret, body)
		},
		tamper: jsonTamper,
	}, {
		connector: "calendly", secret: sigCalendlyKey, wrong: sigWrongSecret, sigHeader: calendly.HeaderSignature, stale: true,
		body: func(n int) []byte {
			uri := "https://api.calendly.com/scheduled_events/e2e/invitees/" + string(rune('a'+n))
			return []byte(`{"event":"invitee.created","created_at":"2026-11-28T10:00:00.000000Z","created_by":"https://api.calendly.com/users/AAAA",` +
				`"payload":{"uri":"` + uri + `","name":"Sam Taylor","status":"active","text_reminder_number":"+447700900501",` +
				`"scheduled_event":{"start_time":"2026-12-04T10:00:00.000000Z","name":"Follow-up consultation"}}}`)
		},
		sign: func(_ *testing.T, secret string, at time.Time, body []byte) http.Header {
			return calendly.Headers(secret, at, body)
		},
		tamper: jsonTamper,
	}, {
		connector: "sms", secret: twilioToken, wrong: "0123456789abcdef0123456789abcdef", sigHeader: twiliofake.SignatureHeader,
		body: func(n int) []byte {
			sid := "SM" + strings.Repeat("0", 31) + string(rune('a'+n))
			return []byte(twiliofake.InboundParams(twilioSID, sid, "+447700900502", twilioFrom, "Running late, Taylor").Encode())
		},
		sign: func(t *testing.T, secret string, _ time.Time, body []byte) http.Header {
			params, err := url.ParseQuery(string(body))
			require.NoError(t, err)
			h := http.Header{}
			h.Set("Content-Type", "application/x-www-form-urlencoded")
			h.Set(twiliofake.SignatureHeader, twiliofake.Sign(secret, a.hooks+"/hooks/sms", params))
			return h
		},
		tamper: jsonTamper,
	}, {
		connector: "survey", secret: sigSurveySecret, wrong: sigWrongWhsec, sigHeader: "webhook-signature", stale: true,
		body: func(n int) []byte {
			return []byte(`{"type":"survey.completed","timestamp":"2026-11-28T10:00:00Z","data":{"response_id":"r` + string(rune('a'+n)) + `","patient":"Sam Taylor","score":2}}`)
		},
		sign: func(t *testing.T, secret string, at time.Time, body []byte) http.Header {
			sum := sha256.Sum256(body)
			h, err := webhook.SignStandard(secret, "msg_"+hex.EncodeToString(sum[:8]), at, body)
			require.NoError(t, err)
			h.Set("Content-Type", "application/json")
			return h
		},
		tamper: jsonTamper,
	}}
	for _, s := range sources {
		t.Run(s.connector, func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			valid := s.body(0)
			code, reply := a.post(t, s.connector, s.sign(t, s.secret, now, valid), valid)
			require.True(t, code >= 200 && code < 300, "valid request: %d %s", code, reply)
			require.Equal(t, 1, a.eventCount(t, s.connector))

			body := s.body(1)
			tampered := s.tamper(body)
			require.NotEqual(t, body, tampered)
			cases := map[string]struct {
				header http.Header
				body   []byte
			}{
				"tampered body":  {s.sign(t, s.secret, now, body), tampered},
				"wrong secret":   {s.sign(t, s.wrong, now, body), body},
				"missing header": {withoutHeader(s.sign(t, s.secret, now, body), s.sigHeader), body},
			}
			if s.stale {
				cases["stale timestamp"] = struct {
					header http.Header
					body   []byte
				}{s.sign(t, s.secret, now.Add(-10*time.Minute), body), body}
			}
			for name, c := range cases {
				code, reply := a.post(t, s.connector, c.header, c.body)
				require.Equal(t, http.StatusUnauthorized, code, "%s: %s", name, reply)
			}
			require.Equal(t, 1, a.eventCount(t, s.connector), "a refused request was stored")
			// The same body, signed properly, is still accepted: the refusals were about the signature.
			code, reply = a.post(t, s.connector, s.sign(t, s.secret, time.Now(), body), body)
			require.True(t, code >= 200 && code < 300, "valid request: %d %s", code, reply)
			require.Equal(t, 2, a.eventCount(t, s.connector))
		})
	}
}

func withoutHeader(h http.Header, name string) http.Header {
	h = h.Clone()
	h.Del(name)
	return h
}

// Acceptance 6: an SMTP 451 is retried and delivered; a 550 is dead with the
// server's reply code in the reason. STARTTLS on loopback, the fake's CA.
func TestEmailRetriedOn451DeadOn550(t *testing.T) {
	t.Parallel()
	_, smsURL := startTwilio(t)
	caDir := t.TempDir()
	mail, ca := startSMTP(t, caDir)
	cfg := strings.ReplaceAll(bookingConfig, "@TWILIO@", smsURL)
	cfg = strings.Replace(cfg, "routes:\n", "  mail:\n    type: smtp\n    host: 127.0.0.1\n    port: "+strconv.Itoa(mail.Port())+
		"\n    tls: starttls\n    tls_ca_file: \""+ca+"\"\n    from: \"North Clinic <reminders@north.example>\"\n    timeout: 5s\nroutes:\n", 1)
	cfg += emailRoute
	a := startAgent(t, cfg)
	cal := startCalcom(a)

	// 451 after the message: transient, retried, delivered once.
	mail.Reply(smtpfake.StageData, smtpfake.Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Text: "try again later"})
	ok, err := cal.Create(calcomfake.Booking{Title: "Follow-up consultation", Start: time.Now().Add(72 * time.Hour), Attendees: []calcomfake.Attendee{bookingPatient("Ada Lovelace", "+447700900601")}})
	require.NoError(t, err)
	d := a.waitState(t, "booking", createdID(ok.UID), "confirmation-email", store.Succeeded)
	require.Equal(t, 2, d.Attempts)
	msgs := mail.Messages()
	require.Len(t, msgs, 1)
	require.Equal(t, []string{"ada@patients.example"}, msgs[0].To)
	require.True(t, msgs[0].TLS, "sent over STARTTLS")
	parsed, err := msgs[0].Parsed()
	require.NoError(t, err)
	require.Equal(t, "Your appointment at North Clinic", parsed.Header.Get("Subject"))
	require.Equal(t, d.ExternalID, parsed.Header.Get("Message-Id"))

	// 550 for the recipient: permanent, dead at once, with the code.
	mail.RejectRecipient("grace@patients.example", smtpfake.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "no such user grace@patients.example"})
	bad, err := cal.Create(calcomfake.Booking{Title: "Follow-up consultation", Start: time.Now().Add(72 * time.Hour), Attendees: []calcomfake.Attendee{bookingPatient("Grace Hopper", "+447700900602")}})
	require.NoError(t, err)
	d = a.waitState(t, "booking", createdID(bad.UID), "confirmation-email", store.Dead)
	require.Equal(t, 1, d.Attempts)
	require.Contains(t, d.LastError, "550")
	require.Contains(t, d.LastError, "5.1.1")
	require.NotContains(t, d.LastError, "grace@", "errors never quote the address")
	require.Len(t, mail.Messages(), 1)
}

// Acceptance 7: the same booking delivered twice by Cal.com (its retry, or
// the trigger fired again) is one event and one SMS.
func TestDuplicateBookingIsOneSMS(t *testing.T) {
	t.Parallel()
	e := newBookingEnv(t)
	const phone = "+447700900701"
	b := e.book(t, bookingPatient("Ada Lovelace", phone), time.Now().Add(72*time.Hour))
	e.waitState(t, "booking", createdID(b.UID), "confirmation-sms", store.Succeeded)

	// Cal.com's retry: the very same signed request.
	first := e.cal.Deliveries()[0]
	require.Equal(t, "BOOKING_CREATED", first.Trigger)
	code, reply := e.post(t, "booking", first.Header, first.Body)
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"accepted":0,"duplicates":1}`, reply)
	// The trigger fired again (a new createdAt, so a different body): the
	// derived event id is the same.
	require.NoError(t, e.cal.Notify("BOOKING_CREATED", b.UID))
	e.requireAccepted(t)
	ds := e.cal.Deliveries()
	require.NotEqual(t, string(first.Body), string(ds[len(ds)-1].Body))

	// A later booking proves the queue moved on past the duplicates.
	fence := e.book(t, bookingPatient("Grace Hopper", "+447700900702"), time.Now().Add(72*time.Hour))
	e.waitState(t, "booking", createdID(fence.UID), "confirmation-sms", store.Succeeded)
	require.Len(t, sentTo(e.sms, phone), 1, "one booking, one SMS")
	require.Len(t, e.deliveries(t, "booking", createdID(b.UID)), 2, "one confirmation and one reminder, planned once")
}

// Acceptance 8: `clinicbridge validate` accepts both examples and
// `clinicbridge test` passes their mapping tests, with no environment
// variables beyond PATH (as CI's .ci/run runs them).
func TestExamplesValidateAndPassTheirTests(t *testing.T) {
	t.Parallel()
	bin, err := agentproc.Build(t.Context(), t.TempDir())
	require.NoError(t, err)
	for _, ex := range []string{"booking-reminders", "post-op-survey"} {
		cfg, err := filepath.Abs(filepath.Join("..", "..", "examples", ex, "clinicbridge.yaml"))
		require.NoError(t, err)
		for _, verb := range []string{"validate", "test"} {
			cmd := exec.CommandContext(t.Context(), bin, verb, "-c", cfg)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
			cmd.Dir = t.TempDir()
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "clinicbridge %s -c %s:\n%s", verb, cfg, out)
			if verb == "validate" {
				require.Contains(t, string(out), ": ok (")
				require.NotContains(t, string(out), "warning")
			} else {
				require.Contains(t, string(out), " passed, 0 failed")
				require.NotContains(t, string(out), " 0 passed")
			}
		}
	}
}

// exampleAddrs are what the examples listen on and point at; the tests swap
// each for a fake's or a free address.
var exampleAddrs = []string{
	"listen: 127.0.0.1:8080", "listen: @LISTEN@",
	"public_url: http://127.0.0.1:8080", "public_url: @PUBLIC_URL@",
	"listen: 127.0.0.1:8081", "listen: 127.0.0.1:0",
}

// readSecret reads an example's demo secret as ${file:...} does.
func readSecret(t *testing.T, example, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(examplePath(t, example), "secrets", name))
	require.NoError(t, err)
	return strings.TrimRight(string(b), "\r\n")
}

// The booking-reminders example itself, on the fakes: a booking gets its
// confirmation SMS and email and a scheduled reminder; a reschedule moves
// the reminder; a cancellation cancels it and sends the rebooking link; and
// reconciliation finds nothing the webhooks missed.
func TestBookingRemindersExample(t *testing.T) {
	t.Parallel()
	sms := twiliofake.New(twiliofake.AcceptAnyCredentials())
	smsSrv := httptest.NewServer(sms)
	t.Cleanup(func() { sms.Close(); smsSrv.Close() })
	mail, err := smtpfake.Start(smtpfake.WithTLS(smtpfake.NoTLS))
	require.NoError(t, err)
	t.Cleanup(func() { mail.Close() })
	// The Cal.com fake needs the agent's address for its webhooks, and the
	// agent the fake's for reconciliation: serve it behind a late-bound handler.
	var cal atomic.Pointer[calcomfake.Server]
	calSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { cal.Load().ServeHTTP(w, r) }))
	t.Cleanup(calSrv.Close)

	a := startExample(t, "booking-reminders", append(exampleAddrs,
		"base_url: http://127.0.0.1:9090", "base_url: "+calSrv.URL,
		"base_url: http://127.0.0.1:9091", "base_url: "+smsSrv.URL,
		"port: 1025", "port: "+strconv.Itoa(mail.Port()))...)
	cal.Store(calcomfake.New(calcomfake.AcceptAnyAPIKey(),
		calcomfake.WithWebhook(a.hooks+"/hooks/booking", readSecret(t, "booking-reminders", "calcom-webhook.secret"))))
	e := &bookingEnv{agent: a, sms: sms, cal: cal.Load()}

	// Noon in London the day after tomorrow: the reminder, tomorrow at noon, is outside the quiet hours.
	london, err := time.LoadLocation("Europe/London")
	require.NoError(t, err)
	day := time.Now().In(london).AddDate(0, 0, 2)
	start := time.Date(day.Year(), day.Month(), day.Day(), 12, 0, 0, 0, london)
	const phone = "+447700900123"
	b := e.book(t, calcomfake.Attendee{Name: "Sam Taylor", Email: "sam.taylor@example.com", TimeZone: "Europe/London", PhoneNumber: phone}, start)

	e.waitState(t, "booking", createdID(b.UID), "confirmation-sms", store.Succeeded)
	e.waitState(t, "booking", createdID(b.UID), "confirmation-email", store.Succeeded)
	rem := e.waitState(t, "booking", createdID(b.UID), "reminder-sms", store.Scheduled)
	require.True(t, rem.RunAt.Equal(start.Add(-24*time.Hour)), "reminder at %s", rem.RunAt)
	when := start.Format("Mon 2 Jan at 15:04")
	require.Equal(t, "Hi Sam, your appointment with Dr Amira Shah at North Clinic is confirmed for "+when+".", sentTo(sms, phone)[0].Form.Get("Body"))
	msgs := mail.Messages()
	require.Len(t, msgs, 1)
	require.Equal(t, []string{"sam.taylor@example.com"}, msgs[0].To)
	parsed, err := msgs[0].Parsed()
	require.NoError(t, err)
	require.Equal(t, "Your appointment at North Clinic on "+start.Format("Mon 2 Jan"), parsed.Header.Get("Subject"))

	moved := start.Add(2 * time.Hour)
	newUID, err := e.cal.Reschedule(b.UID, moved)
	require.NoError(t, err)
	e.requireAccepted(t)
	e.waitState(t, "booking", createdID(b.UID), "reminder-sms", store.Cancelled)
	rem = e.waitState(t, "booking", rescheduledID(newUID), "reminder-sms", store.Scheduled)
	require.True(t, rem.RunAt.Equal(moved.Add(-24*time.Hour)), "new reminder at %s", rem.RunAt)
	e.waitState(t, "booking", rescheduledID(newUID), "confirmation-sms", store.Succeeded)
	require.Len(t, withPrefix(sentTo(sms, phone), "Hi Sam, your appointment with Dr Amira Shah at North Clinic is moved to "+moved.Format("Mon 2 Jan at 15:04")), 1)

	require.NoError(t, e.cal.Cancel(newUID, "Feeling better"))
	e.requireAccepted(t)
	e.waitState(t, "booking", rescheduledID(newUID), "reminder-sms", store.Cancelled)
	e.waitState(t, "booking", cancelledID(newUID), "cancellation-sms", store.Succeeded)
	require.Len(t, withPrefix(sentTo(sms, phone), "Your appointment on "+moved.Format("Mon 2 Jan at 15:04")+" is cancelled. Book again: https://cal.com/amira-shah/follow-up-consultation"), 1)
	require.Empty(t, withPrefix(sentTo(sms, phone), "Reminder:"))

	// Reconciliation lists the same bookings and finds every event already known.
	var out struct{ Run store.Run }
	require.NoError(t, a.admin.Do(context.Background(), http.MethodPost, "/api/reconcile/bookings/run", nil, nil, &out))
	require.Empty(t, out.Run.Error)
	require.Positive(t, out.Run.Known)
	require.Zero(t, out.Run.Recovered, "reconciliation found a booking event the webhooks had not delivered: ids differ")
}

// The post-op-survey example itself: a score of 2 sends the patient an SMS
// and the surgeon an email; a score of 4 is skipped on both routes.
func TestPostOpSurveyExample(t *testing.T) {
	t.Parallel()
	sms := twiliofake.New(twiliofake.AcceptAnyCredentials())
	smsSrv := httptest.NewServer(sms)
	t.Cleanup(func() { sms.Close(); smsSrv.Close() })
	mail, err := smtpfake.Start(smtpfake.WithTLS(smtpfake.NoTLS))
	require.NoError(t, err)
	t.Cleanup(func() { mail.Close() })
	a := startExample(t, "post-op-survey", append(exampleAddrs,
		"base_url: http://127.0.0.1:9091", "base_url: "+smsSrv.URL,
		"port: 1025", "port: "+strconv.Itoa(mail.Port()))...)
	secret := readSecret(t, "post-op-survey", "survey-webhook.secret")
	send := func(id, fixture string) {
		body, err := os.ReadFile(filepath.Join(examplePath(t, "post-op-survey"), "fixtures", fixture))
		require.NoError(t, err)
		h, err := webhook.SignStandard(secret, id, time.Now(), body)
		require.NoError(t, err)
		h.Set("Content-Type", "application/json")
		code, reply := a.post(t, "survey", h, body)
		require.Equal(t, http.StatusOK, code, reply)
	}
	send("msg_low_score", "low-score.json")
	send("msg_high_score", "high-score.json")

	d := a.waitState(t, "survey", "msg_low_score", "wound-photo-sms", store.Succeeded)
	require.Equal(t, "pt_1042", d.Key)
	a.waitState(t, "survey", "msg_low_score", "surgeon-email", store.Succeeded)
	for _, route := range []string{"wound-photo-sms", "surgeon-email"} {
		d := a.waitState(t, "survey", "msg_high_score", route, store.Skipped)
		require.Equal(t, "when: false", d.LastError)
	}
	texts := sentTo(sms, "+447700900123")
	require.Len(t, texts, 1)
	require.Contains(t, texts[0].Form.Get("Body"), "Please reply to this message with a clear photo of your wound")
	require.Empty(t, attemptsTo(sms, "+447700900456"), "a score of 4 sends nothing")
	msgs := mail.Messages()
	require.Len(t, msgs, 1)
	require.Equal(t, []string{"priya.patel@northclinic.example"}, msgs[0].To)
	parsed, err := msgs[0].Parsed()
	require.NoError(t, err)
	require.Equal(t, "Post-op survey needs review: score 2/5, patient pt_1042", parsed.Header.Get("Subject"))
}
