package webhook_test

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/webhook"
)

// fuzzNow is the verifier's clock in the fuzz tests (2026-11-02T09:30:05Z);
// seeds use it so the fuzzer starts inside the tolerance.
var fuzzNow = time.Unix(1793611805, 0)

// FuzzVerifyStandard feeds arbitrary headers and bodies to the Standard
// Webhooks verifier: it must never panic, never accept a request it did not
// see signed with the key, and always accept one it did.
func FuzzVerifyStandard(f *testing.F) {
	ts := strconv.FormatInt(fuzzNow.Unix(), 10)
	f.Add("msg_1", ts, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"type":"x"}`))
	f.Add("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`))
	f.Add("", "", "", []byte{})
	f.Add("a.b", ts, "v1a,AAAA v1, v1,=== v2,abc  v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", []byte("not json"))
	f.Add("id", "-9223372036854775808", "v1,", []byte(`[]`))
	f.Add("id", "9223372036854775807", "v1,AA==", []byte(`{"type":1}`))

	src, err := webhook.New(&webhook.Config{WebhookSecret: secret}, connectors.Env{Now: func() time.Time { return fuzzNow }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set("Webhook-Id", id)
		h.Set("Webhook-Timestamp", ts)
		h.Set("Webhook-Signature", sig)
		r := &connectors.Request{Method: http.MethodPost, Header: h, Body: body}
		err := src.Verify(r)
		if err == nil {
			want, serr := webhook.SignStandard(secret, id, time.Unix(mustInt(t, ts), 0), body)
			if serr != nil || !carries(sig, strings.TrimPrefix(want.Get("Webhook-Signature"), "v1,")) {
				t.Fatalf("verified without the key: id=%q ts=%q sig=%q", id, ts, sig)
			}
		} else {
			if !errors.Is(err, connectors.ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			if strings.Contains(err.Error(), strings.TrimPrefix(secret, "whsec_")) {
				t.Fatal("error leaks the secret")
			}
		}
		checkParse(t, src, r)

		// The same request signed with the key always verifies.
		if id != "" {
			signed, err := webhook.SignStandard(secret, id, fuzzNow, body)
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Verify(&connectors.Request{Header: signed, Body: body}); err != nil {
				t.Fatalf("a correctly signed request failed: %v", err)
			}
		}
	})
}

// FuzzVerifyHMAC does the same for the plain HMAC verifier, hex with a
// prefix and base64 without.
func FuzzVerifyHMAC(f *testing.F) {
	f.Add("sha256=0000000000000000000000000000000000000000000000000000000000000000", []byte(`{"type":"x"}`), false)
	f.Add("", []byte{}, false)
	f.Add("SHA256=zz", []byte("not json"), false)
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", []byte(`{"type":"x"}`), true)
	f.Add("====", []byte(`{}`), true)

	hexCfg := webhook.HMACConfig{Header: "X-Hub-Signature-256", Prefix: "sha256="}
	b64Cfg := webhook.HMACConfig{Header: "X-Signature", Encoding: "base64"}
	newSrc := func(h webhook.HMACConfig) *webhook.Source {
		s, err := webhook.New(&webhook.Config{WebhookSecret: hmacSecret, Signature: "hmac", HMAC: &h}, connectors.Env{})
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	hexSrc, b64Src := newSrc(hexCfg), newSrc(b64Cfg)

	f.Fuzz(func(t *testing.T, sig string, body []byte, b64 bool) {
		src, cfg := hexSrc, hexCfg
		if b64 {
			src, cfg = b64Src, b64Cfg
		}
		h := http.Header{}
		h.Set(cfg.Header, sig)
		r := &connectors.Request{Header: h, Body: body}
		want, err := webhook.SignHMAC(hmacSecret, cfg, body)
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Verify(r); err == nil {
			if !carries(strings.ToLower(sig), strings.ToLower(strings.TrimPrefix(want.Get(cfg.Header), cfg.Prefix))) {
				t.Fatalf("verified without the key: sig=%q", sig)
			}
		} else {
			if !errors.Is(err, connectors.ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			if strings.Contains(err.Error(), hmacSecret) {
				t.Fatal("error leaks the secret")
			}
		}
		checkParse(t, src, r)
		if err := src.Verify(&connectors.Request{Header: want, Body: body}); err != nil {
			t.Fatalf("a correctly signed request failed: %v", err)
		}
	})
}

// checkParse parses whatever arrived: it may fail, only with ErrMalformed.
func checkParse(t *testing.T, src *webhook.Source, r *connectors.Request) {
	in, err := src.Parse(r)
	if err != nil {
		if !errors.Is(err, connectors.ErrMalformed) {
			t.Fatalf("parse error %v does not wrap ErrMalformed", err)
		}
		return
	}
	if len(in.Events) != 1 || in.Events[0].Type == "" {
		t.Fatalf("parse gave %+v", in)
	}
}

func mustInt(t *testing.T, s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("verified with a bad timestamp %q", s)
	}
	return n
}

// carries reports whether sig holds the first 40 characters of the encoded
// MAC: something a fuzzer cannot produce without the key. (Decoders may
// ignore a base64 string's trailing padding bits, so the last characters are
// not compared.)
func carries(sig, encodedMAC string) bool {
	return strings.Contains(sig, encodedMAC[:40])
}
