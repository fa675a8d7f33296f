package xero_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/xero"
	"github.com/clinicbridge/clinicbridge/connectors/xero/xerofake"
)

func TestContract(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inv := b.fake.SeedInvoice(tenant, "Jane Example", 1000000)
	connectortest.RunSink(t, connectortest.SinkHarness{
		Sink:     b.sink(t),
		Delivery: payment(inv, 10, "evt_1:stripe-to-xero"),
		Script: func(status int, ra time.Duration) {
			r := xerofake.Response{Status: status, Header: http.Header{},
				Body: []byte(`{"ErrorNumber":10,"Type":"ValidationException","Message":"A validation exception occurred","Elements":[{"Reference":"Stripe pi_3QclinicTest0001 Jane Example","ValidationErrors":[{"Message":"Reference Stripe pi_3QclinicTest0001 Jane Example is not allowed"}]}]}`)}
			if ra > 0 {
				r.Header.Set("Retry-After", strconv.Itoa(int(ra/time.Second)))
				r.Header.Set("X-Rate-Limit-Problem", "minute")
			}
			if status == http.StatusUnauthorized {
				// A 401 that survives the refresh and retry.
				b.fake.Script(r, r)
				return
			}
			b.fake.Script(r)
		},
		Effects:    func() int { return b.fake.Effects(tenant) },
		ExternalID: true,
		Secrets:    []string{clientSecret, b.seed},
	})
}

// TestPaymentAgainstInvoice: an invoice, then a payment against it, each
// posted once, with Xero's headers and wrapping.
func TestPaymentAgainstInvoice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.sink(t)
	ctx := ctx30(t)
	rc, err := s.Do(ctx, connectors.Delivery{Action: "create_invoice", IdempotencyKey: "evt_1:invoice", Document: map[string]any{
		"Type": "ACCREC", "Contact": map[string]any{"Name": "Jane Example"}, "Status": "AUTHORISED", "Date": "2026-11-02",
		"LineItems": []any{map[string]any{"Description": "Consultation", "Quantity": 1, "UnitAmount": 150.0, "AccountCode": "200"}},
	}})
	require.NoError(t, err)
	require.Equal(t, "AUTHORISED", rc.Status)
	invoiceID := rc.ExternalID
	require.NotEmpty(t, invoiceID)

	rc, err = s.Do(ctx, payment(invoiceID, 150, "evt_2:payment"))
	require.NoError(t, err)
	require.Equal(t, "AUTHORISED", rc.Status)

	pays := b.fake.Payments(tenant)
	require.Len(t, pays, 1)
	require.Equal(t, rc.ExternalID, pays[0]["PaymentID"])
	require.Equal(t, 150.0, pays[0]["Amount"])
	require.Equal(t, "PAID", b.fake.Invoices(tenant)[0]["Status"])

	reqs := b.fake.Requests()
	require.Len(t, reqs, 2)
	r := reqs[1]
	require.Equal(t, http.MethodPut, r.Method)
	require.Equal(t, "/api.xro/2.0/Payments", r.Path)
	require.Equal(t, tenant, r.Header.Get("xero-tenant-id"))
	require.Equal(t, "evt_2:payment", r.Header.Get("Idempotency-Key"))
	require.Equal(t, "application/json", r.Header.Get("Accept"))
	require.True(t, strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "))
	var body map[string][]map[string]any
	require.NoError(t, json.Unmarshal(r.Body, &body))
	require.Len(t, body["Payments"], 1)
	require.Equal(t, map[string]any{"InvoiceID": invoiceID}, body["Payments"][0]["Invoice"])
}

// TestSameDeliveryThreeTimes: retries and replays of one delivery (same
// IdempotencyKey) make one payment, even across a restart.
func TestSameDeliveryThreeTimes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inv := b.fake.SeedInvoice(tenant, "Jane Example", 500)
	d := payment(inv, 100, "evt_1QclinicTest0001:stripe-to-xero")
	s := b.sink(t)
	var ids []string
	for i := 0; i < 3; i++ {
		rc, err := s.Do(ctx30(t), d)
		require.NoError(t, err)
		ids = append(ids, rc.ExternalID)
	}
	rc, err := b.sink(t).Do(ctx30(t), d) // a new process
	require.NoError(t, err)
	ids = append(ids, rc.ExternalID)
	require.Len(t, b.fake.Payments(tenant), 1)
	for _, id := range ids {
		require.Equal(t, ids[0], id, "every attempt answers with the first payment")
	}
	replays := 0
	for _, r := range b.fake.Requests() {
		if r.Replay {
			replays++
		}
	}
	require.Equal(t, 3, replays)
	require.Equal(t, 400.0, b.fake.Invoices(tenant)[0]["AmountDue"])

	// The same key with another document is refused, not applied.
	d.Document["Amount"] = 50.0
	_, err = s.Do(ctx30(t), d)
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Len(t, b.fake.Payments(tenant), 1)
}

func TestLongIdempotencyKeyIsHashed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inv := b.fake.SeedInvoice(tenant, "Jane Example", 500)
	key := strings.Repeat("k", 200)
	for i := 0; i < 2; i++ {
		_, err := b.sink(t).Do(ctx30(t), payment(inv, 10, key))
		require.NoError(t, err)
	}
	require.Len(t, b.fake.Payments(tenant), 1)
	sent := b.fake.Requests()[0].Header.Get("Idempotency-Key")
	require.LessOrEqual(t, len(sent), 128)
	require.Equal(t, sent, b.fake.Requests()[1].Header.Get("Idempotency-Key"))
}

// TestTokenRotationSurvivesRestart: the rotated refresh token is stored,
// and a new sink on the same state uses it, not the spent seed in config.
func TestTokenRotationSurvivesRestart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inv := b.fake.SeedInvoice(tenant, "Jane Example", 500)
	_, err := b.sink(t).Do(ctx30(t), payment(inv, 10, "k1"))
	require.NoError(t, err)
	first := b.storedRefreshToken(t)
	require.NotEqual(t, b.seed, first, "the rotated token is stored")
	require.Equal(t, 1, b.fake.Refreshes())

	b.clock.Advance(31 * time.Minute) // the access token expired
	restarted := b.sink(t)            // config still holds the spent seed
	_, err = restarted.Do(ctx30(t), payment(inv, 10, "k2"))
	require.NoError(t, err, "the stored token wins over refresh_token in config")
	require.Equal(t, 2, b.fake.Refreshes())
	for _, r := range b.fake.Requests() {
		require.NotEqual(t, http.StatusUnauthorized, r.Status, "the expiry was known: refreshed before the call")
	}
	second := b.storedRefreshToken(t)
	require.NotEqual(t, first, second)

	// A token that has not expired yet is reused, not refreshed.
	_, err = restarted.Do(ctx30(t), payment(inv, 10, "k3"))
	require.NoError(t, err)
	require.Equal(t, 2, b.fake.Refreshes())
}

// TestRotatedTokenSavedBeforeUse: when the rotated token cannot be saved,
// its access token is not used; it is saved first on the next call.
func TestRotatedTokenSavedBeforeUse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inv := b.fake.SeedInvoice(tenant, "Jane Example", 500)
	s := b.sink(t)
	b.state.setFailPut(true)
	_, err := s.Do(ctx30(t), payment(inv, 10, "k1"))
	require.Error(t, err)
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	require.Empty(t, b.fake.Requests(), "no API call with an unsaved token")
	require.Equal(t, 1, b.fake.Refreshes())

	b.state.setFailPut(false)
	_, err = s.Do(ctx30(t), payment(inv, 10, "k1"))
	require.NoError(t, err)
	require.Equal(t, 1, b.fake.Refreshes(), "the rotated token was kept, not refreshed again")
	require.NotEqual(t, b.seed, b.storedRefreshToken(t))
}

func TestUnauthorizedRefreshesOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inv := b.fake.SeedInvoice(tenant, "Jane Example", 500)
	s := b.sink(t)
	_, err := s.Do(ctx30(t), payment(inv, 10, "k1"))
	require.NoError(t, err)
	b.fake.Script(xerofake.Response{Status: http.StatusUnauthorized, Body: []byte(`{"Title":"Unauthorized","Status":401,"Detail":"TokenExpired"}`)})
	_, err = s.Do(ctx30(t), payment(inv, 10, "k2"))
	require.NoError(t, err, "one 401 is refreshed away")
	require.Equal(t, 2, b.fake.Refreshes())
}

// TestInvalidGrantPausesUntilConnect: a revoked grant pauses deliveries
// (no attempts burned); `xero connect` stores a fresh token and the same
// sink resumes.
func TestInvalidGrantPausesUntilConnect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inv := b.fake.SeedInvoice(tenant, "Jane Example", 500)
	s := b.sink(t)
	_, err := s.Do(ctx30(t), payment(inv, 10, "k1"))
	require.NoError(t, err)

	b.fake.Revoke()
	_, err = s.Do(ctx30(t), payment(inv, 10, "k2"))
	var ce *connectors.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, connectors.Paused, ce.Class)
	require.Equal(t, "invalid_grant", ce.Code)
	require.Equal(t, "Xero refused the refresh token: reconnect Xero with `clinicbridge xero connect -c CONFIG --connector NAME`", ce.Msg)
	connectortest.NoLeak(t, err, clientSecret, b.seed, b.storedRefreshToken(t))
	before := len(b.fake.Requests())
	_, err = s.Do(ctx30(t), payment(inv, 10, "k2"))
	require.Equal(t, connectors.Paused, connectors.ClassOf(err), "still paused, without calling Xero")
	require.Len(t, b.fake.Requests(), before)

	connect(t, b)
	_, err = s.Do(ctx30(t), payment(inv, 10, "k2"))
	require.NoError(t, err, "the connector resumes with the new grant")
	require.Len(t, b.fake.Payments(tenant), 2)
}

// connect runs Connect against the fake, plays the browser, and waits.
func connect(t *testing.T, b *bundle) string {
	t.Helper()
	out := &lines{ch: make(chan string, 64)}
	done := make(chan error, 1)
	ctx := ctx30(t)
	go func() { done <- xero.Connect(ctx, b.node(t), b.state, "127.0.0.1:0", out) }()
	authURL := out.find(t, b.url+xerofake.AuthorizePath, "")
	resp, err := testClient.Get(authURL) // the fake consents and redirects to the callback
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, <-done)
	return out.all()
}

// lines collects what Connect prints.
type lines struct {
	ch  chan string
	buf strings.Builder
}

func (l *lines) Write(p []byte) (int, error) {
	l.ch <- string(p)
	return len(p), nil
}

// find returns the first printed word that starts with prefix and ends with suffix.
func (l *lines) find(t *testing.T, prefix, suffix string) string {
	t.Helper()
	for {
		for _, f := range strings.Fields(l.buf.String()) {
			if strings.HasPrefix(f, prefix) && strings.HasSuffix(f, suffix) {
				return f
			}
		}
		select {
		case s := <-l.ch:
			l.buf.WriteString(s)
		case <-time.After(20 * time.Second):
			t.Fatalf("no %s in %q", prefix, l.buf.String())
		}
	}
}

func (l *lines) all() string {
	for {
		select {
		case s := <-l.ch:
			l.buf.WriteString(s)
		default:
			return l.buf.String()
		}
	}
}

func TestConnect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	printed := connect(t, b)
	require.Contains(t, printed, tenant)
	require.Contains(t, printed, "Northside Clinic Ltd")
	require.NotContains(t, printed, "warning")
	require.NotEmpty(t, b.storedRefreshToken(t))

	// The stored token works with no refresh_token in config.
	b.seed = ""
	inv := b.fake.SeedInvoice(tenant, "Jane Example", 500)
	_, err := b.sink(t).Do(ctx30(t), payment(inv, 10, "k1"))
	require.NoError(t, err)
}

func TestConnectRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	err := xero.Connect(context.Background(), b.node(t), b.state, "0.0.0.0:0", &lines{ch: make(chan string, 8)})
	require.ErrorContains(t, err, "not loopback")

	// A redirect with the wrong state is refused and the flow keeps waiting;
	// a denied consent ends it with nothing stored.
	b.fake.Deny(true)
	out := &lines{ch: make(chan string, 64)}
	done := make(chan error, 1)
	ctx := ctx30(t)
	go func() { done <- xero.Connect(ctx, b.node(t), b.state, "127.0.0.1:0", out) }()
	authURL := out.find(t, b.url+xerofake.AuthorizePath, "")
	redirect := out.find(t, "http://127.0.0.1:", "/callback")
	resp, err := testClient.Get(redirect + "?state=forged&code=abc")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	resp, err = testClient.Get(authURL)
	require.NoError(t, err)
	resp.Body.Close()
	require.ErrorContains(t, <-done, "access_denied")
	_, ok, _ := b.state.Get(context.Background(), xero.TokenStateKey)
	require.False(t, ok)
}

func TestNoTokenIsPaused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.seed = ""
	_, err := b.sink(t).Do(ctx30(t), payment("x", 10, "k"))
	require.Equal(t, connectors.Paused, connectors.ClassOf(err))
	require.Empty(t, b.fake.Requests())
}

func TestBuildWithoutState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s, err := xero.Type().Build(b.node(t), connectors.Env{Name: "books"}) // validate: no state, no network
	require.NoError(t, err)
	_, err = s.(connectors.Sink).Do(ctx30(t), payment("x", 10, "k"))
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Zero(t, b.fake.Refreshes())
}

func TestRateLimited429(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inv := b.fake.SeedInvoice(tenant, "Jane Example", 500)
	s := b.sink(t)
	b.fake.Script(xerofake.Response{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"17"}, "X-Rate-Limit-Problem": {"minute"}}})
	_, err := s.Do(ctx30(t), payment(inv, 10, "k1"))
	require.Equal(t, connectors.RateLimited, connectors.ClassOf(err))
	require.Equal(t, 17*time.Second, connectors.RetryAfterOf(err))
	require.Contains(t, err.Error(), "X-Rate-Limit-Problem: minute")

	// The fake's own limit (3 a minute here) answers the 4th call.
	b2 := setup(t, xerofake.WithRateLimit(3, time.Minute))
	inv = b2.fake.SeedInvoice(tenant, "Jane Example", 500)
	s2 := b2.sinkWith(t, xero.WithRateLimit(100, time.Minute, 100))
	for i := 0; i < 3; i++ {
		_, err := s2.Do(ctx30(t), payment(inv, 1, "a"+strconv.Itoa(i)))
		require.NoError(t, err)
	}
	_, err = s2.Do(ctx30(t), payment(inv, 1, "a3"))
	require.Equal(t, connectors.RateLimited, connectors.ClassOf(err))
	require.Equal(t, time.Minute, connectors.RetryAfterOf(err))
}

// TestBurstKeepsTheMinuteLimit: 200 concurrent deliveries through one sink,
// on a virtual clock: Xero never counts more than 60 calls in a rolling
// minute and never answers 429.
func TestBurstKeepsTheMinuteLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.sinkWith(t, xero.WithSleepUntil(b.clock.SleepUntil))
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		go func() {
			_, err := s.Do(context.Background(), connectors.Delivery{
				Action: "upsert_contact", IdempotencyKey: "c" + strconv.Itoa(i),
				Document: map[string]any{"Name": "Patient " + strconv.Itoa(i)},
			})
			errs <- err
		}()
	}
	for i := 0; i < 200; i++ {
		require.NoError(t, <-errs)
	}
	require.Len(t, b.fake.Contacts(tenant), 200)
	require.Zero(t, b.fake.RateLimited(tenant))
	require.LessOrEqual(t, b.fake.MaxCallsInWindow(tenant), 60)
	require.Greater(t, b.fake.MaxCallsInWindow(tenant), 40, "the budget is used, not wasted")
	require.Equal(t, 1, b.fake.Refreshes(), "one refresh for all")
}

// TestLimitWaitBeyondDeadline: when the next slot is after ctx's deadline
// the sink says so at once (RateLimited, RetryAfter = the wait).
func TestLimitWaitBeyondDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.sinkWith(t, xero.WithRateLimit(6, time.Hour, 1), xero.WithConcurrency(1))
	_, err := s.Do(ctx30(t), connectors.Delivery{Action: "upsert_contact", Document: map[string]any{"Name": "A"}})
	require.NoError(t, err)
	_, err = s.Do(ctx30(t), connectors.Delivery{Action: "upsert_contact", Document: map[string]any{"Name": "B"}})
	require.Equal(t, connectors.RateLimited, connectors.ClassOf(err))
	require.Greater(t, connectors.RetryAfterOf(err), 10*time.Minute)
	require.Len(t, b.fake.Requests(), 1, "nothing sent")
}

func TestValidationIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.sink(t)
	inv := b.fake.SeedInvoice(tenant, "Jane Example", 100)
	for _, tc := range []struct {
		d    connectors.Delivery
		want string
	}{
		{payment("6f0c2b0e-0000-4000-8000-00000000dead", 10, "v1"), "Invoice could not be found"},
		{payment(inv, 1000, "v2"), "Payment amount exceeds the amount outstanding on this document"},
		{payment(inv, 0, "v3"), "Payment amount must be greater than zero"},
		{connectors.Delivery{Action: "create_payment", IdempotencyKey: "v4", Document: map[string]any{
			"Invoice": map[string]any{"InvoiceID": inv}, "Account": map[string]any{"Code": "200"}, "Amount": 5.0}},
			"Payments cannot be made to this account"},
		{connectors.Delivery{Action: "upsert_contact", IdempotencyKey: "v5", Document: map[string]any{
			"Name": "Jane Example", "EmailAddress": "jane.example.at.example.com"}},
			"The contact name [redacted] is already assigned to another contact"},
	} {
		_, err := s.Do(ctx30(t), tc.d)
		var ce *connectors.Error
		require.ErrorAs(t, err, &ce)
		require.Equal(t, connectors.Permanent, ce.Class, "%v", err)
		require.Equal(t, http.StatusBadRequest, ce.HTTPStatus)
		require.Equal(t, "ValidationException", ce.Code)
		require.Contains(t, ce.Msg, tc.want)
		connectortest.NoLeak(t, err, connectortest.StringLeaves(tc.d.Document, 4)...)
	}
	require.Empty(t, b.fake.Payments(tenant))

	// Many messages are cut to about 300 characters.
	var lines []any
	for i := 0; i < 30; i++ {
		lines = append(lines, map[string]any{"Description": "x", "AccountCode": "99" + strconv.Itoa(i)})
	}
	_, err := s.Do(ctx30(t), connectors.Delivery{Action: "create_invoice", IdempotencyKey: "v6", Document: map[string]any{
		"Type": "ACCREC", "Contact": map[string]any{"Name": "Jane Example"}, "LineItems": lines}})
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.LessOrEqual(t, len(err.(*connectors.Error).Msg), 304)
}

func TestForbiddenAndNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.sink(t)
	_, err := s.Do(ctx30(t), connectors.Delivery{Action: "request", Document: map[string]any{"method": "GET", "path": "/Invoices/6f0c2b0e-0000-4000-8000-00000000dead"}})
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Equal(t, 404, err.(*connectors.Error).HTTPStatus)

	b.seed = b.fake.IssueRefreshToken() // a grant that does not cover the tenant below
	cfg := strings.ReplaceAll(b.config(), tenant, "00000000-0000-4000-8000-000000000bad")
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
	bad, err := xero.Type().Build(doc.Content[0], connectors.Env{State: newState()})
	require.NoError(t, err)
	_, err = bad.(connectors.Sink).Do(ctx30(t), connectors.Delivery{Action: "upsert_contact", Document: map[string]any{"Name": "A"}})
	require.Equal(t, connectors.Auth, connectors.ClassOf(err))
	require.Equal(t, 403, err.(*connectors.Error).HTTPStatus)
}

func TestRequestAction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.sink(t)
	inv := b.fake.SeedInvoice(tenant, "Jane Example", 100)
	rc, err := s.Do(ctx30(t), connectors.Delivery{Action: "request", Document: map[string]any{"method": "get", "path": "/Invoices/" + inv}})
	require.NoError(t, err)
	require.Equal(t, inv, rc.ExternalID)

	pay, err := s.Do(ctx30(t), payment(inv, 40, "p1"))
	require.NoError(t, err)
	rc, err = s.Do(ctx30(t), connectors.Delivery{Action: "request", IdempotencyKey: "del1", Document: map[string]any{
		"method": "POST", "path": "/Payments/" + pay.ExternalID, "body": map[string]any{"Status": "DELETED"}}})
	require.NoError(t, err)
	require.Equal(t, pay.ExternalID, rc.ExternalID)
	require.Equal(t, "DELETED", rc.Status)
	require.Equal(t, 100.0, b.fake.Invoices(tenant)[0]["AmountDue"])

	for _, doc := range []map[string]any{
		{"method": "TRACE", "path": "/Invoices"},
		{"method": "GET", "path": "Invoices"},
		{"method": "GET", "path": "/../connections"},
		{"method": "GET"},
	} {
		_, err := s.Do(ctx30(t), connectors.Delivery{Action: "request", Document: doc})
		require.Equal(t, connectors.Permanent, connectors.ClassOf(err), "%v", doc)
	}
	_, err = s.Do(ctx30(t), connectors.Delivery{Action: "nope", Document: map[string]any{}})
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
}

func TestCreditNoteAndContact(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.sink(t)
	rc, err := s.Do(ctx30(t), connectors.Delivery{Action: "upsert_contact", IdempotencyKey: "c1", Document: map[string]any{
		"Name": "Jane Example", "ContactNumber": "P123", "EmailAddress": "jane@example.com"}})
	require.NoError(t, err)
	contactID := rc.ExternalID
	rc, err = s.Do(ctx30(t), connectors.Delivery{Action: "upsert_contact", IdempotencyKey: "c2", Document: map[string]any{
		"Name": "Jane Example-Smith", "ContactNumber": "P123"}})
	require.NoError(t, err)
	require.Equal(t, contactID, rc.ExternalID, "ContactNumber updates the same contact")
	require.Len(t, b.fake.Contacts(tenant), 1)

	rc, err = s.Do(ctx30(t), connectors.Delivery{Action: "create_credit_note", IdempotencyKey: "cn1", Document: map[string]any{
		"Type": "ACCRECCREDIT", "Contact": map[string]any{"ContactID": contactID}, "Status": "AUTHORISED",
		"LineItems": []any{map[string]any{"Description": "Refund", "UnitAmount": 50.0, "AccountCode": "200"}}}})
	require.NoError(t, err)
	cns := b.fake.CreditNotes(tenant)
	require.Len(t, cns, 1)
	require.Equal(t, rc.ExternalID, cns[0]["CreditNoteID"])
	require.Equal(t, 50.0, cns[0]["Total"])
}

// TestFakeFromCLI: `clinicbridge fake xero` serves a permissive fake that
// any configured client, tenant and refresh token work against.
func TestFakeFromCLI(t *testing.T) {
	t.Parallel()
	var log strings.Builder
	var mu sync.Mutex
	srv := listen127(t, xero.Type().Fake(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return log.Write(p)
	})))
	cfg := "{client_id: any, client_secret: whatever-secret, tenant_id: 11111111-2222-4333-8444-555555555555, refresh_token: pasted-token-123," +
		" base_url: '" + srv.URL + "', token_url: '" + srv.URL + xerofake.TokenPath + "'}"
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
	s, err := xero.Type().Build(doc.Content[0], connectors.Env{State: newState()})
	require.NoError(t, err)
	rc, err := s.(connectors.Sink).Do(ctx30(t), connectors.Delivery{Action: "upsert_contact", IdempotencyKey: "k", Document: map[string]any{"Name": "Jane Example"}})
	require.NoError(t, err)
	require.NotEmpty(t, rc.ExternalID)
	require.NoError(t, s.(connectors.Closer).Close())
	mu.Lock()
	defer mu.Unlock()
	require.Contains(t, log.String(), "POST /api.xro/2.0/Contacts")
	require.NotContains(t, log.String(), "Jane Example", "the log carries no payload")
	require.NotContains(t, log.String(), "pasted-token-123")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for cfg, want := range map[string]string{
		"{client_secret: s3cr3tvalue, tenant_id: t}":                                           "client_id: required",
		"{client_id: c, tenant_id: t}":                                                         "client_secret: required",
		"{client_id: c, client_secret: s3cr3tvalue}":                                           "tenant_id: required",
		"{client_id: c, client_secret: s3cr3tvalue, tenant_id: t, base_url: 'ftp://x'}":        "base_url",
		"{client_id: c, client_secret: s3cr3tvalue, tenant_id: t, token_url: 'https://u:p@x'}": "token_url",
	} {
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
		_, err := xero.Type().Build(doc.Content[0], connectors.Env{})
		require.ErrorContains(t, err, want, cfg)
		require.NotContains(t, err.Error(), "s3cr3tvalue")
	}
}

func TestDocsCoverEveryKey(t *testing.T) {
	t.Parallel()
	connectortest.DocumentsFields(t, "../../docs/connectors/xero.md", xero.Type().Fields)
}
