package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks header names (spec v1.0.0).
const (
	HeaderID        = "Webhook-Id"
	HeaderTimestamp = "Webhook-Timestamp"
	HeaderSignature = "Webhook-Signature"
)

const secretPrefix = "whsec_"

// decodeStandardSecret strips the optional whsec_ prefix and base64-decodes
// the rest. Errors never repeat the secret.
func decodeStandardSecret(secret string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, secretPrefix))
	if err != nil {
		return nil, errors.New("not a Standard Webhooks secret: expected whsec_ followed by base64")
	}
	if len(key) == 0 {
		return nil, errors.New("not a Standard Webhooks secret: the key is empty")
	}
	return key, nil
}

func standardMAC(key []byte, id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

func bodyMAC(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return m.Sum(nil)
}

// SignStandard signs body as a Standard Webhooks v1 sender would and returns
// the three headers to send with it. secret is `whsec_<base64>`.
func SignStandard(secret, id string, ts time.Time, body []byte) (http.Header, error) {
	key, err := decodeStandardSecret(secret)
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, errors.New("webhook id is empty")
	}
	sec := strconv.FormatInt(ts.Unix(), 10)
	h := http.Header{}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, sec)
	h.Set(HeaderSignature, "v1,"+base64.StdEncoding.EncodeToString(standardMAC(key, id, sec, body)))
	return h, nil
}

// SignHMAC signs body with HMAC-SHA256 under the raw secret and returns the
// one header h describes (defaults applied for empty fields).
func SignHMAC(secret string, h HMACConfig, body []byte) (http.Header, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	h = h.withDefaults()
	mac := bodyMAC([]byte(secret), body)
	var enc string
	if h.Encoding == EncodingBase64 {
		enc = base64.StdEncoding.EncodeToString(mac)
	} else {
		enc = hex.EncodeToString(mac)
	}
	out := http.Header{}
	out.Set(h.Header, h.Prefix+enc)
	return out, nil
}

// GenerateSecret returns a new Standard Webhooks secret: whsec_ and 32
// random bytes in base64.
func GenerateSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return secretPrefix + base64.StdEncoding.EncodeToString(b)
}
