package twilio_test

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/twilio"
	"github.com/clinicbridge/clinicbridge/connectors/twilio/twiliofake"
)

// FuzzVerifySignature feeds arbitrary URLs, bodies and signatures to the
// X-Twilio-Signature verifier: it must never panic, never accept a
// signature that is not the HMAC of that URL (a port variant) and those
// parameters under the token, and always accept one that is. Parse, on
// whatever arrives, fails only with ErrMalformed.
func FuzzVerifySignature(f *testing.F) {
	f.Add(vectorURL, []byte(vectorParams.Encode()), "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
	f.Add("https://mycompany.com:1234/myapp.php?foo=1&bar=2", []byte(vectorParams.Encode()), "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
	f.Add("https://bridge.example.clinic/hooks/sms", []byte("MessageSid=SM1&SmsStatus=received&From=%2B447700900123&Body=STOP"), "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	f.Add("http://[::1]:8080/hooks/sms?x=1", []byte("MessageSid=SM1&MessageStatus=delivered"), "")
	f.Add("", []byte{}, "====")
	f.Add("https://h/p", []byte("a=1&a=2;b"), "not base64 at all")

	src := vectorSource(f)
	f.Fuzz(func(t *testing.T, rawURL string, body []byte, sig string) {
		u, err := url.Parse(rawURL)
		if err != nil {
			return
		}
		h := http.Header{}
		h.Set(twilio.SignatureHeader, sig)
		r := &connectors.Request{Method: http.MethodPost, URL: u, Header: h, Body: body}
		params, perr := url.ParseQuery(string(body))

		if err := src.Verify(r); err == nil {
			if perr != nil || !expected(u, params)[h.Get(twilio.SignatureHeader)] {
				t.Fatalf("verified without the key: url=%q body=%q sig=%q", rawURL, body, sig)
			}
		} else {
			if !errors.Is(err, connectors.ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			if strings.Contains(err.Error(), "12345") {
				t.Fatal("error leaks the token")
			}
		}
		if _, err := src.Parse(r); err != nil && !errors.Is(err, connectors.ErrMalformed) {
			t.Fatalf("parse error %v does not wrap ErrMalformed", err)
		}

		// The same request signed with the token always verifies, unless a
		// name repeats (refused whatever the signature).
		if perr != nil || repeats(params) {
			return
		}
		h.Set(twilio.SignatureHeader, twiliofake.Sign("12345", u.String(), params))
		if err := src.Verify(r); err != nil {
			t.Fatalf("a correctly signed request failed: %v (url %q body %q)", err, rawURL, body)
		}
	})
}

// expected is every signature the verifier may accept for u and params:
// both parameter orders over both port forms.
func expected(u *url.URL, params url.Values) map[string]bool {
	out := map[string]bool{}
	for _, v := range twilio.URLVariants(u) {
		out[twiliofake.Sign("12345", v, params)] = true
		out[signByPair("12345", v, params)] = true
	}
	return out
}

func repeats(p url.Values) bool {
	for _, vs := range p {
		if len(vs) > 1 {
			return true
		}
	}
	return false
}
