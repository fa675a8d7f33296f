package stripe_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/stripe"
)

// fuzzNow is the verifier's clock in the fuzz test; the seeds use it so the
// fuzzer starts inside the tolerance.
var fuzzNow = time.Unix(1793611805, 0)

// FuzzVerify feeds arbitrary Stripe-Signature headers and bodies to the
// verifier with stripe-go as the referee: it must never panic, never accept
// what stripe-go refuses, refuse what stripe-go accepts only because the
// timestamp is too old, and always accept a request signed with the secret.
func FuzzVerify(f *testing.F) {
	body := []byte(sampleBody)
	f.Add(stripe.Sign(secret, fuzzNow, body), body)
	f.Add("t=1793611805,v1=0000000000000000000000000000000000000000000000000000000000000000", body)
	f.Add("t=1793611805,v0=abc,v1=zz,v9=,v1=00", []byte(`{"id":"evt_1","type":"x"}`))
	f.Add("", []byte{})
	f.Add("t=,v1=", []byte("not json"))
	f.Add("t=-9223372036854775808,v1=00", []byte(`{}`))
	f.Add("t=9223372036854775807,v1=00", []byte(`{"id":"evt_1","type":"x","created":"soon"}`))
	f.Add("t=1793611805=,v1=00", []byte(`[]`))
	f.Add(" t=1793611805, v1=00", []byte(`{"id":"evt_1","type":"x","data":{"object":{"id":5}}}`))

	src, err := stripe.New(&stripe.Config{WebhookSecret: secret}, connectors.Env{Now: func() time.Time { return fuzzNow }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		h := http.Header{}
		h.Set("Stripe-Signature", header)
		r := &connectors.Request{Method: http.MethodPost, Header: h, Body: body}
		err := src.Verify(r)
		ref := webhook.ValidatePayloadIgnoringTolerance(body, header, secret)
		switch {
		case err == nil && ref != nil:
			t.Fatalf("accepted what stripe-go refuses (%v): header=%q", ref, header)
		case err != nil && ref == nil && !strings.Contains(err.Error(), "too old"):
			t.Fatalf("refused what stripe-go accepts: %v: header=%q", err, header)
		case err != nil:
			if !errors.Is(err, connectors.ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), strings.TrimPrefix(secret, "whsec_")) {
				t.Fatal("error leaks the secret")
			}
		}

		// Whatever arrived parses or is malformed, never anything else.
		if in, perr := src.Parse(r); perr != nil {
			if !errors.Is(perr, connectors.ErrMalformed) {
				t.Fatalf("parse error %v does not wrap ErrMalformed", perr)
			}
		} else if len(in.Events) != 1 || in.Events[0].ID == "" || in.Events[0].Type == "" {
			t.Fatalf("parse gave %+v", in)
		}

		// The same body signed with the secret always verifies.
		h.Set("Stripe-Signature", stripe.Sign(secret, fuzzNow, body))
		if err := src.Verify(&connectors.Request{Header: h, Body: body}); err != nil {
			t.Fatalf("a correctly signed request failed: %v", err)
		}
	})
}
