package pipeline

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/store"
	"github.com/clinicbridge/clinicbridge/mapping"
)

func mustExpr(t *testing.T, src string) *mapping.Expr {
	t.Helper()
	e, err := mapping.CompileExpr(src)
	require.NoError(t, err)
	return e
}

func event(typ, body string) connectors.Event {
	return connectors.Event{Source: "booking", ID: typ + "-1", Type: typ, Payload: json.RawMessage(body)}
}

func TestPlan(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	reminder := &Route{
		Name: "reminder", From: "booking", Events: []string{"CREATED", "RESCHEDULED"},
		When:     mustExpr(t, `payload.phone != nil`),
		Key:      mustExpr(t, `payload.uid`),
		At:       mustExpr(t, `date(payload.start) - duration("24h")`),
		CancelOn: []string{"CANCELLED"},
		Retry:    Retry{MaxAttempts: 3},
	}
	confirm := &Route{Name: "confirm", From: "booking", Events: []string{"CREATED"}, Retry: Retry{MaxAttempts: 8}}
	other := &Route{Name: "other", From: "elsewhere"}
	p := New(Params{Routes: []*Route{reminder, confirm, other}, Now: func() time.Time { return now }})

	t.Run("created: reminder scheduled, confirmation now, same key replaced", func(t *testing.T) {
		in := p.plan(event("CREATED", `{"uid":"b1","phone":"+44","start":"2026-12-03T14:30:00Z"}`), now)
		require.Equal(t, []store.Cancel{{Route: "reminder", Key: "b1", Reason: "replaced by CREATED CREATED-1"}}, in.Cancels)
		require.Len(t, in.Deliveries, 2)
		r, c := in.Deliveries[0], in.Deliveries[1]
		require.Equal(t, store.Scheduled, r.State)
		require.Equal(t, time.Date(2026, 12, 2, 14, 30, 0, 0, time.UTC), r.RunAt)
		require.Equal(t, "b1", r.Key)
		require.Equal(t, 3, r.MaxAttempts)
		require.Equal(t, DeliveryID("booking", "CREATED-1", "reminder", now), r.ID)
		require.Equal(t, store.Pending, c.State)
		require.Equal(t, 8, c.MaxAttempts)
	})
	t.Run("cancelled: cancels by the route's key, delivers nothing", func(t *testing.T) {
		in := p.plan(event("CANCELLED", `{"uid":"b1"}`), now)
		require.Empty(t, in.Deliveries)
		require.Equal(t, []store.Cancel{{Route: "reminder", Key: "b1", Reason: "cancelled by CANCELLED CANCELLED-1"}}, in.Cancels)
	})
	t.Run("a reschedule that replaces another key cancels the old key too", func(t *testing.T) {
		ev := event("RESCHEDULED", `{"uid":"b2","phone":"+44","start":"2026-12-04T10:00:00Z"}`)
		ev.Replaces = "b1"
		in := p.plan(ev, now)
		require.ElementsMatch(t, []string{"b1", "b2"}, []string{in.Cancels[0].Key, in.Cancels[1].Key})
		require.Len(t, in.Deliveries, 1)
		require.Equal(t, store.Scheduled, in.Deliveries[0].State)
	})
	t.Run("when false is skipped; an at in the past sends now", func(t *testing.T) {
		in := p.plan(event("CREATED", `{"uid":"b3","start":"2026-11-28T10:00:00Z"}`), now)
		require.Equal(t, store.Skipped, in.Deliveries[0].State)
		require.Equal(t, "when: false", in.Deliveries[0].Reason)
		in = p.plan(event("CREATED", `{"uid":"b3","phone":"+44","start":"2026-11-28T10:00:00Z"}`), now)
		require.Equal(t, store.Pending, in.Deliveries[0].State)
	})
	t.Run("an expression that fails makes the delivery dead with the reason", func(t *testing.T) {
		in := p.plan(event("CREATED", `{"uid":"b4","phone":"+44","start":"not a date"}`), now)
		require.Equal(t, store.Dead, in.Deliveries[0].State)
		require.Contains(t, in.Deliveries[0].Reason, "at: ")
		require.NotContains(t, in.Deliveries[0].Reason, "not a date", "reasons never carry payload values")
	})
	t.Run("events of other sources and types match nothing", func(t *testing.T) {
		in := p.plan(event("PAID", `{}`), now)
		require.Empty(t, in.Deliveries)
		require.Empty(t, in.Cancels)
	})
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	schedule := []time.Duration{time.Second, time.Minute}
	for range 100 {
		b := Backoff(schedule, 1)
		require.True(t, b >= 500*time.Millisecond && b <= time.Second, b)
		b = Backoff(schedule, 7) // past the end: the last step repeats
		require.True(t, b >= 30*time.Second && b <= time.Minute, b)
	}
}

func TestDeliveryIDsSortByPlanningTime(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	a := DeliveryID("s", "e1", "r", at)
	require.Equal(t, a, DeliveryID("s", "e1", "r", at))
	require.Len(t, a, len("dlv_")+24)
	require.NotEqual(t, a, DeliveryID("s", "e1", "r2", at))
	require.NotEqual(t, DeliveryID("s", "e1r", "", at), DeliveryID("s", "e1", "r", at), "fields are separated")
	// Later ids sort after earlier ones, whatever the hash part says,
	// including across every base32 digit boundary of the time part.
	prev := DeliveryID("zzz", "e", "r", at)
	for ms := 1; ms < 1<<12; ms++ {
		next := DeliveryID("s", fmt.Sprint(ms), "r", at.Add(time.Duration(ms)*time.Millisecond))
		require.Less(t, prev, next, "at +%d ms", ms)
		prev = next
	}
}

func TestIdempotencyKeyIsTheEventAndRoute(t *testing.T) {
	t.Parallel()
	k := IdempotencyKey("s", "e1", "r")
	// The value earlier versions sent (derived from the hash-only delivery
	// id): a remote that saw it before an upgrade still dedupes.
	require.Equal(t, "clinicbridge-dlv_2sqp5trfqdm577hiv3av37n2", k)
	require.NotEqual(t, k, IdempotencyKey("s", "e1", "r2"))
	require.NotEqual(t, IdempotencyKey("s", "e1r", ""), k, "fields are separated")
}

func TestQuietHours(t *testing.T) {
	t.Parallel()
	london, err := time.LoadLocation("Europe/London")
	require.NoError(t, err)
	q := &Quiet{Start: 21 * time.Hour, End: 8 * time.Hour, Loc: london}
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, london)
		require.NoError(t, err)
		return v
	}
	require.Equal(t, at("2026-11-29 08:00"), q.Defer(at("2026-11-28 22:30")), "evening moves to next morning")
	require.Equal(t, at("2026-11-29 08:00"), q.Defer(at("2026-11-29 03:00")), "small hours move to the morning")
	require.Equal(t, at("2026-11-29 12:00"), q.Defer(at("2026-11-29 12:00")), "daytime stays")
	require.Equal(t, at("2026-11-29 08:00"), q.Defer(at("2026-11-29 08:00")), "the end is outside the window")
	// Across the spring DST change the window end is still 08:00 local.
	require.Equal(t, at("2026-03-29 08:00"), q.Defer(at("2026-03-28 23:00")))
	lunch := &Quiet{Start: 12 * time.Hour, End: 13 * time.Hour, Loc: london}
	require.Equal(t, at("2026-11-29 13:00"), lunch.Defer(at("2026-11-29 12:15")))
	require.Equal(t, at("2026-11-29 11:00"), lunch.Defer(at("2026-11-29 11:00")))
	var none *Quiet
	require.Equal(t, at("2026-11-29 03:00"), none.Defer(at("2026-11-29 03:00")))
}

func TestPlanLateAndQuiet(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 28, 22, 0, 0, 0, time.UTC) // 22:00 in London (GMT)
	london, _ := time.LoadLocation("Europe/London")
	late := &Route{Name: "late", From: "booking", At: mustExpr(t, `date(payload.start)`), SkipLate: true}
	quiet := &Route{Name: "quiet", From: "booking", Quiet: &Quiet{Start: 21 * time.Hour, End: 8 * time.Hour, Loc: london}}
	p := New(Params{Routes: []*Route{late, quiet}})
	in := p.plan(event("CREATED", `{"start":"2026-11-28T10:00:00Z"}`), now)
	require.Equal(t, store.Skipped, in.Deliveries[0].State)
	require.Equal(t, "late", in.Deliveries[0].Reason)
	require.Equal(t, store.Scheduled, in.Deliveries[1].State, "an immediate send at 22:00 waits for the morning")
	require.Equal(t, time.Date(2026, 11, 29, 8, 0, 0, 0, london), in.Deliveries[1].RunAt)
}

func TestParseRate(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]float64{"10/s": 10, "60/min": 1, "3600/h": 1, "1.5 / s": 1.5} {
		got, err := ParseRate(in)
		require.NoError(t, err, in)
		require.InDelta(t, want, float64(got), 1e-9, in)
	}
	for _, bad := range []string{"10", "0/s", "-1/s", "ten/s", "10/fortnight"} {
		_, err := ParseRate(bad)
		require.Error(t, err, bad)
	}
}
