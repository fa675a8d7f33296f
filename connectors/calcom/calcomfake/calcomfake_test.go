package calcomfake_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors/calcom/calcomfake"
)

var now = time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC)

func get(t *testing.T, srv *httptest.Server, path, key, version string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if version != "" {
		req.Header.Set("cal-api-version", version)
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]any
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &body))
	return resp, body
}

func TestAPI(t *testing.T) {
	t.Parallel()
	fake := calcomfake.New(calcomfake.WithClock(func() time.Time { return now }))
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	a, err := fake.Create(calcomfake.Booking{})
	require.NoError(t, err)
	_, err = fake.Create(calcomfake.Booking{Status: calcomfake.StatusPending})
	require.NoError(t, err)
	newUID, err := fake.Reschedule(a.UID, now.Add(72*time.Hour))
	require.NoError(t, err)

	resp, _ := get(t, srv, "/v2/bookings", "", calcomfake.APIVersion)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, body := get(t, srv, "/v2/bookings", calcomfake.DefaultAPIKey, "")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "cal-api-version is required")
	require.Equal(t, "error", body["status"])
	resp, _ = get(t, srv, "/v2/bookings?take=251", calcomfake.DefaultAPIKey, calcomfake.APIVersion)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	resp, body = get(t, srv, "/v2/bookings?take=2&skip=0&sortUpdatedAt=asc", calcomfake.DefaultAPIKey, calcomfake.APIVersion)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "120", resp.Header.Get("X-RateLimit-Limit-Default"))
	require.Equal(t, "success", body["status"])
	require.Len(t, body["data"], 2)
	pg := body["pagination"].(map[string]any)
	require.Equal(t, float64(3), pg["totalItems"])
	require.Equal(t, true, pg["hasNextPage"])

	_, body = get(t, srv, "/v2/bookings?status=cancelled", calcomfake.DefaultAPIKey, calcomfake.APIVersion)
	data := body["data"].([]any)
	require.Len(t, data, 1)
	old := data[0].(map[string]any)
	require.Equal(t, a.UID, old["uid"])
	require.Equal(t, newUID, old["rescheduledToUid"])

	_, body = get(t, srv, "/v2/bookings?bookingUid="+newUID, calcomfake.DefaultAPIKey, calcomfake.APIVersion)
	nb := body["data"].([]any)[0].(map[string]any)
	require.Equal(t, a.UID, nb["rescheduledFromUid"])
	require.Equal(t, "accepted", nb["status"])
	require.Equal(t, "2026-11-05T09:30:00.000Z", nb["start"])

	// No webhook URL: deliveries are recorded, not sent.
	ds := fake.Deliveries()
	require.Len(t, ds, 3)
	require.Equal(t, []string{"BOOKING_CREATED", "BOOKING_REQUESTED", "BOOKING_RESCHEDULED"}, []string{ds[0].Trigger, ds[1].Trigger, ds[2].Trigger})
	require.Equal(t, "no-secret-provided", ds[0].Header.Get("X-Cal-Signature-256"))
}

func TestRateLimitAndFailures(t *testing.T) {
	t.Parallel()
	clock := now
	fake := calcomfake.New(calcomfake.WithClock(func() time.Time { return clock }), calcomfake.WithRateLimit(1), calcomfake.WithAPIKey("k1"))
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	resp, _ := get(t, srv, "/v2/bookings", "k1", calcomfake.APIVersion)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, body := get(t, srv, "/v2/bookings", "k1", calcomfake.APIVersion)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, "0", resp.Header.Get("X-RateLimit-Remaining-Default"))
	require.Equal(t, "60", resp.Header.Get("X-RateLimit-Reset-Default"))
	require.Equal(t, "ThrottlerException", body["error"].(map[string]any)["code"])

	clock = clock.Add(time.Minute)
	fake.FailPage(2, http.StatusBadGateway)
	resp, _ = get(t, srv, "/v2/bookings?take=10&skip=10", "k1", calcomfake.APIVersion)
	require.Equal(t, http.StatusBadGateway, resp.StatusCode)
	require.Len(t, fake.Requests(), 3)
}

func TestWebhooksAndDrops(t *testing.T) {
	t.Parallel()
	var got []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		// assert, not require: this runs on the server's goroutine.
		assert.Equal(t, calcomfake.Sign("s3cret", b), r.Header.Get("X-Cal-Signature-256"))
		assert.Equal(t, "2021-10-20", r.Header.Get("X-Cal-Webhook-Version"))
		assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
		var env struct {
			TriggerEvent string `json:"triggerEvent"`
		}
		assert.NoError(t, json.Unmarshal(b, &env))
		got = append(got, env.TriggerEvent)
	}))
	t.Cleanup(hook.Close)
	run := func() ([]calcomfake.Delivery, []string) {
		got = nil
		fake := calcomfake.New(calcomfake.WithWebhook(hook.URL, "s3cret"), calcomfake.WithSeed(3))
		fake.DropShare(0.5)
		for i := 0; i < 20; i++ {
			b, err := fake.Create(calcomfake.Booking{})
			require.NoError(t, err)
			require.NoError(t, fake.Notify("MEETING_ENDED", b.UID))
		}
		return fake.Dropped(), append([]string(nil), got...)
	}
	dropped, sent := run()
	require.NotEmpty(t, dropped)
	require.Len(t, sent, 40-len(dropped))
	again, _ := run()
	require.Equal(t, len(dropped), len(again), "the seed makes drops repeatable")
	for i := range dropped {
		require.Equal(t, dropped[i].Trigger, again[i].Trigger)
	}
}
