package calendly

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"
)

// HeaderSignature carries Calendly's webhook signature: t=<unix>,v1=<hex>.
const HeaderSignature = "Calendly-Webhook-Signature"

func signedMAC(key []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Sign returns the Calendly-Webhook-Signature value for body sent at t:
// `t=<unix>,v1=<hex(HMAC-SHA256(key, "<unix>." + body))>`.
func Sign(key string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(signedMAC([]byte(key), ts, body))
}

// Headers returns the headers Calendly sends with a webhook body signed at t.
func Headers(key string, t time.Time, body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set(HeaderSignature, Sign(key, t, body))
	return h
}
