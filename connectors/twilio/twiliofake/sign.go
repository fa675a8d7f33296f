package twiliofake

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"sort"
	"strings"
)

// SignatureHeader is the header Twilio signs webhooks in.
const SignatureHeader = "X-Twilio-Signature"

// Sign returns the X-Twilio-Signature of a webhook to rawURL carrying the
// form params, as Twilio computes it: rawURL exactly as given, then each
// parameter's name and value with the names sorted (the values of a repeated
// name sorted too), HMAC-SHA1 keyed with the auth token, standard base64.
// For a GET webhook pass the URL with its query and no params.
//
// It is written apart from the connector's verifier on purpose, so each
// checks the other.
func Sign(authToken, rawURL string, params url.Values) string {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(rawURL)
	for _, k := range names {
		vs := append([]string(nil), params[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	m := hmac.New(sha1.New, []byte(authToken))
	m.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}
