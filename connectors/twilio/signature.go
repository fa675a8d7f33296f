package twilio

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/url"
	"sort"
	"strings"
)

// SignatureHeader carries Twilio's webhook signature.
const SignatureHeader = "X-Twilio-Signature"

// validSignature reports whether sig is Twilio's signature of rawURL and
// params under key. The signed string is the URL followed by each POST
// parameter's name and value, sorted; the MAC is HMAC-SHA1, standard padded
// base64.
//
// It accepts the variants Twilio's own validators accept, and no others:
//   - the URL with an explicit default port (:443 for https, :80 otherwise)
//     and without any port, as twilio-go does, since Twilio's signing is
//     inconsistent there;
//   - parameters sorted by name, as Twilio documents and twilio-python and
//     twilio-node sign; and sorted as name+value strings, as twilio-go
//     validates. The two differ only where a name is a prefix of another
//     and the shorter one's value sorts after the rest of the longer name
//     (From=whatsapp:+1… next to FromCity).
//
// Verify refuses repeated names before calling it, so every variant covers
// every parameter.
func validSignature(key []byte, rawURL *url.URL, params url.Values, sig string) bool {
	if sig == "" {
		return false
	}
	byName, byPair := paramsByName(params), paramsByPair(params)
	seen := map[string]bool{}
	ok := false
	for _, u := range urlVariants(rawURL) {
		for _, p := range []string{byName, byPair} {
			s := u + p
			if seen[s] {
				continue
			}
			seen[s] = true
			m := hmac.New(sha1.New, key)
			m.Write([]byte(s))
			want := base64.StdEncoding.EncodeToString(m.Sum(nil))
			// Every candidate is compared, so the time taken does not say which matched.
			if subtle.ConstantTimeCompare([]byte(want), []byte(sig)) == 1 {
				ok = true
			}
		}
	}
	return ok
}

// paramsByName is the documented order: names sorted, each followed by its
// values (sorted when repeated).
func paramsByName(params url.Values) string {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		vs := append([]string(nil), params[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	return b.String()
}

// paramsByPair is twilio-go's order: the first value of each name, the
// name+value strings sorted.
func paramsByPair(params url.Values) string {
	pairs := make([]string, 0, len(params))
	for k, vs := range params {
		v := ""
		if len(vs) > 0 {
			v = vs[0]
		}
		pairs = append(pairs, k+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, "")
}

// urlVariants returns u with its default port made explicit and u without
// any port, as twilio-go's addPort and removePort make them (one of the two
// is u as given).
func urlVariants(u *url.URL) []string {
	with, without := *u, *u
	if u.Port() == "" {
		port := "80"
		if strings.EqualFold(u.Scheme, "https") {
			port = "443"
		}
		with.Host = net.JoinHostPort(u.Hostname(), port)
	} else {
		without.Host = u.Hostname()
		if strings.Contains(without.Host, ":") {
			without.Host = "[" + without.Host + "]"
		}
	}
	a, b := with.String(), without.String()
	if a == b {
		return []string{a}
	}
	return []string{a, b}
}
