package webhook_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/webhook"
	"github.com/clinicbridge/clinicbridge/connectors/webhook/webhookfake"
)

const (
	secret      = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	otherSecret = "whsec_c2VjcmV0LW9mLWFub3RoZXItc2VuZGVyLTEyMzQ="
	hmacSecret  = "plain-hmac-secret-4f1d"
	sampleBody  = `{"type":"booking.created","timestamp":"2026-11-02T09:30:00Z","data":{"booking_id":"bk_81","patient":"Jane Example","phone":"+447700900123"}}`
)

var fixedNow = time.Date(2026, 11, 2, 9, 30, 5, 0, time.UTC)

// build decodes yamlSrc as a connector config and builds it through the
// type's Build, as the loader does.
func build(t *testing.T, yamlSrc string) *webhook.Source {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(yamlSrc), &doc))
	node := doc.Content[0]
	require.Empty(t, config.Check("test.yaml", node, webhook.Type().Fields, "connectors.inbox"))
	src, err := webhook.Type().Build(node, connectors.Env{Name: "inbox", Now: func() time.Time { return fixedNow }})
	require.NoError(t, err)
	return src.(*webhook.Source)
}

func standardRequest(t *testing.T, secret, id string, ts time.Time, body []byte) *connectors.Request {
	t.Helper()
	h, err := webhook.SignStandard(secret, id, ts, body)
	require.NoError(t, err)
	h.Set("Content-Type", "application/json")
	return &connectors.Request{Method: http.MethodPost, Header: h, Body: body}
}

func TestStandardContract(t *testing.T) {
	t.Parallel()
	connectortest.RunSource(t, connectortest.SourceHarness{
		Source: build(t, "webhook_secret: "+secret),
		Body:   []byte(sampleBody),
		Sign: func(t *testing.T, body []byte) *connectors.Request {
			return standardRequest(t, secret, "msg_1", fixedNow, body)
		},
		SignWrongSecret: func(t *testing.T, body []byte) *connectors.Request {
			return standardRequest(t, otherSecret, "msg_1", fixedNow, body)
		},
		SignatureHeaders: []string{"webhook-id", "webhook-timestamp", "webhook-signature"},
		SignStale: func(t *testing.T, body []byte) *connectors.Request {
			return standardRequest(t, secret, "msg_1", fixedNow.Add(-6*time.Minute), body)
		},
		Secrets: []string{secret, strings.TrimPrefix(secret, "whsec_")},
	})
}

func hmacContract(t *testing.T, cfg string, h webhook.HMACConfig) {
	connectortest.RunSource(t, connectortest.SourceHarness{
		Source: build(t, cfg),
		Body:   []byte(sampleBody),
		Sign: func(t *testing.T, body []byte) *connectors.Request {
			hd, err := webhook.SignHMAC(hmacSecret, h, body)
			require.NoError(t, err)
			return &connectors.Request{Method: http.MethodPost, Header: hd, Body: body}
		},
		SignWrongSecret: func(t *testing.T, body []byte) *connectors.Request {
			hd, err := webhook.SignHMAC("another-secret", h, body)
			require.NoError(t, err)
			return &connectors.Request{Method: http.MethodPost, Header: hd, Body: body}
		},
		SignatureHeaders: []string{orDefault(h.Header, webhook.DefaultHMACHeader)},
		Secrets:          []string{hmacSecret},
	})
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func TestHMACContract(t *testing.T) {
	t.Parallel()
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		hmacContract(t, "{webhook_secret: "+hmacSecret+", signature: hmac}", webhook.HMACConfig{})
	})
	t.Run("github style", func(t *testing.T) {
		t.Parallel()
		h := webhook.HMACConfig{Header: "X-Hub-Signature-256", Prefix: "sha256="}
		hmacContract(t, "{webhook_secret: "+hmacSecret+", signature: hmac, hmac: {header: X-Hub-Signature-256, prefix: sha256=}}", h)
	})
	t.Run("base64", func(t *testing.T) {
		t.Parallel()
		h := webhook.HMACConfig{Header: "X-Signature", Encoding: "base64"}
		hmacContract(t, "{webhook_secret: "+hmacSecret+", signature: hmac, hmac: {header: X-Signature, encoding: base64}}", h)
	})
}

func TestSignStandardMatchesReferenceVector(t *testing.T) {
	t.Parallel()
	// From the standard-webhooks reference Go library's TestWebhookSign.
	h, err := webhook.SignStandard(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	require.NoError(t, err)
	require.Equal(t, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", h.Get("webhook-signature"))
	require.Equal(t, "1614265330", h.Get("webhook-timestamp"))
	require.Equal(t, "msg_p5jXN8AQM9LWM0D4loKWxJek", h.Get("webhook-id"))
}

func TestStandardVerify(t *testing.T) {
	t.Parallel()
	src := build(t, "webhook_secret: "+secret)
	body := []byte(sampleBody)
	good := standardRequest(t, secret, "msg_1", fixedNow, body).Header.Get("webhook-signature")

	tests := []struct {
		name   string
		mutate func(h http.Header)
		ok     bool
		reason string
	}{
		{name: "valid", ok: true},
		{name: "rotation: any v1 matches", ok: true, mutate: func(h http.Header) {
			h.Set("webhook-signature", "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,AAAA "+good)
		}},
		{name: "extra spaces between signatures", ok: true, mutate: func(h http.Header) {
			h.Set("webhook-signature", "  v2,abc   "+good+"  ")
		}},
		{name: "only v1a", reason: "no v1 signature", mutate: func(h http.Header) {
			h.Set("webhook-signature", "v1a,"+strings.TrimPrefix(good, "v1,"))
		}},
		{name: "bad base64", reason: "not valid base64", mutate: func(h http.Header) { h.Set("webhook-signature", "v1,%%%") }},
		{name: "timestamp not a number", reason: "not unix seconds", mutate: func(h http.Header) { h.Set("webhook-timestamp", "2026-11-02") }},
		{name: "too old", reason: "too old", mutate: func(h http.Header) {
			h.Set("webhook-timestamp", "1614265330")
		}},
		{name: "too new", reason: "future", mutate: func(h http.Header) {
			h.Set("webhook-timestamp", "99999999999")
		}},
		{name: "missing id", reason: "missing webhook-id", mutate: func(h http.Header) { h.Del("webhook-id") }},
		{name: "another id", reason: "no v1 signature matches", mutate: func(h http.Header) { h.Set("webhook-id", "msg_2") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := standardRequest(t, secret, "msg_1", fixedNow, body)
			if tc.mutate != nil {
				tc.mutate(r.Header)
			}
			err := src.Verify(r)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, connectors.ErrUnauthorized)
			require.Contains(t, err.Error(), tc.reason)
			connectortest.NoLeak(t, err, secret, good, "Jane Example")
		})
	}
}

func TestToleranceBoundaries(t *testing.T) {
	t.Parallel()
	src := build(t, "{webhook_secret: "+secret+", tolerance: 30s}")
	for _, tc := range []struct {
		offset time.Duration
		ok     bool
	}{{-30 * time.Second, true}, {30 * time.Second, true}, {-31 * time.Second, false}, {31 * time.Second, false}} {
		err := src.Verify(standardRequest(t, secret, "msg_1", fixedNow.Add(tc.offset), []byte(sampleBody)))
		if tc.ok {
			require.NoError(t, err, "offset %s", tc.offset)
		} else {
			require.ErrorIs(t, err, connectors.ErrUnauthorized, "offset %s", tc.offset)
		}
	}
}

func TestSvixHeadersAndUnprefixedSecret(t *testing.T) {
	t.Parallel()
	src := build(t, "webhook_secret: "+strings.TrimPrefix(secret, "whsec_"))
	r := standardRequest(t, secret, "msg_svix", fixedNow, []byte(sampleBody))
	h := http.Header{}
	h.Set("svix-id", r.Header.Get("webhook-id"))
	h.Set("svix-timestamp", r.Header.Get("webhook-timestamp"))
	h.Set("svix-signature", r.Header.Get("webhook-signature"))
	r.Header = h
	require.NoError(t, src.Verify(r))
	in, err := src.Parse(r)
	require.NoError(t, err)
	require.Equal(t, "msg_svix", in.Events[0].ID)
}

func TestNonCanonicalHeaderKeys(t *testing.T) {
	t.Parallel()
	src := build(t, "webhook_secret: "+secret)
	r := standardRequest(t, secret, "msg_1", fixedNow, []byte(sampleBody))
	h := http.Header{}
	for k, v := range r.Header {
		h[strings.ToLower(k)] = v
	}
	r.Header = h
	require.NoError(t, src.Verify(r))
}

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	src := build(t, "webhook_secret: "+secret)
	in, err := src.Parse(standardRequest(t, secret, "msg_1", fixedNow, []byte(sampleBody)))
	require.NoError(t, err)
	require.Len(t, in.Events, 1)
	ev := in.Events[0]
	require.Equal(t, "msg_1", ev.ID)
	require.Equal(t, "booking.created", ev.Type)
	require.Empty(t, ev.Key)
	require.Equal(t, time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC), ev.OccurredAt)
	require.JSONEq(t, sampleBody, string(ev.Payload))
	require.Nil(t, in.Reply)

	t.Run("no timestamp: received now", func(t *testing.T) {
		t.Parallel()
		in, err := src.Parse(standardRequest(t, secret, "msg_1", fixedNow, []byte(`{"type":"x","timestamp":"yesterday"}`)))
		require.NoError(t, err)
		require.Equal(t, fixedNow, in.Events[0].OccurredAt)
	})
	for name, body := range map[string]string{
		"no type":      `{"data":{"patient":"Jane Example"}}`,
		"type number":  `{"type":7,"data":{"patient":"Jane Example"}}`,
		"array":        `[{"type":"x"}]`,
		"string":       `"Jane Example"`,
		"empty":        ``,
		"trailing":     `{"type":"x"} {"type":"y"}`,
		"not json":     `Jane Example`,
		"empty object": `{}`,
	} {
		t.Run(name+" is malformed", func(t *testing.T) {
			t.Parallel()
			_, err := src.Parse(standardRequest(t, secret, "msg_1", fixedNow, []byte(body)))
			require.ErrorIs(t, err, connectors.ErrMalformed)
			connectortest.NoLeak(t, err, "Jane Example")
		})
	}
}

func TestParseExpressions(t *testing.T) {
	t.Parallel()
	src := build(t, `
webhook_secret: `+hmacSecret+`
signature: hmac
event:
  id: headers["x-delivery-id"]
  type: '"booking." + payload.event'
  key: payload.data.booking_id
  occurred_at: payload.data.updated_at
`)
	body := []byte(`{"event":"moved","data":{"booking_id":"bk_81","updated_at":"2026-11-01T08:00:00+01:00","patient":"Jane Example"}}`)
	h, err := webhook.SignHMAC(hmacSecret, webhook.HMACConfig{}, body)
	require.NoError(t, err)
	h.Set("X-Delivery-Id", "dlv-42")
	r := &connectors.Request{Header: h, Body: body}
	require.NoError(t, src.Verify(r))
	in, err := src.Parse(r)
	require.NoError(t, err)
	ev := in.Events[0]
	require.Equal(t, "dlv-42", ev.ID)
	require.Equal(t, "booking.moved", ev.Type)
	require.Equal(t, "bk_81", ev.Key)
	require.Equal(t, time.Date(2026, 11, 1, 7, 0, 0, 0, time.UTC), ev.OccurredAt)

	t.Run("an expression that fails is malformed without values", func(t *testing.T) {
		t.Parallel()
		body := []byte(`{"event":"moved","data":{"updated_at":"Jane Example"}}`)
		h, err := webhook.SignHMAC(hmacSecret, webhook.HMACConfig{}, body)
		require.NoError(t, err)
		h.Set("X-Delivery-Id", "dlv-43")
		_, err = src.Parse(&connectors.Request{Header: h, Body: body})
		require.ErrorIs(t, err, connectors.ErrMalformed)
		require.Contains(t, err.Error(), "occurred_at")
		connectortest.NoLeak(t, err, "Jane Example")
	})
	t.Run("an empty id is malformed", func(t *testing.T) {
		t.Parallel()
		h, err := webhook.SignHMAC(hmacSecret, webhook.HMACConfig{}, body)
		require.NoError(t, err)
		_, err = src.Parse(&connectors.Request{Header: h, Body: body})
		require.ErrorIs(t, err, connectors.ErrMalformed)
	})
}

func TestHMACDefaultIDIsBodyHash(t *testing.T) {
	t.Parallel()
	src := build(t, "{webhook_secret: "+hmacSecret+", signature: hmac}")
	body := []byte(sampleBody)
	sum := sha256.Sum256(body)
	var ids []string
	for range 2 { // a resend of the same body is the same event
		h, err := webhook.SignHMAC(hmacSecret, webhook.HMACConfig{}, body)
		require.NoError(t, err)
		in, err := src.Parse(&connectors.Request{Header: h, Body: body})
		require.NoError(t, err)
		ids = append(ids, in.Events[0].ID)
	}
	require.Equal(t, []string{hex.EncodeToString(sum[:]), hex.EncodeToString(sum[:])}, ids)
}

func TestHMACPrefixAndEncoding(t *testing.T) {
	t.Parallel()
	src := build(t, "{webhook_secret: "+hmacSecret+", signature: hmac, hmac: {header: X-Hub-Signature-256, prefix: sha256=}}")
	body := []byte(sampleBody)
	h, err := webhook.SignHMAC(hmacSecret, webhook.HMACConfig{Header: "X-Hub-Signature-256", Prefix: "sha256="}, body)
	require.NoError(t, err)
	v := h.Get("X-Hub-Signature-256")
	require.True(t, strings.HasPrefix(v, "sha256="))

	for name, tc := range map[string]struct {
		value string
		ok    bool
	}{
		"as signed":          {v, true},
		"upper-case hex":     {"sha256=" + strings.ToUpper(strings.TrimPrefix(v, "sha256=")), true},
		"upper-case prefix":  {"SHA256=" + strings.TrimPrefix(v, "sha256="), true},
		"no prefix":          {strings.TrimPrefix(v, "sha256="), false},
		"not hex":            {"sha256=zz", false},
		"truncated":          {v[:len(v)-2], false},
		"sha1 of the secret": {"sha256=" + strings.Repeat("0", 64), false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			hd := http.Header{}
			hd.Set("X-Hub-Signature-256", tc.value)
			err := src.Verify(&connectors.Request{Header: hd, Body: body})
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, connectors.ErrUnauthorized)
				connectortest.NoLeak(t, err, hmacSecret, v)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		cfg  webhook.Config
		want string
	}{
		"no secret":              {webhook.Config{}, "webhook_secret: required"},
		"secret not base64":      {webhook.Config{WebhookSecret: "whsec_not base64!"}, "webhook_secret: not a Standard Webhooks secret"},
		"hmac block on standard": {webhook.Config{WebhookSecret: secret, HMAC: &webhook.HMACConfig{}}, "hmac: only applies"},
		"tolerance on hmac":      {webhook.Config{WebhookSecret: "x", Signature: "hmac", Tolerance: ptr(config.Duration(time.Minute))}, "tolerance: only applies"},
		"bad encoding":           {webhook.Config{WebhookSecret: "x", Signature: "hmac", HMAC: &webhook.HMACConfig{Encoding: "b32"}}, "hmac.encoding"},
		"bad header":             {webhook.Config{WebhookSecret: "x", Signature: "hmac", HMAC: &webhook.HMACConfig{Header: "X Sig"}}, "hmac.header"},
		"bad scheme":             {webhook.Config{WebhookSecret: secret, Signature: "ed25519"}, "signature:"},
		"bad expression":         {webhook.Config{WebhookSecret: secret, Event: webhook.EventExprs{Key: "payload.("}}, "event.key:"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			require.ErrorContains(t, err, tc.want)
			connectortest.NoLeak(t, err, "not base64!")
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestConfigCheckRejectsUnknownAndEnum(t *testing.T) {
	t.Parallel()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte("{webhook_secret: x, signature: rsa, hmac: {headr: X}}"), &doc))
	errs := config.Check("c.yaml", doc.Content[0], webhook.Type().Fields, "connectors.inbox")
	require.Len(t, errs, 2)
	require.ErrorContains(t, config.Errors(errs), `"rsa" is not one of standard, hmac`)
	require.ErrorContains(t, config.Errors(errs), `did you mean "header"`)
}

func TestGenerateSecret(t *testing.T) {
	t.Parallel()
	s := webhook.GenerateSecret()
	require.True(t, strings.HasPrefix(s, "whsec_"))
	require.NotEqual(t, s, webhook.GenerateSecret())
	require.NoError(t, (&webhook.Config{WebhookSecret: s}).Validate())
}

// TestSenderEndToEnd posts through webhookfake to a handler using the source,
// as the server will.
func TestSenderEndToEnd(t *testing.T) {
	t.Parallel()
	src := build(t, "webhook_secret: "+secret)
	var got []connectors.Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &connectors.Request{Method: r.Method, URL: r.URL, Header: r.Header, Body: body}
		if err := src.Verify(req); err != nil {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		in, err := src.Parse(req)
		if err != nil {
			http.Error(w, "malformed", http.StatusBadRequest)
			return
		}
		got = append(got, in.Events...)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)

	s := webhookfake.NewSender(secret)
	s.Now = func() time.Time { return fixedNow }
	send := func(opts ...webhookfake.Option) int {
		resp, err := s.Send(context.Background(), srv.URL, "booking.created", []byte(`{"booking_id":"bk_81"}`), opts...)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusNoContent, send(webhookfake.WithID("msg_a")))
	require.Equal(t, http.StatusNoContent, send(webhookfake.WithID("msg_a"))) // a resend
	require.Equal(t, http.StatusUnauthorized, send(webhookfake.CorruptSignature()))
	require.Equal(t, http.StatusUnauthorized, send(webhookfake.Stale()))
	require.Equal(t, http.StatusUnauthorized, send(webhookfake.OmitHeaders()))
	require.Equal(t, http.StatusUnauthorized, send(webhookfake.OmitHeaders("webhook-timestamp")))
	require.Equal(t, http.StatusUnauthorized, send(webhookfake.WrongSecret(otherSecret)))
	require.Equal(t, http.StatusBadRequest, send(webhookfake.Raw(), webhookfake.WithID("msg_raw")))

	require.Len(t, got, 2)
	require.Equal(t, got[0].ID, got[1].ID)
	require.Equal(t, "booking.created", got[0].Type)
	require.Equal(t, fixedNow, got[0].OccurredAt)
	require.JSONEq(t, `{"type":"booking.created","timestamp":"2026-11-02T09:30:05Z","data":{"booking_id":"bk_81"}}`, string(got[0].Payload))
}

func TestHMACSenderCorruption(t *testing.T) {
	t.Parallel()
	for _, h := range []webhook.HMACConfig{{}, {Encoding: "base64"}, {Header: "X-Hub-Signature-256", Prefix: "sha256="}} {
		src, err := webhook.New(&webhook.Config{WebhookSecret: hmacSecret, Signature: "hmac", HMAC: &h}, connectors.Env{})
		require.NoError(t, err)
		s := &webhookfake.Sender{Secret: hmacSecret, HMAC: &h}
		for _, corrupt := range []bool{false, true} {
			var opts []webhookfake.Option
			if corrupt {
				opts = append(opts, webhookfake.CorruptSignature())
			}
			req, err := s.Request(context.Background(), "http://127.0.0.1/hooks/inbox", "x", nil, opts...)
			require.NoError(t, err)
			body, _ := io.ReadAll(req.Body)
			err = src.Verify(&connectors.Request{Header: req.Header, Body: body})
			if corrupt {
				require.ErrorIs(t, err, connectors.ErrUnauthorized, "%+v", h)
			} else {
				require.NoError(t, err, "%+v", h)
			}
		}
	}
}
