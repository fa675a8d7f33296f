package calcom_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/calcom"
)

// FuzzVerifyCalcom feeds arbitrary X-Cal-Signature-256 values and bodies to
// the verifier: it must never panic, never accept a request it did not see
// signed with the secret, always accept one it did, and fail only with
// ErrUnauthorized (verify) or ErrMalformed (parse), never echoing the secret.
func FuzzVerifyCalcom(f *testing.F) {
	f.Add(calcom.Sign(secret, []byte(sampleBody)), []byte(sampleBody))
	f.Add("", []byte{})
	f.Add(calcom.NoSecretProvided, []byte(`{"triggerEvent":"PING","createdAt":"2026-11-02T09:00:00Z","payload":{}}`))
	f.Add("zz", []byte("not json"))
	f.Add(strings.Repeat("0", 64), []byte(`{"triggerEvent":"BOOKING_CREATED","payload":{"uid":1}}`))
	f.Add(" "+strings.Repeat("A", 64)+" ", []byte(`{"triggerEvent":"BOOKING_RESCHEDULED","payload":{"uid":"a","rescheduleUid":"a"}}`))

	src, err := calcom.New(&calcom.Config{WebhookSecret: secret}, connectors.Env{Now: func() time.Time { return fixedNow }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, sig string, body []byte) {
		h := http.Header{}
		h.Set(calcom.HeaderSignature, sig)
		r := &connectors.Request{Method: http.MethodPost, Header: h, Body: body}
		want := calcom.Sign(secret, body)
		if err := src.Verify(r); err == nil {
			if !strings.EqualFold(strings.TrimSpace(sig), want) {
				t.Fatalf("verified without the secret: sig=%q", sig)
			}
		} else {
			if !errors.Is(err, connectors.ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), want) {
				t.Fatal("error leaks the secret or the signature")
			}
		}
		in, err := src.Parse(r)
		if err != nil {
			if !errors.Is(err, connectors.ErrMalformed) {
				t.Fatalf("parse error %v does not wrap ErrMalformed", err)
			}
		} else if len(in.Events) != 1 || in.Events[0].ID == "" || in.Events[0].Type == "" {
			t.Fatalf("parse gave %+v", in)
		} else if in.Events[0].Replaces != "" && in.Events[0].Replaces == in.Events[0].Key {
			t.Fatal("an event replaces its own key")
		}
		if err := src.Verify(&connectors.Request{Header: calcom.Headers(secret, body), Body: body}); err != nil {
			t.Fatalf("a correctly signed request failed: %v", err)
		}
	})
}
