package calcom

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
)

// Webhook headers Cal.com sends (webhook payload version 2021-10-20).
const (
	HeaderSignature      = "X-Cal-Signature-256"
	HeaderWebhookVersion = "X-Cal-Webhook-Version"
	WebhookVersion       = "2021-10-20"
	// NoSecretProvided is what Cal.com puts in X-Cal-Signature-256 when the
	// webhook has no secret.
	NoSecretProvided = "no-secret-provided"
)

func bodyMAC(secret, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return m.Sum(nil)
}

// Sign returns the X-Cal-Signature-256 value Cal.com sends for body:
// hex(HMAC-SHA256(secret, body)).
func Sign(secret string, body []byte) string {
	return hex.EncodeToString(bodyMAC([]byte(secret), body))
}

// Headers returns the headers Cal.com sends with a webhook body signed with secret.
func Headers(secret string, body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(HeaderSignature, Sign(secret, body))
	h.Set(HeaderWebhookVersion, WebhookVersion)
	return h
}
