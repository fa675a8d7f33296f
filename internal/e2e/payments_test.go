package e2e

// End-to-end tests of "Payments to bookkeeping: Stripe in, Xero out": the
// real agent (app.Load + Run) on examples/stripe-to-xero's config and
// mappings, between the Stripe fake (signed webhooks) and the Xero fake
// (OAuth, validation, idempotency, limits). See docs/payments.md.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/stripe/stripefake"
	"github.com/clinicbridge/clinicbridge/connectors/xero"
	"github.com/clinicbridge/clinicbridge/connectors/xero/xerofake"
	"github.com/clinicbridge/clinicbridge/internal/crashtest/agentproc"
	"github.com/clinicbridge/clinicbridge/internal/pipeline"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// TestPaymentsStripePaymentLandsInXero: a Stripe payment becomes one Xero
// payment against the Xero invoice made from its Stripe invoice, in major
// units, in the invoice's (Stripe's) currency, with the delivery's
// idempotency key.
func TestPaymentsStripePaymentLandsInXero(t *testing.T) {
	t.Parallel()
	e := newPayEnv(t, payOptions{})
	invoiceID := e.invoice(t, "in_1land", "NSC-1001", "eur", 20000, 10000)
	other := e.invoice(t, "in_1other", "NSC-1002", "eur", 5000)

	ev := e.emit(t, "payment_intent.succeeded", payIntent("pi_1land", "in_1land", "eur", 12345))
	d := e.waitState(t, ev.ID, store.Succeeded)
	require.Equal(t, payPaymentRoute, d.Route)

	pays := e.xero.Payments(payTenant)
	require.Len(t, pays, 1)
	p := pays[0]
	require.Equal(t, d.ExternalID, p["PaymentID"], "the receipt is Xero's PaymentID")
	require.InDelta(t, 123.45, payNum(t, p["Amount"]), 1e-9, "12345 cents are 123.45 euros")
	require.Equal(t, invoiceID, p["Invoice"].(map[string]any)["InvoiceID"])
	require.NotEqual(t, other, p["Invoice"].(map[string]any)["InvoiceID"])
	require.Equal(t, "090", p["Account"].(map[string]any)["Code"])
	require.Equal(t, "Stripe pi_1land", p["Reference"])
	require.Equal(t, ev.Created.UTC().Format("2006-01-02"), payDate(t, p["Date"]), "the day Stripe's event happened")

	// A Xero payment is in its invoice's currency: the invoice carries Stripe's.
	inv := payFind(t, e.xero.Invoices(payTenant), "InvoiceID", invoiceID)
	require.Equal(t, "EUR", inv["CurrencyCode"])
	require.InDelta(t, 300.00, payNum(t, inv["Total"]), 1e-9)
	require.InDelta(t, 123.45, payNum(t, inv["AmountPaid"]), 1e-9)
	require.InDelta(t, 176.55, payNum(t, inv["AmountDue"]), 1e-9)
	require.Equal(t, "NSC-1001", inv["InvoiceNumber"])

	calls := e.xeroCalls("Payments")
	require.Len(t, calls, 1)
	require.Equal(t, pipeline.IdempotencyKey(d.Source, d.EventID, d.Route), calls[0].Header.Get("Idempotency-Key"))
	require.Equal(t, payTenant, calls[0].Header.Get("Xero-Tenant-Id"))
}

// payDate renders the fake's /Date(ms+0000)/ as YYYY-MM-DD.
func payDate(t *testing.T, v any) string {
	t.Helper()
	s, _ := v.(string)
	rest, ok := strings.CutPrefix(s, "/Date(")
	require.True(t, ok, "not a Xero date: %v", v)
	ms, err := strconv.ParseInt(strings.SplitN(strings.SplitN(rest, ")", 2)[0], "+", 2)[0], 10, 64)
	require.NoError(t, err)
	return time.UnixMilli(ms).UTC().Format("2006-01-02")
}

// TestPaymentsResentAndReplayedPostOnce: the same Stripe event delivered
// three more times, and a replay of the succeeded delivery, still make one
// payment in Xero: duplicates stop at the agent, and the replay carries the
// same Idempotency-Key, which Xero answers from its first answer. The
// invoice could take a second payment, so only the key prevents one.
func TestPaymentsResentAndReplayedPostOnce(t *testing.T) {
	t.Parallel()
	e := newPayEnv(t, payOptions{})
	e.invoice(t, "in_2once", "NSC-2001", "gbp", 30000)
	ev := e.emit(t, "payment_intent.succeeded", payIntent("pi_2once", "in_2once", "gbp", 10000))
	first := e.waitState(t, ev.ID, store.Succeeded)

	ctx := context.Background()
	for i := 0; i < 3; i++ {
		status, err := e.stripe.Resend(ctx, ev.ID)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status, "a duplicate is acknowledged")
	}
	// A later payment proves the queue moved past the duplicates.
	later := e.emit(t, "payment_intent.succeeded", payIntent("pi_2later", "in_2once", "gbp", 500))
	e.waitState(t, later.ID, store.Succeeded)
	ds := e.deliveries(t, ev.ID)
	require.Len(t, ds, 1, "a resent event is not planned again")
	require.Equal(t, 1, ds[0].Attempts)

	var out struct{ Replayed []string }
	require.NoError(t, e.admin().Do(ctx, http.MethodPost, "/api/replay", nil, server.ReplayRequest{IDs: []string{first.ID}}, &out))
	require.Equal(t, []string{first.ID}, out.Replayed)
	replayed := e.waitState(t, ev.ID, store.Succeeded)
	require.Equal(t, first.ExternalID, replayed.ExternalID, "the receipt is kept: the same PaymentID")

	var mine []map[string]any
	for _, p := range e.xero.Payments(payTenant) {
		if p["Reference"] == "Stripe pi_2once" {
			mine = append(mine, p)
		}
	}
	require.Len(t, mine, 1, "one payment in Xero")
	require.Equal(t, first.ExternalID, mine[0]["PaymentID"])
	var sent []xerofake.Recorded
	for _, c := range e.xeroCalls("Payments") {
		if c.Header.Get("Idempotency-Key") == pipeline.IdempotencyKey(first.Source, first.EventID, first.Route) {
			sent = append(sent, c)
		}
	}
	require.Len(t, sent, 2, "the replay called Xero again...")
	require.False(t, sent[0].Replay)
	require.True(t, sent[1].Replay, "...with the same key, and Xero replayed its first answer")
	require.Equal(t, 3, e.xero.Effects(payTenant), "the invoice and two payments; the replay changed nothing")
}

// TestPaymentsWaitForTheirInvoice: a payment that arrives before its
// invoice waits (needs:), then posts against it; one whose invoice never
// comes is dead after the wait, with that reason, and never reaches Xero.
func TestPaymentsWaitForTheirInvoice(t *testing.T) {
	t.Parallel()
	e := newPayEnv(t, payOptions{})

	early := e.emit(t, "payment_intent.succeeded", payIntent("pi_3early", "in_3late", "gbp", 4200))
	require.Eventually(t, func() bool {
		d := e.delivery(t, early.ID)
		return d.State == store.Pending && strings.Contains(d.LastError, "waiting for route "+payInvoiceRoute)
	}, 10*time.Second, 20*time.Millisecond, "the payment waits for its invoice")
	time.Sleep(500 * time.Millisecond)
	d := e.delivery(t, early.ID)
	require.Equal(t, store.Pending, d.State)
	require.Zero(t, d.Attempts, "waiting uses no attempt")
	require.Empty(t, e.xeroCalls("Payments"), "nothing was sent to Xero")

	invoiceID := e.invoice(t, "in_3late", "NSC-3001", "gbp", 4200)
	d = e.waitState(t, early.ID, store.Succeeded)
	require.Equal(t, 1, d.Attempts)
	pays := e.xero.Payments(payTenant)
	require.Len(t, pays, 1)
	require.Equal(t, invoiceID, pays[0]["Invoice"].(map[string]any)["InvoiceID"])
	require.Equal(t, "PAID", payFind(t, e.xero.Invoices(payTenant), "InvoiceID", invoiceID)["Status"])

	orphan := e.emit(t, "payment_intent.succeeded", payIntent("pi_3orphan", "in_3never", "gbp", 1000))
	dead := e.waitState(t, orphan.ID, store.Dead)
	require.Contains(t, dead.LastError, "needs: route "+payInvoiceRoute+" had no success for this key within "+payNeedsWait.String())
	require.GreaterOrEqual(t, dead.UpdatedAt.Sub(dead.CreatedAt), payNeedsWait, "dead only after the configured wait")
	require.Zero(t, dead.Attempts)
	require.Len(t, e.xeroCalls("Payments"), 1, "the orphan never reached Xero")
}

// TestPaymentsTokenRotationSurvivesRestart: Xero rotates the refresh token
// on every refresh (here access tokens live 30 s, so every call refreshes).
// After a restart on the same store, with the spent seed still in the
// config, the agent refreshes with the newest stored token: the fake never
// sees a spent token, and the payment goes through.
func TestPaymentsTokenRotationSurvivesRestart(t *testing.T) {
	t.Parallel()
	e := newPayEnv(t, payOptions{xero: []xerofake.Option{xerofake.WithAccessTokenTTL(30 * time.Second)}})
	e.invoice(t, "in_4rot", "NSC-4001", "gbp", 50000)
	ev := e.emit(t, "payment_intent.succeeded", payIntent("pi_4before", "in_4rot", "gbp", 1000))
	e.waitState(t, ev.ID, store.Succeeded)
	require.Equal(t, 2, e.xero.Refreshes(), "one refresh per call, each one rotating")

	e.stop(t)
	e.start(t)
	ev = e.emit(t, "payment_intent.succeeded", payIntent("pi_4after", "in_4rot", "gbp", 1000))
	d := e.waitState(t, ev.ID, store.Succeeded)
	require.Equal(t, 1, d.Attempts)
	require.Equal(t, 3, e.xero.Refreshes(), "the restarted agent refreshed once, with the newest token")
	require.NotContains(t, e.xeroLog.String(), "invalid_grant", "no spent refresh token was ever sent")
	require.Len(t, e.xero.Payments(payTenant), 2)
}

// TestPaymentsInvalidGrantPausesUntilXeroConnect: after the app is
// disconnected in Xero (invalid_grant), payments wait as paused: pending,
// with a reconnect message, no attempts used, no calls to Xero.
// `clinicbridge xero connect` (the real binary, playing the browser against
// the fake's consent screen) hands a new token to the running agent through
// its admin API, and the paused payment posts. With the agent stopped, the
// same command writes the token to the store and the restarted agent
// resumes.
func TestPaymentsInvalidGrantPausesUntilXeroConnect(t *testing.T) {
	t.Parallel()
	bin := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		defer cancel()
		b, err := agentproc.Build(ctx, t.TempDir())
		if err != nil {
			t.Errorf("building the CLI: %v", err)
		}
		bin <- b
	}()
	e := newPayEnv(t, payOptions{pausedRecheck: 200 * time.Millisecond})
	invoiceID := e.invoice(t, "in_5grant", "NSC-5001", "gbp", 50000)

	e.xero.Revoke()
	ev := e.emit(t, "payment_intent.succeeded", payIntent("pi_5paused", "in_5grant", "gbp", 2500))
	e.requirePaused(t, ev.ID)

	cliConfig := filepath.Join(e.dir, "cli.yaml")
	require.NoError(t, os.WriteFile(cliConfig, payConfig(t, strings.TrimPrefix(e.admin().Base, "http://"), e.stripeURL, e.xeroURL, e.seed), 0o600))
	cli := <-bin
	require.NotEmpty(t, cli)
	printed := e.xeroConnect(t, cli, cliConfig)
	require.Contains(t, printed, "The agent at "+e.admin().Base+" will receive the token")
	require.Contains(t, printed, "Token stored")
	require.Contains(t, printed, payTenant, "it lists the organisations the grant covers")
	require.Contains(t, printed, "Next: nothing to restart")

	d := e.waitState(t, ev.ID, store.Succeeded)
	require.Equal(t, 1, d.Attempts, "the pause used no attempts")
	pays := e.xero.Payments(payTenant)
	require.Len(t, pays, 1)
	require.Equal(t, invoiceID, pays[0]["Invoice"].(map[string]any)["InvoiceID"])
	var audit struct{ Entries []store.AuditEntry }
	require.NoError(t, e.admin().Do(context.Background(), http.MethodGet, "/api/audit", nil, nil, &audit))
	require.NotEmpty(t, audit.Entries)
	require.Equal(t, "connector_state", audit.Entries[0].Action)
	require.Equal(t, "books/"+xero.TokenStateKey, audit.Entries[0].Target)

	// Disconnected again, and this time the agent is down when the operator
	// reconnects: the token goes straight into the store.
	e.xero.Revoke()
	ev = e.emit(t, "payment_intent.succeeded", payIntent("pi_5offline", "in_5grant", "gbp", 2500))
	e.requirePaused(t, ev.ID)
	e.stop(t)
	printed = e.xeroConnect(t, cli, cliConfig)
	require.Contains(t, printed, "No agent answers")
	require.Contains(t, printed, "Next: start the agent")
	e.start(t)
	d = e.waitState(t, ev.ID, store.Succeeded)
	require.Equal(t, 1, d.Attempts)
	require.Len(t, e.xero.Payments(payTenant), 2)
}

// requirePaused waits until the event's delivery is paused on
// invalid_grant, then checks that it stays so without using attempts or
// calling Xero while the pipeline keeps re-checking it.
func (e *payEnv) requirePaused(t *testing.T, eventID string) {
	t.Helper()
	var d store.Delivery
	require.Eventually(t, func() bool {
		d = e.delivery(t, eventID)
		return d.State == store.Pending && strings.Contains(d.LastError, "paused")
	}, 15*time.Second, 20*time.Millisecond, "never paused (last: %+v)", d)
	require.Contains(t, d.LastError, "reconnect Xero with `clinicbridge xero connect")
	require.Contains(t, d.LastError, "invalid_grant")
	calls := len(e.xero.Requests())
	time.Sleep(time.Second) // five re-checks at 200 ms
	d = e.delivery(t, eventID)
	require.Equal(t, store.Pending, d.State)
	require.Zero(t, d.Attempts, "a pause uses no attempts")
	require.Contains(t, d.LastError, "reconnect")
	require.Equal(t, calls, len(e.xero.Requests()), "no API call with a refused grant")
}

// xeroConnect runs `clinicbridge xero connect` and plays the browser: it
// opens the printed authorization URL, whose consent the fake gives at once,
// redirecting to the command's callback. It returns what the command printed.
func (e *payEnv) xeroConnect(t *testing.T, bin, cfg string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "xero", "connect", "-c", cfg, "--connector", "books", "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	var mu sync.Mutex
	var printed strings.Builder
	urls := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			printed.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if f := strings.TrimSpace(sc.Text()); strings.HasPrefix(f, e.xeroURL+xerofake.AuthorizePath) {
				urls <- f
			}
		}
	}()
	select {
	case u := <-urls:
		resp, err := payHTTP.Get(u) // the fake consents and redirects to the callback
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("xero connect printed no authorization URL:\n%s%s", printed.String(), stderr.String())
	}
	<-scanned
	err = cmd.Wait()
	mu.Lock()
	defer mu.Unlock()
	require.NoError(t, err, "xero connect failed:\n%s%s", printed.String(), stderr.String())
	return printed.String()
}

// TestPaymentsXero429HonoursRetryAfter: Xero answers 429 with
// Retry-After: 2; the agent does not call again for 2 s, and the wait uses
// no attempt.
func TestPaymentsXero429HonoursRetryAfter(t *testing.T) {
	t.Parallel()
	e := newPayEnv(t, payOptions{})
	e.invoice(t, "in_6limit", "NSC-6001", "gbp", 10000)
	e.xero.Script(xerofake.Response{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"2"}, "X-Rate-Limit-Problem": {"minute"}}})
	ev := e.emit(t, "payment_intent.succeeded", payIntent("pi_6limit", "in_6limit", "gbp", 10000))
	d := e.waitState(t, ev.ID, store.Succeeded)
	require.Equal(t, 1, d.Attempts, "a rate-limited wait is not an attempt")

	calls := e.xeroCalls("Payments")
	require.Len(t, calls, 2)
	require.Equal(t, http.StatusTooManyRequests, calls[0].Status)
	require.Equal(t, http.StatusOK, calls[1].Status)
	for _, c := range e.xero.Requests() {
		if c.At.After(calls[0].At) {
			require.GreaterOrEqual(t, c.At.Sub(calls[0].At), 2*time.Second, "a call to Xero before Retry-After passed")
		}
	}
	require.Len(t, e.xero.Payments(payTenant), 1)
}

// TestPaymentsBurstKeepsXeroMinuteLimit: a burst of payments through the
// agent is paced by the sink's limiter: Xero never answers 429 and never
// sees more than 5 calls at once, and the calls are spread at the
// sustained ~51 a minute after a burst of 5 (so no rolling minute exceeds
// 60). 13 calls take about 9 s instead of a few milliseconds; the 200-call
// figure is TestPaymentsBurstOf200AtTheSink, on a virtual clock.
func TestPaymentsBurstKeepsXeroMinuteLimit(t *testing.T) {
	t.Parallel()
	e := newPayEnv(t, payOptions{})
	e.invoice(t, "in_7burst", "NSC-7001", "gbp", 1000000)
	const n = 12
	var ids []string
	for i := 0; i < n; i++ {
		ev := e.emit(t, "payment_intent.succeeded", payIntent("pi_7burst"+strconv.Itoa(i), "in_7burst", "gbp", 1000))
		ids = append(ids, ev.ID)
	}
	for _, id := range ids {
		e.waitState(t, id, store.Succeeded)
	}
	require.Len(t, e.xero.Payments(payTenant), n)
	require.Zero(t, e.xero.RateLimited(payTenant), "Xero never had to refuse a call")
	require.LessOrEqual(t, e.xero.MaxCallsInWindow(payTenant), 60)

	calls := e.xero.Requests() // in the order they finished
	require.Len(t, calls, n+1)
	sort.Slice(calls, func(i, j int) bool { return calls[i].At.Before(calls[j].At) })
	// Bucket: 5 at once, then one every 60/51 s: call k (0-based) starts no
	// earlier than (k-4)*60/51 s after the first.
	for k := 5; k < len(calls); k++ {
		min := time.Duration(float64(k-4) * 60 / 51 * float64(time.Second))
		require.GreaterOrEqual(t, calls[k].At.Sub(calls[0].At), min-150*time.Millisecond, "call %d came too early", k)
	}
}

// TestPaymentsBurstOf200AtTheSink: 200 payments at once through one Xero
// sink against the fake, on a virtual clock: Xero never counts more than 60
// calls in a rolling minute and never answers 429.
func TestPaymentsBurstOf200AtTheSink(t *testing.T) {
	t.Parallel()
	clock := &payClock{t: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)}
	clientID, clientSecret := "burst-client", "burst-secret"
	fake := xerofake.New(xerofake.WithClient(clientID, clientSecret), xerofake.WithTenant(payTenant, "Northside Clinic Ltd"), xerofake.WithClock(clock.Now))
	url := payListen(t, fake).URL
	invoiceID := fake.SeedInvoice(payTenant, "Jane Example", 100000)
	sink, err := xero.New(&xero.Config{
		ClientID: clientID, ClientSecret: clientSecret, TenantID: payTenant, RefreshToken: fake.IssueRefreshToken(),
		BaseURL: url, TokenURL: url + xerofake.TokenPath,
	}, connectors.Env{Name: "books", State: &payMemState{m: map[string][]byte{}}, Now: clock.Now}, xero.WithSleepUntil(clock.SleepUntil))
	require.NoError(t, err)
	t.Cleanup(func() { sink.Close() })

	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		go func() {
			_, err := sink.Do(context.Background(), connectors.Delivery{
				Action:         xero.ActionCreatePayment,
				IdempotencyKey: "clinicbridge-dlv_burst" + strconv.Itoa(i),
				Document: map[string]any{
					"Invoice": map[string]any{"InvoiceID": invoiceID}, "Account": map[string]any{"Code": "090"},
					"Amount": 1.5, "Date": "2026-11-02", "Reference": "Stripe pi_burst" + strconv.Itoa(i),
				},
			})
			errs <- err
		}()
	}
	for i := 0; i < 200; i++ {
		require.NoError(t, <-errs)
	}
	require.Len(t, fake.Payments(payTenant), 200)
	require.Zero(t, fake.RateLimited(payTenant))
	require.LessOrEqual(t, fake.MaxCallsInWindow(payTenant), 60)
	require.Greater(t, fake.MaxCallsInWindow(payTenant), 40, "the budget is used, not wasted")
	require.GreaterOrEqual(t, clock.Now().Sub(time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)), 3*time.Minute, "200 calls need over 3 minutes at 60 a minute")
}

// payClock is a virtual clock: sleeping moves it forward at once.
type payClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *payClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *payClock) SleepUntil(ctx context.Context, until time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if until.After(c.t) {
		c.t = until
	}
	return ctx.Err()
}

// payMemState is an in-memory connector state.
type payMemState struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *payMemState) Get(_ context.Context, k string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return append([]byte(nil), v...), ok, nil
}

func (s *payMemState) Put(_ context.Context, k string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = append([]byte(nil), v...)
	return nil
}

func (s *payMemState) Delete(_ context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

// TestPaymentsStripeSignatures: through the running agent, with stripe-go's
// signer: a valid signature is accepted; a tampered body, a wrong secret, a
// stale timestamp and a missing header are refused with 401 and nothing is
// stored; a header with several v1 signatures, one valid (a rolled secret),
// is accepted.
func TestPaymentsStripeSignatures(t *testing.T) {
	t.Parallel()
	e := newPayEnv(t, payOptions{})
	body := func(id string) []byte {
		return payJSON(t, map[string]any{
			"id": id, "object": "event", "api_version": stripefake.APIVersion, "created": payNow(),
			"data":     map[string]any{"object": payIntent("pi_"+id, "", "gbp", 1500)},
			"livemode": false, "pending_webhooks": 1, "request": map[string]any{"id": nil, "idempotency_key": nil},
			"type": "payment_intent.succeeded",
		})
	}
	sign := func(payload []byte, secret string, at time.Time) *webhook.SignedPayload {
		return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: at})
	}
	post := func(payload []byte, header string) int {
		req, err := http.NewRequest(http.MethodPost, e.hooks()+"/hooks/stripe", bytes.NewReader(payload))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		if header != "" {
			req.Header.Set("Stripe-Signature", header)
		}
		resp, err := payHTTP.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	stored := func(id string) bool {
		err := e.admin().Do(context.Background(), http.MethodGet, "/api/events/stripe/"+id, nil, nil, nil)
		if err != nil {
			require.Contains(t, err.Error(), "not found")
			return false
		}
		return true
	}
	now := time.Now()

	valid := body("evt_sig_valid")
	require.Equal(t, http.StatusOK, post(valid, sign(valid, e.secret, now).Header))
	require.True(t, stored("evt_sig_valid"))
	// It has no invoice to pay: the payment route's `when` skips it.
	require.Equal(t, store.Skipped, e.waitState(t, "evt_sig_valid", store.Skipped).State)

	tampered := body("evt_sig_tampered")
	header := sign(tampered, e.secret, now).Header
	tampered = bytes.Replace(tampered, []byte(`"amount":1500`), []byte(`"amount":150000`), 1)
	require.Contains(t, string(tampered), `"amount":150000`)
	require.Equal(t, http.StatusUnauthorized, post(tampered, header), "tampered body")

	wrong := body("evt_sig_wrong")
	require.Equal(t, http.StatusUnauthorized, post(wrong, sign(wrong, "whsec_someone-elses-secret", now).Header), "wrong secret")

	stale := body("evt_sig_stale")
	require.Equal(t, http.StatusUnauthorized, post(stale, sign(stale, e.secret, now.Add(-6*time.Minute)).Header), "timestamp older than 300 s")

	missing := body("evt_sig_missing")
	require.Equal(t, http.StatusUnauthorized, post(missing, ""), "no Stripe-Signature")

	for _, id := range []string{"evt_sig_tampered", "evt_sig_wrong", "evt_sig_stale", "evt_sig_missing"} {
		require.False(t, stored(id), "%s was stored", id)
	}

	// While a secret is rolled Stripe signs with both: one valid v1 is enough.
	rolled := body("evt_sig_rolled")
	old := sign(rolled, "whsec_the-previous-secret", now)
	cur := sign(rolled, e.secret, now)
	require.Equal(t, http.StatusOK, post(rolled, old.Header+",v1="+hex.EncodeToString(cur.Signature)))
	require.True(t, stored("evt_sig_rolled"))
}

// TestPaymentsInvoicePaidAndRefundReachXero: the example's other routes:
// invoice.paid pays the Xero invoice in full, and a partial refund becomes
// a credit note for what it gave back.
func TestPaymentsInvoicePaidAndRefundReachXero(t *testing.T) {
	t.Parallel()
	e := newPayEnv(t, payOptions{})
	invoiceID := e.invoice(t, "in_8paid", "NSC-8001", "gbp", 12000, 6000)

	paid := payInvoice("in_8paid", "NSC-8001", "gbp", 12000, 6000)
	paid["amount_paid"], paid["amount_remaining"], paid["status"] = 18000, 0, "paid"
	paid["status_transitions"] = map[string]any{"finalized_at": payNow(), "paid_at": payNow()}
	ev := e.emit(t, "invoice.paid", paid)
	d := e.waitState(t, ev.ID, store.Succeeded)
	require.Equal(t, payInvoicePaidRoute, d.Route)
	inv := payFind(t, e.xero.Invoices(payTenant), "InvoiceID", invoiceID)
	require.Equal(t, "PAID", inv["Status"])
	require.InDelta(t, 180.0, payNum(t, inv["AmountPaid"]), 1e-9)

	charge := map[string]any{
		"id": "ch_8refund", "object": "charge", "amount": 18000, "amount_captured": 18000, "amount_refunded": 7500,
		"billing_details": map[string]any{"name": "Patient in_8paid", "email": nil}, "captured": true, "created": payNow(),
		"currency": "gbp", "customer": "cus_in_8paid", "description": "Invoice NSC-8001", "paid": true, "refunded": false, "status": "succeeded",
	}
	ev = e.emit(t, "charge.refunded", charge)
	d = e.waitState(t, ev.ID, store.Succeeded)
	require.Equal(t, payRefundRoute, d.Route)
	cn := payFind(t, e.xero.CreditNotes(payTenant), "CreditNoteID", d.ExternalID)
	require.Equal(t, "ACCRECCREDIT", cn["Type"])
	require.Equal(t, "GBP", cn["CurrencyCode"])
	require.InDelta(t, 75.0, payNum(t, cn["Total"]), 1e-9)
	require.Equal(t, inv["Contact"].(map[string]any)["ContactID"], cn["Contact"].(map[string]any)["ContactID"], "the invoice's contact")
}
