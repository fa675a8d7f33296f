package stripe

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries Stripe's webhook signature.
const SignatureHeader = "Stripe-Signature"

// DefaultTolerance is how old a signature's timestamp may be (stripe-go's
// webhook.DefaultTolerance). Timestamps in the future are not rejected,
// as in stripe-go.
const DefaultTolerance = 300 * time.Second

// mac is HMAC-SHA256 over "<t>.<body>" keyed with the whole secret string,
// whsec_ prefix included (it is not base64-decoded).
func mac(secret, t string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(t))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Sign returns a Stripe-Signature header value for body, signed at ts with
// secret, exactly as Stripe builds it: t=<unix>,v1=<hex>.
func Sign(secret string, ts time.Time, body []byte) string {
	t := strconv.FormatInt(ts.Unix(), 10)
	return "t=" + t + ",v1=" + hex.EncodeToString(mac(secret, t, body))
}

// verify checks a Stripe-Signature header value the way stripe-go does:
// the header is split on "," and each part on "="; a part that is not
// exactly key=value makes the header invalid; t is unix seconds; every v1
// is a candidate (v1 values that are not hex, v0 and unknown schemes are
// ignored); the request verifies if any v1 matches; a timestamp older than
// tolerance is refused.
func verify(secret, hdr string, body []byte, now time.Time, tolerance time.Duration) error {
	if hdr == "" {
		return unauthorized("missing Stripe-Signature header")
	}
	var (
		hasTS   bool
		sigs    [][]byte
		sawV1   bool
		tsValue int64
	)
	for _, part := range strings.Split(hdr, ",") {
		kv := strings.Split(part, "=")
		if len(kv) != 2 {
			return unauthorized("Stripe-Signature is not a list of key=value pairs")
		}
		switch kv[0] {
		case "t":
			n, err := strconv.ParseInt(kv[1], 10, 64)
			if err != nil {
				return unauthorized("Stripe-Signature t is not unix seconds")
			}
			tsValue, hasTS = n, true
		case "v1":
			sawV1 = true
			if b, err := hex.DecodeString(kv[1]); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	switch {
	case !sawV1:
		return unauthorized("Stripe-Signature has no v1 signature")
	case len(sigs) == 0:
		return unauthorized("Stripe-Signature has no v1 signature in hex")
	case !hasTS:
		return unauthorized("Stripe-Signature has no timestamp")
	}
	if now.Sub(time.Unix(tsValue, 0)) > tolerance {
		return unauthorized("Stripe-Signature timestamp is too old (outside the 300 s tolerance)")
	}
	// stripe-go signs the timestamp as it formats it (t=+0042 is signed as
	// "42"); so does this, so the two accept exactly the same headers.
	want := mac(secret, strconv.FormatInt(tsValue, 10), body)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return nil
		}
	}
	return unauthorized("no v1 signature matches")
}
