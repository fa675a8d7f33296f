package calendly_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/calendly"
)

// FuzzVerifyCalendly feeds arbitrary Calendly-Webhook-Signature values and
// bodies to the verifier: it must never panic, never accept a request whose
// header does not carry the MAC of its own timestamp and body under the key,
// always accept a correctly signed fresh one, and fail only with
// ErrUnauthorized (verify) or ErrMalformed (parse), never echoing the key.
func FuzzVerifyCalendly(f *testing.F) {
	f.Add(calendly.Sign(secret, fixedNow, []byte(sampleBody)), []byte(sampleBody))
	f.Add("", []byte{})
	f.Add("t=1793611800", []byte(`{"event":"invitee.created","payload":{"uri":"u"}}`))
	f.Add("t=,v1=", []byte("not json"))
	f.Add("v1=00,t=-9223372036854775808,v1=zz", []byte(`{"event":"invitee.canceled","payload":{}}`))
	f.Add("t=9223372036854775807,v1="+strings.Repeat("a", 64), []byte(`{}`))
	f.Add("t=1793611800,t=1,v1="+strings.Repeat("0", 64), []byte(`{"event":"invitee.created","payload":{"uri":"u","old_invitee":"u"}}`))

	src, err := calendly.New(&calendly.Config{WebhookSecret: secret}, connectors.Env{Now: func() time.Time { return fixedNow }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, sig string, body []byte) {
		h := http.Header{}
		h.Set(calendly.HeaderSignature, sig)
		r := &connectors.Request{Method: http.MethodPost, Header: h, Body: body}
		if err := src.Verify(r); err == nil {
			if !carriesMAC(sig, body) {
				t.Fatalf("verified without the key: sig=%q", sig)
			}
		} else {
			if !errors.Is(err, connectors.ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatal("error leaks the key")
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
		if err := src.Verify(&connectors.Request{Header: calendly.Headers(secret, fixedNow, body), Body: body}); err != nil {
			t.Fatalf("a correctly signed request failed: %v", err)
		}
	})
}

// carriesMAC reports whether sig's first t= names a timestamp whose correct
// v1 (for this body, under the key) appears in sig: something a fuzzer cannot
// produce without the key.
func carriesMAC(sig string, body []byte) bool {
	for _, part := range strings.Split(sig, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || strings.TrimSpace(name) != "t" {
			continue
		}
		var sec int64
		for _, c := range strings.TrimSpace(val) {
			if c < '0' || c > '9' {
				return false
			}
			sec = sec*10 + int64(c-'0')
		}
		want := calendly.Sign(secret, time.Unix(sec, 0), body)
		return strings.Contains(strings.ToLower(sig), want[strings.Index(want, "v1=")+3:])
	}
	return false
}
