package stripe_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/stripe/stripe-go/v82/webhook"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/stripe"
	"github.com/clinicbridge/clinicbridge/connectors/stripe/stripefake"
)

const (
	secret      = "whsec_test_5f3a9c1e7b2d4a60b8e1c9f2a7d3e6b1"
	otherSecret = "whsec_test_00000000000000000000000000000000"
	apiKey      = "sk_test_51Hclinicbridge0000secretkey"
)

// sampleBody is a Stripe event as Stripe sends it (api_version on stripe-go
// v82's train, so webhook.ConstructEvent accepts it too).
const sampleBody = `{"id":"evt_1QclinicTest0001","object":"event","api_version":"2025-08-27.basil","created":1793611800,` +
	`"data":{"object":{"id":"pi_3QclinicTest0001","object":"payment_intent","amount":15000,"currency":"gbp",` +
	`"customer":"cus_Jane0001","receipt_email":"jane.example@example.com","metadata":{"clinic_patient_id":"P123","booking_id":"bk_81"}}},` +
	`"livemode":false,"pending_webhooks":1,"request":{"id":null,"idempotency_key":null},"type":"payment_intent.succeeded"}`

// now is the verifier's clock: 5 s after the sample event.
var now = time.Unix(1793611805, 0)

func clock() time.Time { return now }

func build(t *testing.T, cfg string, env connectors.Env) *stripe.Connector {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
	require.Empty(t, config.Check("c.yaml", doc.Content[0], stripe.Type().Fields, "connectors.payments"))
	if env.Name == "" {
		env.Name = "payments"
	}
	c, err := stripe.Type().Build(doc.Content[0], env)
	require.NoError(t, err)
	return c.(*stripe.Connector)
}

// signed signs body with stripe-go's test signer, the independent referee.
func signed(secret string, ts time.Time, body []byte) *connectors.Request {
	p := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: ts})
	h := http.Header{}
	h.Set("Stripe-Signature", p.Header)
	h.Set("Content-Type", "application/json; charset=utf-8")
	return &connectors.Request{Method: http.MethodPost, Header: h, Body: body}
}

func TestSourceContract(t *testing.T) {
	t.Parallel()
	src := build(t, "webhook_secret: "+secret, connectors.Env{Now: clock})
	connectortest.RunSource(t, connectortest.SourceHarness{
		Source: src,
		Body:   []byte(sampleBody),
		Sign: func(t *testing.T, body []byte) *connectors.Request {
			return signed(secret, now, body)
		},
		SignWrongSecret: func(t *testing.T, body []byte) *connectors.Request {
			return signed(otherSecret, now, body)
		},
		SignatureHeaders: []string{"Stripe-Signature"},
		SignStale: func(t *testing.T, body []byte) *connectors.Request {
			return signed(secret, now.Add(-301*time.Second), body)
		},
		Secrets: []string{secret, strings.TrimPrefix(secret, "whsec_")},
	})
}

func TestSignatures(t *testing.T) {
	t.Parallel()
	src := build(t, "webhook_secret: "+secret, connectors.Env{Now: clock})
	body := []byte(sampleBody)
	good := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: now})
	goodHex := strings.SplitN(good.Header, "v1=", 2)[1]
	wrong := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: otherSecret, Timestamp: now})
	wrongHex := strings.SplitN(wrong.Header, "v1=", 2)[1]
	ts := "t=1793611805"

	for _, tc := range []struct {
		name   string
		header string
		body   []byte
		ok     bool
	}{
		{"valid", good.Header, body, true},
		{"several v1, one valid (a rolled secret)", ts + ",v1=" + wrongHex + ",v1=" + goodHex, body, true},
		{"valid v1 after v0 and an unknown scheme", ts + ",v0=" + wrongHex + ",v9=abc,v1=" + goodHex, body, true},
		{"a v1 that is not hex is skipped", ts + ",v1=zz,v1=" + goodHex, body, true},
		{"the timestamp after the signatures", "v1=" + goodHex + "," + ts, body, true},
		{"a timestamp in the future (stripe-go only refuses old ones)", "", body, true},
		{"tampered body", good.Header, append([]byte(sampleBody[:len(sampleBody)-1]), ' ', '}'), false},
		{"wrong secret", wrong.Header, body, false},
		{"only v0", ts + ",v0=" + goodHex, body, false},
		{"no timestamp", "v1=" + goodHex, body, false},
		{"a part without =", ts + ",v1=" + goodHex + ",junk", body, false},
		{"a part with two =", ts + ",v1=" + goodHex + "=", body, false},
		{"empty", "", nil, false},
		{"stale: 301 s old", "", nil, false},
		{"at the edge: 300 s old", "", nil, true},
		{"secret base64-decoded is not the key", "", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			header, b := tc.header, tc.body
			switch tc.name {
			case "a timestamp in the future (stripe-go only refuses old ones)":
				header = webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: now.Add(time.Hour)}).Header
			case "stale: 301 s old":
				header, b = webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: now.Add(-301 * time.Second)}).Header, body
			case "at the edge: 300 s old":
				header, b = webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: now.Add(-300 * time.Second)}).Header, body
			case "secret base64-decoded is not the key":
				header, b = webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: strings.TrimPrefix(secret, "whsec_"), Timestamp: now}).Header, body
			}
			h := http.Header{}
			if header != "" {
				h.Set("Stripe-Signature", header)
			}
			err := src.Verify(&connectors.Request{Header: h, Body: b})
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, connectors.ErrUnauthorized)
				connectortest.NoLeak(t, err, secret, goodHex, wrongHex)
			}
			// stripe-go agrees (it judges time with the real clock, so only
			// where the timestamp is not the question).
			if b != nil && !strings.Contains(tc.name, "stale") && !strings.Contains(tc.name, "edge") {
				ref := webhook.ValidatePayloadIgnoringTolerance(b, header, secret)
				require.Equal(t, tc.ok, ref == nil, "stripe-go says %v", ref)
			}
		})
	}
}

func TestSignIsStripes(t *testing.T) {
	t.Parallel()
	h := stripe.Sign(secret, now, []byte(sampleBody))
	ref := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: []byte(sampleBody), Secret: secret, Timestamp: now})
	require.Equal(t, ref.Header, h)
}

func TestParse(t *testing.T) {
	t.Parallel()
	src := build(t, "webhook_secret: "+secret, connectors.Env{Now: clock})
	in, err := src.Parse(signed(secret, now, []byte(sampleBody)))
	require.NoError(t, err)
	require.Len(t, in.Events, 1)
	ev := in.Events[0]
	require.Equal(t, "evt_1QclinicTest0001", ev.ID)
	require.Equal(t, "payment_intent.succeeded", ev.Type)
	require.Equal(t, "pi_3QclinicTest0001", ev.Key)
	require.Equal(t, time.Unix(1793611800, 0).UTC(), ev.OccurredAt)
	require.JSONEq(t, sampleBody, string(ev.Payload), "the payload is the whole Stripe event")

	keyed := build(t, "{webhook_secret: "+secret+", event: {key: payload.data.object.metadata.booking_id}}", connectors.Env{Now: clock})
	in, err = keyed.Parse(signed(secret, now, []byte(sampleBody)))
	require.NoError(t, err)
	require.Equal(t, "bk_81", in.Events[0].Key)

	for _, bad := range []string{`[]`, `{"type":"x","created":1}`, `{"id":"evt_1","created":1}`, `{"id":1,"type":"x"}`, `not json`} {
		_, err := src.Parse(&connectors.Request{Body: []byte(bad)})
		require.ErrorIs(t, err, connectors.ErrMalformed, bad)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for cfg, want := range map[string]string{
		"api_key: sk_test_x":                                     "webhook_secret: required",
		"{webhook_secret: w, base_url: 'ftp://x'}":               "base_url",
		"{webhook_secret: w, base_url: 'https://u:p@x'}":         "base_url",
		"{webhook_secret: w, event: {key: 'payload.data.('}}":    "event.key",
		"{webhook_secret: w, event: {key: 'headers.x'}}":         "event.key",
		"{webhook_secret: whsec_topsecret, base_url: 'ftp://x'}": "base_url",
	} {
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
		_, err := stripe.Type().Build(doc.Content[0], connectors.Env{})
		require.ErrorContains(t, err, want, cfg)
		require.NotContains(t, err.Error(), "topsecret")
	}
}

func TestSample(t *testing.T) {
	t.Parallel()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte("webhook_secret: "+secret), &doc))
	h, body, err := stripe.Type().Sample(doc.Content[0], connectors.Env{}, "", nil)
	require.NoError(t, err)
	// stripe-go accepts it as a real webhook, API version included.
	ev, err := webhook.ConstructEvent(body, h.Get("Stripe-Signature"), secret)
	require.NoError(t, err)
	require.Equal(t, "payment_intent.succeeded", string(ev.Type))
	src := build(t, "webhook_secret: "+secret, connectors.Env{})
	r := &connectors.Request{Header: h, Body: body}
	require.NoError(t, src.Verify(r))
	in, err := src.Parse(r)
	require.NoError(t, err)
	require.Equal(t, "pi_3QfakeSample0001", in.Events[0].Key)

	_, body, err = stripe.Type().Sample(doc.Content[0], connectors.Env{}, "charge.refunded", []byte(`{"data":{"object":{"id":"ch_9"}}}`))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(body, &m))
	require.Equal(t, "charge.refunded", m["type"])
	require.True(t, strings.HasPrefix(m["id"].(string), "evt_"))
}

// listen127 serves h on 127.0.0.1 only.
func listen127(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// TestFakeWebhooksAreStripes checks the fake's webhooks with stripe-go's
// ConstructEvent (signature and API version) and with this connector.
func TestFakeWebhooksAreStripes(t *testing.T) {
	t.Parallel()
	src := build(t, "webhook_secret: "+secret, connectors.Env{})
	got := make(chan error, 1)
	hook := listen127(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, err := webhook.ConstructEvent(b, r.Header.Get("Stripe-Signature"), secret)
		if err == nil {
			err = src.Verify(&connectors.Request{Header: r.Header, Body: b})
		}
		got <- err
	}))
	fake := stripefake.New(stripefake.WithWebhook(hook.URL, secret))
	ev, err := fake.Emit(context.Background(), "charge.refunded", nil)
	require.NoError(t, err)
	require.NoError(t, <-got)
	require.Equal(t, http.StatusOK, ev.Status)
	require.False(t, ev.Dropped)
}
