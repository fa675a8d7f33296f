package e2e

// End-to-end tests of reconciliation ("cron pulls what the webhooks
// missed"): real in-process agents on SQLite, each source's stateful fake
// as the remote system (sending signed webhooks, dropping some, serving its
// list API), and a recording http sink counting deliveries by event id and
// Idempotency-Key.
//
// Covered elsewhere, not repeated here:
//   - two agents on one Postgres run each cron slot once (River's leader
//     schedules the periodic job): internal/app TestTwoAgentsRunEachSlotOnce;
//   - a poll source (no webhooks at all) becoming deliveries, updates
//     included: internal/app TestPollBecomesDeliveries;
//   - the engine on its own (watermark arithmetic, a failing page):
//     internal/reconcile.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/connectors/calcom/calcomfake"
	"github.com/clinicbridge/clinicbridge/connectors/calendly/calendlyfake"
	"github.com/clinicbridge/clinicbridge/connectors/fhir/fhirfake"
	"github.com/clinicbridge/clinicbridge/connectors/stripe/stripefake"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

const (
	reconSeed         = 7 // which webhooks the fakes drop
	reconCalcomSecret = "calcom-test-webhook-secret"
	reconCalendlyKey  = "calendly-test-signing-key"
	reconStripeSecret = "whsec_reconcile_test_secret"
	reconStripeKey    = "sk_test_reconcile"
	reconFHIRSecret   = "fhir-test-notification-bearer"
)

// reconConfig is an agent with one source "src", one reconciler "recon" on
// it (scheduled hourly, so only the test's runs happen) and one route from
// it to the recording sink, carrying the event id in the document.
const reconConfig = `version: 1
server: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
log: {level: debug}
connectors:
  src: %s
  sink: {type: http, url: "{{SINK}}/deliver", timeout: 5s}
reconcile:
  - {name: recon, from: src, schedule: "@every 1h", lookback: 1h}
routes:
  - name: forward
    from: src
    events: [%s]
    map: {fields: {event_id: {from: event.id, required: true}}}
    to: sink
    retry: {max_attempts: 5, backoff: [100ms]}
`

// reconSource drives one source system's fake.
type reconSource struct {
	// create makes n new items (bookings, invitees, events, resources);
	// their webhooks are sent to the agent, minus the dropped share. It
	// returns the event ids the agent should end up with, in order.
	create func(t *testing.T, n int) []string
	// dropped is the event ids whose webhook never reached the agent.
	dropped func(t *testing.T) []string
	// sent checks that every webhook that was not dropped was answered 2xx,
	// and returns how many there were.
	sent func(t *testing.T) int
	// failPage3 makes page 3 of the next listing answer 500 (for as long
	// as the lister retries it); clear ends that.
	failPage3 func(t *testing.T)
	clear     func()
}

// reconKind is a source type with a fake.
type reconKind struct {
	name      string
	connector string // the connector's YAML; %s is the fake's base URL
	event     string // the event type the route takes
	// fake starts the fake behind late. hook is where webhooks go ("" for
	// none); drop is the share of them lost on the way.
	fake func(t *testing.T, late *reconLate, base, hook string, drop float64) reconSource
}

var reconKinds = []reconKind{
	{
		name:      "calcom",
		connector: `{type: calcom, webhook_secret: "` + reconCalcomSecret + `", api_key: "` + calcomfake.DefaultAPIKey + `", base_url: "%s"}`,
		event:     "BOOKING_CREATED",
		fake: func(t *testing.T, late *reconLate, _, hook string, drop float64) reconSource {
			opts := []calcomfake.Option{calcomfake.WithSeed(reconSeed)}
			if hook != "" {
				opts = append(opts, calcomfake.WithWebhook(hook, reconCalcomSecret))
			}
			f := calcomfake.New(opts...)
			f.DropShare(drop)
			late.set(f)
			start := time.Now().Add(72 * time.Hour).Truncate(time.Hour)
			return reconSource{
				create: func(t *testing.T, n int) []string {
					var ids []string
					for range n {
						b, err := f.Create(calcomfake.Booking{Start: start})
						require.NoError(t, err)
						start = start.Add(30 * time.Minute)
						ids = append(ids, "BOOKING_CREATED:"+b.UID) // docs/connectors/calcom.md, Event ids
					}
					return ids
				},
				dropped: func(*testing.T) []string {
					var ids []string
					for _, d := range f.Dropped() {
						ids = append(ids, d.Trigger+":"+d.UID)
					}
					return ids
				},
				sent: func(t *testing.T) int {
					n := 0
					for _, d := range f.Deliveries() {
						if !d.Dropped {
							require.Equal(t, 200, d.Status, "webhook %s %s: %s", d.Trigger, d.UID, d.Err)
							n++
						}
					}
					return n
				},
				failPage3: func(*testing.T) { f.FailPage(3, 500) },
				clear:     f.ClearFailures,
			}
		},
	},
	{
		name: "calendly",
		connector: `{type: calendly, webhook_secret: "` + reconCalendlyKey + `", api_key: "` + calendlyfake.DefaultToken +
			`", organization: "` + calendlyfake.DefaultOrganization + `", base_url: "%s"}`,
		event: "invitee.created",
		fake: func(t *testing.T, late *reconLate, _, hook string, drop float64) reconSource {
			// One listing asks for every scheduled event's invitees: far more
			// requests than Calendly's 500 a minute over this test's runs.
			opts := []calendlyfake.Option{calendlyfake.WithSeed(reconSeed), calendlyfake.WithRateLimit(1_000_000)}
			if hook != "" {
				opts = append(opts, calendlyfake.WithWebhook(hook, reconCalendlyKey))
			}
			f := calendlyfake.New(opts...)
			f.DropShare(drop)
			late.set(f)
			start := time.Now().Add(72 * time.Hour).Truncate(time.Hour)
			return reconSource{
				create: func(t *testing.T, n int) []string {
					var ids []string
					for range n {
						inv, err := f.Create(calendlyfake.Booking{Start: start, Phone: "+447700900123"})
						require.NoError(t, err)
						start = start.Add(30 * time.Minute)
						ids = append(ids, "invitee.created:"+inv.URI()) // docs/connectors/calendly.md, Event id
					}
					return ids
				},
				dropped: func(*testing.T) []string {
					var ids []string
					for _, d := range f.Dropped() {
						ids = append(ids, d.Event+":"+d.Invitee)
					}
					return ids
				},
				sent: func(t *testing.T) int {
					n := 0
					for _, d := range f.Deliveries() {
						if !d.Dropped {
							require.Equal(t, 200, d.Status, "webhook %s %s: %s", d.Event, d.Invitee, d.Err)
							n++
						}
					}
					return n
				},
				failPage3: func(*testing.T) { f.FailPage(3, 500) },
				clear:     f.ClearFailures,
			}
		},
	},
	{
		name:      "stripe",
		connector: `{type: stripe, webhook_secret: "` + reconStripeSecret + `", api_key: "` + reconStripeKey + `", base_url: "%s"}`,
		event:     "payment_intent.succeeded",
		fake: func(t *testing.T, late *reconLate, _, hook string, drop float64) reconSource {
			f := stripefake.New(stripefake.WithSeed(reconSeed))
			if hook != "" {
				f.SetWebhook(hook, reconStripeSecret)
			}
			f.DropShare(drop)
			late.set(f)
			return reconSource{
				create: func(t *testing.T, n int) []string {
					var ids []string
					for range n {
						ev, err := f.Emit(context.Background(), "payment_intent.succeeded", nil)
						require.NoError(t, err)
						ids = append(ids, ev.ID) // docs/connectors/stripe.md: the evt_ id
					}
					return ids
				},
				dropped: func(*testing.T) []string { return f.Dropped() },
				sent: func(t *testing.T) int {
					n := 0
					for _, e := range f.Events() {
						if !e.Dropped {
							require.Equal(t, 200, e.Status, "webhook %s", e.ID)
							n++
						}
					}
					return n
				},
				failPage3: func(*testing.T) { f.FailPage(3, 500) }, // once: the lister does not retry a 500
				clear:     func() {},
			}
		},
	},
	{
		// FHIR servers send Subscription notifications, not webhooks with
		// an id of their own. This is the classic R4 rest-hook with the
		// resource (HAPI's PUT [endpoint]/Type/id): a notification that
		// fhirfake's SkipEventNumber swallows is lost without a trace,
		// exactly like a dropped webhook, since classic rest-hooks carry no
		// event numbers. (Topic-based notifications do, and the agent
		// notices the gap itself: TestReconcileFHIRGapsStartRuns.)
		name:      "fhir",
		connector: `{type: fhir, base_url: "%s", webhook_secret: "` + reconFHIRSecret + `", resources: [Appointment]}`,
		event:     "Appointment.create",
		fake: func(t *testing.T, late *reconLate, base, hook string, drop float64) reconSource {
			f := fhirfake.New()
			f.SetBaseURL(base)
			late.set(f)
			var sub string
			if hook != "" {
				var err error
				sub, err = f.Subscribe(fhirfake.Subscription{Endpoint: hook, Criteria: "Appointment", Content: fhirfake.ContentFullResource,
					Style: fhirfake.StyleClassic, Header: []string{"Authorization: Bearer " + reconFHIRSecret}})
				require.NoError(t, err)
			}
			rng := rand.New(rand.NewPCG(reconSeed, 0))
			start := time.Now().Add(72 * time.Hour).Truncate(time.Hour)
			return reconSource{
				create: func(t *testing.T, n int) []string {
					var ids []string
					for range n {
						if sub != "" && rng.Float64() < drop {
							f.SkipEventNumber(sub)
						}
						res, err := f.Create(reconAppointment(start))
						require.NoError(t, err)
						start = start.Add(30 * time.Minute)
						ids = append(ids, "Appointment/"+res["id"].(string)+"/_history/1") // docs/connectors/fhir.md, Events
					}
					return ids
				},
				dropped: func(*testing.T) []string {
					var ids []string
					for _, n := range f.Notifications() {
						if n.Skipped {
							ids = append(ids, n.Focus)
						}
					}
					return ids
				},
				sent: func(t *testing.T) int {
					n := 0
					for _, nt := range f.Notifications() {
						if !nt.Skipped {
							require.Equal(t, 200, nt.Status, "notification %s: %s", nt.Focus, nt.Err)
							n++
						}
					}
					return n
				},
				failPage3: func(*testing.T) {
					// The lister tries a page 4 times (5xx is transient); all 4 fail.
					f.Fail(fhirfake.Failure{Status: 500, Method: "GET", Page: 3, Times: 4})
				},
				clear: func() {},
			}
		},
	},
}

func reconAppointment(start time.Time) map[string]any {
	return map[string]any{
		"resourceType": "Appointment", "status": "booked",
		"start": start.UTC().Format(time.RFC3339), "end": start.Add(30 * time.Minute).UTC().Format(time.RFC3339),
		"participant": []any{map[string]any{"actor": map[string]any{"reference": "Patient/p1"}, "status": "accepted"}},
	}
}

// reconStart starts a fake behind a late handler and an agent whose source
// lists it; webhooks go to the agent when withHooks.
func reconStart(t *testing.T, k reconKind, withHooks bool, drop float64) (*reconAgent, reconSource) {
	t.Helper()
	late, base := reconStartLate(t)
	a := reconStartAgent(t, fmt.Sprintf(reconConfig, fmt.Sprintf(k.connector, base), k.event))
	hook := ""
	if withHooks {
		hook = a.hooks + "/hooks/src"
	}
	return a, k.fake(t, late, base, hook, drop)
}

// TestReconcileRecoversDroppedWebhooks (acceptance 1): each source's fake
// drops a seeded fifth of its webhooks; the agent receives the rest and
// delivers them; one reconcile run through the admin API recovers exactly
// the dropped ones, so every event reaches the sink exactly once (none of
// those that arrived by webhook is delivered again), and a second run
// recovers nothing.
func TestReconcileRecoversDroppedWebhooks(t *testing.T) {
	t.Parallel()
	const n = 60
	for _, k := range reconKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			a, src := reconStart(t, k, true, 0.2)
			ids := src.create(t, n)
			dropped := src.dropped(t)
			arrived := src.sent(t)
			t.Logf("%s: %d items, %d webhooks dropped, %d arrived", k.name, n, len(dropped), arrived)
			require.Equal(t, n, arrived+len(dropped))
			require.InDelta(t, n/5, len(dropped), n/10, "about a fifth dropped")
			require.Subset(t, ids, dropped)

			// What arrived by webhook is delivered; nothing else yet.
			a.waitSink(t, arrived)
			time.Sleep(100 * time.Millisecond)
			byEvent, _ := a.delivered(t)
			require.Len(t, byEvent, arrived)
			for _, id := range dropped {
				require.Zero(t, byEvent[id], "%s was dropped, yet delivered", id)
			}

			run := a.run(t, "recon")
			require.Empty(t, run.Error)
			require.Equal(t, "manual", run.Trigger)
			require.Equal(t, n, run.Listed)
			require.Equal(t, len(dropped), run.Recovered, "exactly the dropped webhooks are recovered")
			require.Equal(t, arrived, run.Known)
			require.False(t, run.WatermarkAfter.IsZero())

			a.waitSink(t, n)
			again := a.run(t, "recon")
			require.Empty(t, again.Error)
			require.Zero(t, again.Recovered, "a second run recovers nothing")
			require.Equal(t, n, again.Known)
			require.True(t, again.WatermarkBefore.Equal(run.WatermarkAfter.Truncate(time.Microsecond)))

			time.Sleep(300 * time.Millisecond) // anything extra the runs enqueued would arrive by now
			a.requireOnce(t, ids)
		})
	}
}

// TestReconcileFailedRunKeepsWatermark (acceptance 2): page 3 of a listing
// answers 500. The run records the error and stores what pages 1 and 2
// listed; the stored watermark stays where the last good run left it (read
// from the database itself, with the agent stopped); the next run, after a
// restart, starts from that watermark and recovers everything else. Every
// lister pages by 100, a size none of them lets you configure, so 250
// items make three pages. No webhooks: everything comes from the listing.
func TestReconcileFailedRunKeepsWatermark(t *testing.T) {
	t.Parallel()
	const first, total = 5, 250
	for _, k := range reconKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			a, src := reconStart(t, k, false, 0)
			ids := src.create(t, first)
			good := a.run(t, "recon")
			require.Empty(t, good.Error)
			require.Equal(t, first, good.Recovered)
			wm := good.WatermarkAfter.Truncate(time.Microsecond)
			require.False(t, wm.IsZero())
			a.waitSink(t, first)

			ids = append(ids, src.create(t, total-first)...)
			src.failPage3(t)
			failed := a.run(t, "recon")
			require.Contains(t, failed.Error, "500", "the run says why it failed")
			t.Logf("%s: the failed run: %s", k.name, failed.Error)
			require.Equal(t, 200, failed.Listed, "pages 1 and 2 were listed and stored")
			require.Equal(t, 200, failed.Known+failed.Recovered)
			require.True(t, failed.WatermarkBefore.Equal(wm))
			require.True(t, failed.WatermarkAfter.IsZero(), "a failed run moves no watermark")
			src.clear()

			// GET /api/reconcile/runs reports it, newest first.
			runs := a.runs(t)
			require.Len(t, runs, 2)
			require.Equal(t, failed.ID, runs[0].ID)
			require.Contains(t, runs[0].Error, "500")
			require.True(t, runs[0].WatermarkAfter.IsZero())
			require.Empty(t, runs[1].Error)

			// The store itself still holds the good run's watermark.
			a.waitSink(t, first+failed.Recovered)
			a.stop(t)
			require.True(t, a.watermark(t, "recon").Equal(wm), "the stored watermark is the last good run's")
			a.start(t)

			next := a.run(t, "recon")
			require.Empty(t, next.Error)
			require.True(t, next.WatermarkBefore.Equal(wm), "the next run starts from the old watermark")
			require.Equal(t, total, next.Listed)
			require.Equal(t, total-first-failed.Recovered, next.Recovered, "the next run recovers everything else")
			require.False(t, next.WatermarkAfter.Before(wm), "watermarks never move back") // Stripe's are whole seconds: may be equal

			a.waitSink(t, total)
			time.Sleep(300 * time.Millisecond)
			a.requireOnce(t, ids)
		})
	}
}

// TestReconcileFHIRGapsStartRuns is acceptance 1 for FHIR's topic-based
// notifications (Subscriptions R5 Backport on R4). There a lost
// notification is not silent: event numbers are consecutive, so the next
// notification (or a heartbeat, for lost ones at the end) shows the gap and
// the agent starts the source's reconciler itself (trigger "gap") before
// anyone runs it. Every Appointment is delivered exactly once, and a manual
// run afterwards recovers nothing.
func TestReconcileFHIRGapsStartRuns(t *testing.T) {
	t.Parallel()
	const n = 40
	var k reconKind
	for _, kk := range reconKinds {
		if kk.name == "fhir" {
			k = kk
		}
	}
	late, base := reconStartLate(t)
	a := reconStartAgent(t, fmt.Sprintf(reconConfig, fmt.Sprintf(k.connector, base), k.event))
	f := fhirfake.New()
	f.SetBaseURL(base)
	late.set(f)
	sub, err := f.Subscribe(fhirfake.Subscription{Endpoint: a.hooks + "/hooks/src", Criteria: "Appointment",
		Content: fhirfake.ContentFullResource, Style: fhirfake.StyleBackportR4, Header: []string{"Authorization: Bearer " + reconFHIRSecret}})
	require.NoError(t, err)
	hs, err := f.SendHandshake(sub)
	require.NoError(t, err)
	require.Equal(t, 200, hs.Status)

	gapRuns := func() []store.Run {
		var out []store.Run
		for _, r := range a.runs(t) {
			if r.Trigger == "gap" {
				require.Empty(t, r.Error)
				out = append(out, r)
			}
		}
		return out
	}
	waitGapRuns := func(want int) {
		require.Eventually(t, func() bool { return len(gapRuns()) == want }, 20*time.Second, 20*time.Millisecond,
			"want %d gap runs\n%s", want, a.logs)
	}

	rng := rand.New(rand.NewPCG(reconSeed, 1))
	start := time.Now().Add(72 * time.Hour).Truncate(time.Hour)
	var ids, skipped []string
	gaps, pending := 0, false
	for i := range n {
		skip := rng.Float64() < 0.2
		if skip {
			f.SkipEventNumber(sub)
		}
		res, err := f.Create(reconAppointment(start.Add(time.Duration(i) * 30 * time.Minute)))
		require.NoError(t, err)
		id := "Appointment/" + res["id"].(string) + "/_history/1"
		ids = append(ids, id)
		if skip {
			skipped, pending = append(skipped, id), true
			continue
		}
		if pending {
			// This notification's event number is beyond the last one seen:
			// its answer started a run. Wait for it, so runs do not pile up.
			gaps, pending = gaps+1, false
			waitGapRuns(gaps)
		}
	}
	if pending {
		// Lost at the end: only the heartbeat's count shows them.
		hb, err := f.SendHeartbeat(sub)
		require.NoError(t, err)
		require.Equal(t, 200, hb.Status)
		gaps++
		waitGapRuns(gaps)
	}
	t.Logf("%d appointments, %d notifications skipped, %d gap runs", n, len(skipped), gaps)
	require.NotEmpty(t, skipped)
	require.Positive(t, gaps)
	for _, nt := range f.Notifications() {
		require.True(t, nt.Skipped || nt.Status == 200, "notification %s #%d: %d %s", nt.Type, nt.EventNumber, nt.Status, nt.Err)
	}

	// The gap runs recovered every skipped notification. A gap run lists
	// the notification that revealed the gap too and may store it first
	// (the webhook then finds it known): at most one extra per run.
	recovered := reconSumRecovered(gapRuns())
	require.GreaterOrEqual(t, recovered, len(skipped))
	require.LessOrEqual(t, recovered, len(skipped)+gaps)
	a.waitSink(t, n)

	manual := a.run(t, "recon")
	require.Empty(t, manual.Error)
	require.Zero(t, manual.Recovered, "the gap runs left nothing to recover")
	require.Equal(t, n, manual.Known)
	time.Sleep(300 * time.Millisecond)
	a.requireOnce(t, ids)
	require.False(t, strings.Contains(a.logs.String(), `"level":"error"`), "no errors logged")
}

// TestReconcileCalcomExample walks examples/reconcile-calcom/README.md: the
// fake `clinicbridge fake calcom` serves (5 sample bookings whose webhooks
// were never sent), one webhook that did arrive (fixtures/arrived.json,
// signed as `send-test` signs it), then `reconcile run bookings`: listed 5,
// known 1, recovered 4, five confirmations in the outbox, one per booking;
// a second run recovers nothing.
func TestReconcileCalcomExample(t *testing.T) {
	t.Parallel()
	const example = "../../examples/reconcile-calcom"
	typ, ok := all.Registry().Lookup("calcom")
	require.True(t, ok)
	fake := httptest.NewServer(typ.Fake(io.Discard)) // what `clinicbridge fake calcom` serves
	t.Cleanup(fake.Close)

	// The example, with loopback ports of our own and the fake's address.
	dir := t.TempDir()
	require.NoError(t, os.CopyFS(dir, os.DirFS(example)))
	cfg, err := os.ReadFile(filepath.Join(dir, "clinicbridge.yaml"))
	require.NoError(t, err)
	text := string(cfg)
	for old, repl := range map[string]string{
		"listen: 127.0.0.1:8080": "listen: 127.0.0.1:0", "listen: 127.0.0.1:8081": "listen: 127.0.0.1:0",
		"base_url: http://127.0.0.1:9090": "base_url: " + fake.URL,
	} {
		require.Contains(t, text, old)
		text = strings.Replace(text, old, repl, 1)
	}
	path := filepath.Join(dir, "clinicbridge.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	a := reconStartAgentFile(t, path)

	// send-test --connector booking --payload fixtures/arrived.json
	payload, err := os.ReadFile(filepath.Join(dir, "fixtures", "arrived.json"))
	require.NoError(t, err)
	var node *yaml.Node
	for _, c := range a.agent.Config.Connectors {
		if c.Name == "booking" {
			node = c.Node
		}
	}
	h, body, err := typ.Sample(node, connectors.Env{Name: "booking", Dir: dir}, "", payload)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, a.hooks+"/hooks/booking", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	run := a.run(t, "bookings")
	require.Empty(t, run.Error)
	require.Equal(t, 5, run.Listed)
	require.Equal(t, 1, run.Known, "fixtures/arrived.json is the webhook of the fake's first sample booking")
	require.Equal(t, 4, run.Recovered)

	outbox := filepath.Join(dir, "data", "out.jsonl")
	lines := func() []string {
		b, _ := os.ReadFile(outbox)
		return strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' })
	}
	require.Eventually(t, func() bool { return len(lines()) == 5 }, 20*time.Second, 20*time.Millisecond, a.logs)
	require.Zero(t, a.run(t, "bookings").Recovered)
	time.Sleep(300 * time.Millisecond)
	seen := map[string]bool{}
	for _, l := range lines() {
		var d struct {
			EventID string `json:"event_id"`
		}
		require.NoError(t, json.Unmarshal([]byte(l), &d))
		require.False(t, seen[d.EventID], "%s delivered twice", d.EventID)
		seen[d.EventID] = true
	}
	require.Len(t, seen, 5)
}
