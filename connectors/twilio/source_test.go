package twilio_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/twilio"
	"github.com/clinicbridge/clinicbridge/connectors/twilio/twiliofake"
)

const (
	hookURL    = "https://bridge.example.clinic/hooks/sms"
	inboundSID = "SM0123456789abcdef0123456789abcdef"
)

func inboundBody(body string) []byte {
	return []byte(twiliofake.InboundParams(account, inboundSID, patient, clinic, body).Encode())
}

func statusBody(status string, errorCode int) []byte {
	m := twiliofake.Message{SID: "SMfeedfacefeedfacefeedfacefeedface", AccountSID: account, To: patient, From: clinic}
	return []byte(twiliofake.StatusParams(m, status, errorCode, fixedNow).Encode())
}

// signed returns a POST to rawURL carrying body, signed with tok.
func signed(t *testing.T, tok, rawURL string, body []byte) *connectors.Request {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	params, err := url.ParseQuery(string(body))
	require.NoError(t, err)
	h := http.Header{}
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	h.Set(twilio.SignatureHeader, twiliofake.Sign(tok, rawURL, params))
	return &connectors.Request{Method: http.MethodPost, URL: u, Header: h, Body: body}
}

func source(t *testing.T, st connectors.State) *twilio.Connector {
	t.Helper()
	env := connectors.Env{Name: "sms", PublicURL: "https://bridge.example.clinic", Now: func() time.Time { return fixedNow }}
	if st != nil {
		env.State = st
	}
	return build(t, "{account_sid: "+account+", auth_token: "+token+", from: '"+clinic+"'}", env)
}

func TestSourceContract(t *testing.T) {
	t.Parallel()
	connectortest.RunSource(t, connectortest.SourceHarness{
		Source: source(t, newMemState()),
		Body:   inboundBody("Yes, see you then"),
		Sign: func(t *testing.T, body []byte) *connectors.Request {
			return signed(t, token, hookURL, body)
		},
		SignWrongSecret: func(t *testing.T, body []byte) *connectors.Request {
			return signed(t, "0000000000000000000000000000beef", hookURL, body)
		},
		SignatureHeaders: []string{twilio.SignatureHeader},
		Secrets:          []string{token},
		PayloadValues:    []string{patient, "Yes, see you then"},
	})
}

// twilio-go's request_validator_test vectors (auth token 12345).
var (
	vectorParams = url.Values{
		"Digits": {"1234"}, "CallSid": {"CA1234567890ABCDE"}, "To": {"+18005551212"},
		"Caller": {"+14158675309"}, "From": {"+14158675309"},
	}
	vectorURL = "https://mycompany.com/myapp.php?foo=1&bar=2"
)

func vectorSource(t testing.TB) *twilio.Connector {
	return build(t, "{account_sid: AC1, auth_token: '12345', from: x}", connectors.Env{Name: "sms"})
}

func TestSignatureVectors(t *testing.T) {
	t.Parallel()
	require.Equal(t, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", twiliofake.Sign("12345", vectorURL, vectorParams))
	p := url.Values{}
	for k, v := range vectorParams {
		p[k] = v
	}
	p.Set("Caller", "+14158675310")
	p.Set("From", "+14158675310")
	require.Equal(t, "GvWf1cFY/Q7PnoempGyD5oXAezc=", twiliofake.Sign("12345", vectorURL, p), "Twilio's docs example")

	src := vectorSource(t)
	body := []byte(vectorParams.Encode())
	for _, tc := range []struct {
		url, sig string
		ok       bool
	}{
		{vectorURL, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", true},
		{"https://mycompany.com:1234/myapp.php?foo=1&bar=2", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", true}, // port removed
		{vectorURL, "kvajT1Ptam85bY51eRf/AJRuM3w=", true},                                          // signed with :443
		{"http://mycompany.com/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4=", true},
		{"http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=", true},
		{vectorURL, "WRONG SIGNATURE", false},
		{"http://mycompany.com/myapp.php?foo=1&bar=2", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", false}, // scheme is signed
		{"https://mycompany.com/myapp.php?foo=1&bar=3", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", false},
	} {
		u, err := url.Parse(tc.url)
		require.NoError(t, err)
		h := http.Header{}
		h.Set(twilio.SignatureHeader, tc.sig)
		err = src.Verify(&connectors.Request{Method: http.MethodPost, URL: u, Header: h, Body: body})
		if tc.ok {
			require.NoError(t, err, "%s %s", tc.url, tc.sig)
		} else {
			require.ErrorIs(t, err, connectors.ErrUnauthorized, "%s %s", tc.url, tc.sig)
		}
	}
}

// signByPair signs as twilio-go validates: name+value strings sorted.
func signByPair(tok, rawURL string, params url.Values) string {
	var pairs []string
	for k, vs := range params {
		pairs = append(pairs, k+vs[0])
	}
	sort.Strings(pairs)
	m := hmac.New(sha1.New, []byte(tok))
	m.Write([]byte(rawURL + strings.Join(pairs, "")))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func TestSignatureParameterOrders(t *testing.T) {
	t.Parallel()
	src := source(t, nil)
	params := twiliofake.InboundParams(account, inboundSID, "whatsapp:+447700900123", "whatsapp:"+clinic, "hi")
	params.Set("FromCity", "LONDON")
	byName, byPair := twiliofake.Sign(token, hookURL, params), signByPair(token, hookURL, params)
	require.NotEqual(t, byName, byPair, "the orders differ for From=whatsapp:… next to FromCity")
	u, _ := url.Parse(hookURL)
	for _, sig := range []string{byName, byPair} {
		h := http.Header{}
		h.Set(twilio.SignatureHeader, sig)
		require.NoError(t, src.Verify(&connectors.Request{Method: http.MethodPost, URL: u, Header: h, Body: []byte(params.Encode())}))
	}
}

func TestSignatureRejects(t *testing.T) {
	t.Parallel()
	src := source(t, nil)
	body := inboundBody("Yes, see you then")
	good := signed(t, token, hookURL, body)
	require.NoError(t, src.Verify(good))

	with := func(f func(r *connectors.Request)) *connectors.Request {
		r := *good
		r.Header = good.Header.Clone()
		u := *good.URL
		r.URL = &u
		f(&r)
		return &r
	}
	for name, r := range map[string]*connectors.Request{
		"tampered param": with(func(r *connectors.Request) {
			r.Body = []byte(strings.Replace(string(body), "Yes", "STOP", 1))
		}),
		"added param":    with(func(r *connectors.Request) { r.Body = append(append([]byte{}, body...), "&Extra=1"...) }),
		"repeated param": with(func(r *connectors.Request) { r.Body = append(append([]byte{}, body...), "&Body=STOP"...) }),
		"removed param": with(func(r *connectors.Request) {
			p, _ := url.ParseQuery(string(body))
			p.Del("To")
			r.Body = []byte(p.Encode())
		}),
		"wrong token":    signed(t, "not-the-token", hookURL, body),
		"missing header": with(func(r *connectors.Request) { r.Header.Del(twilio.SignatureHeader) }),
		"empty header":   with(func(r *connectors.Request) { r.Header.Set(twilio.SignatureHeader, "") }),
		"corrupt header": with(func(r *connectors.Request) {
			r.Header.Set(twilio.SignatureHeader, "A"+r.Header.Get(twilio.SignatureHeader)[1:])
		}),
		"other path":      with(func(r *connectors.Request) { r.URL.Path = "/hooks/other" }),
		"other host":      with(func(r *connectors.Request) { r.URL.Host = "evil.example" }),
		"query added":     with(func(r *connectors.Request) { r.URL.RawQuery = "x=1" }),
		"no url":          with(func(r *connectors.Request) { r.URL = nil }),
		"not form":        with(func(r *connectors.Request) { r.Body = []byte("%zz") }),
		"signed as a GET": with(func(r *connectors.Request) { r.Method = http.MethodGet }),
	} {
		err := src.Verify(r)
		require.ErrorIs(t, err, connectors.ErrUnauthorized, name)
		connectortest.NoLeak(t, err, token, good.Header.Get(twilio.SignatureHeader), patient, "Yes, see you then")
	}
}

func TestGETWebhook(t *testing.T) {
	t.Parallel()
	src := source(t, newMemState())
	q := twiliofake.InboundParams(account, inboundSID, patient, clinic, "hello")
	full := hookURL + "?" + q.Encode()
	u, err := url.Parse(full)
	require.NoError(t, err)
	h := http.Header{}
	h.Set(twilio.SignatureHeader, twiliofake.Sign(token, full, nil))
	r := &connectors.Request{Method: http.MethodGet, URL: u, Header: h}
	require.NoError(t, src.Verify(r))
	in, err := src.Parse(r)
	require.NoError(t, err)
	require.Len(t, in.Events, 1)
	require.Equal(t, inboundSID, in.Events[0].ID)
}

func TestParseStatusCallback(t *testing.T) {
	t.Parallel()
	st := newMemState()
	src := source(t, st)
	parse := func(body []byte) connectors.Inbound {
		r := signed(t, token, hookURL, body)
		require.NoError(t, src.Verify(r))
		in, err := src.Parse(r)
		require.NoError(t, err)
		require.Empty(t, in.Events)
		require.Nil(t, in.Reply)
		return in
	}
	sid := "SMfeedfacefeedfacefeedfacefeedface"
	require.Equal(t, []connectors.ReceiptUpdate{{ExternalID: sid, Status: "sent", Rank: 4}}, parse(statusBody("sent", 0)).Receipts)
	require.Equal(t, []connectors.ReceiptUpdate{{ExternalID: sid, Status: "delivered", Rank: 5}}, parse(statusBody("delivered", 0)).Receipts)
	require.Empty(t, parse(statusBody("teleported", 0)).Receipts, "unknown statuses update nothing")
	require.Empty(t, st.keys())

	// Legacy callbacks carry only SmsSid / SmsStatus.
	legacy := url.Values{"SmsSid": {sid}, "SmsStatus": {"queued"}, "AccountSid": {account}}
	require.Equal(t, []connectors.ReceiptUpdate{{ExternalID: sid, Status: "queued", Rank: 2}}, parse([]byte(legacy.Encode())).Receipts)

	// A Messaging Service reports an opted-out recipient asynchronously.
	require.Equal(t, 5, parse(statusBody("failed", 21610)).Receipts[0].Rank)
	require.Equal(t, []string{"optout:" + patient}, st.keys())
}

func TestParseInbound(t *testing.T) {
	t.Parallel()
	st := newMemState()
	src := source(t, st)
	parse := func(body []byte) connectors.Inbound {
		r := signed(t, token, hookURL, body)
		require.NoError(t, src.Verify(r))
		in, err := src.Parse(r)
		require.NoError(t, err)
		return in
	}
	in := parse(inboundBody("Yes, see you then"))
	require.Empty(t, in.Receipts)
	require.Len(t, in.Events, 1)
	ev := in.Events[0]
	require.Equal(t, inboundSID, ev.ID)
	require.Equal(t, twilio.EventMessageReceived, ev.Type)
	require.Equal(t, patient, ev.Key)
	require.Equal(t, fixedNow, ev.OccurredAt)
	var p map[string]string
	require.NoError(t, json.Unmarshal(ev.Payload, &p))
	require.Equal(t, "Yes, see you then", p["Body"])
	require.Equal(t, clinic, p["To"])
	require.NotContains(t, p, "OptOutType")
	require.Equal(t, &connectors.Reply{Status: 200, ContentType: "text/xml", Body: []byte(`<?xml version="1.0" encoding="UTF-8"?><Response/>`)}, in.Reply)
	require.Empty(t, st.keys())

	in = parse(inboundBody("help"))
	require.NoError(t, json.Unmarshal(in.Events[0].Payload, &p))
	require.Equal(t, "HELP", p["OptOutType"])
	require.Empty(t, st.keys())

	// With Advanced Opt-Out, Twilio says so itself (custom keywords).
	params := twiliofake.InboundParams(account, inboundSID, patient, clinic, "please stop texting me")
	params.Set("OptOutType", "STOP")
	parse([]byte(params.Encode()))
	require.Equal(t, []string{"optout:" + patient}, st.keys())
	parse(inboundBody("UNSTOP"))
	require.Empty(t, st.keys())

	// The opt-out list failing does not lose the event.
	st.setFail(errors.New("down"))
	in = parse(inboundBody("STOP"))
	require.Len(t, in.Events, 1)
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	src := source(t, nil)
	for name, body := range map[string]string{
		"no sid":               "AccountSid=" + account + "&MessageStatus=sent",
		"no status, no body":   "MessageSid=SM1&AccountSid=" + account,
		"not form":             "%zz",
		"inbound without From": "MessageSid=SM1&SmsStatus=received&Body=hi",
	} {
		_, err := src.Parse(&connectors.Request{Method: http.MethodPost, Body: []byte(body)})
		require.ErrorIs(t, err, connectors.ErrMalformed, name)
	}
}

// TestStatusCallbacksEndToEnd: the fake posts signed callbacks to the
// StatusCallback the send asked for; the receipt never moves backwards.
func TestStatusCallbacksEndToEnd(t *testing.T) {
	t.Parallel()
	b := setup(t, "")
	ctx := context.Background()

	// Hold the callbacks until the receipt is recorded, as the agent's
	// ledger records it before Twilio's first callback in practice.
	b.fake.Hold()
	rc, err := b.send(t, sampleDelivery().Document)
	require.NoError(t, err)
	b.fake.Release()
	b.fake.Wait()
	require.Equal(t, receipt{"delivered", 5}, b.hooks.receipt(rc.ExternalID))
	cbs := b.fake.Callbacks()
	require.Len(t, cbs, 2)
	for i, st := range []string{"sent", "delivered"} {
		require.Equal(t, st, cbs[i].Params.Get("MessageStatus"))
		require.Equal(t, http.StatusOK, cbs[i].Status)
		require.Equal(t, b.hooks.url("sms"), cbs[i].URL)
	}

	// A late `sent` after `delivered` changes nothing.
	cb, err := b.fake.SendStatus(ctx, rc.ExternalID, "sent")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, cb.Status)
	require.Equal(t, receipt{"delivered", 5}, b.hooks.receipt(rc.ExternalID))
	// `read` can still follow.
	_, err = b.fake.SendStatus(ctx, rc.ExternalID, "read")
	require.NoError(t, err)
	require.Equal(t, receipt{"read", 6}, b.hooks.receipt(rc.ExternalID))

	// A carrier failure ends undelivered with its error code.
	other := "+447700900456"
	b.fake.DeliverAs(other, "undelivered", 30003)
	b.fake.Hold()
	rc2, err := b.send(t, map[string]any{"to": other, "body": text})
	require.NoError(t, err)
	b.fake.Release()
	b.fake.Wait()
	require.Equal(t, receipt{"undelivered", 5}, b.hooks.receipt(rc2.ExternalID))
	require.Equal(t, "30003", b.fake.Callbacks()[len(b.fake.Callbacks())-1].Params.Get("ErrorCode"))

	// Forged callbacks are refused and move nothing.
	b.fake.Hold()
	rc3, err := b.send(t, map[string]any{"to": "+447700900789", "body": text})
	require.NoError(t, err)
	b.fake.Release()
	b.fake.Wait()
	for _, opt := range []twiliofake.CallbackOption{
		twiliofake.CorruptSignature(), twiliofake.SignWith("another-token"), twiliofake.OmitSignature(),
	} {
		cb, err := b.fake.SendStatus(ctx, rc3.ExternalID, "read", opt)
		require.NoError(t, err)
		require.Equal(t, http.StatusUnauthorized, cb.Status)
	}
	require.Equal(t, receipt{"delivered", 5}, b.hooks.receipt(rc3.ExternalID))
}

func TestSample(t *testing.T) {
	t.Parallel()
	ty := twilio.Type()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte("{account_sid: "+account+", auth_token: "+token+", from: '"+clinic+"'}"), &doc))
	env := connectors.Env{Name: "sms", PublicURL: "https://bridge.example.clinic/"}
	st := newMemState()
	src := source(t, st)

	req := func(h http.Header, body []byte) *connectors.Request {
		u, _ := url.Parse(hookURL)
		return &connectors.Request{Method: http.MethodPost, URL: u, Header: h, Body: body}
	}
	h, body, err := ty.Sample(doc.Content[0], env, "", nil)
	require.NoError(t, err)
	require.Equal(t, "application/x-www-form-urlencoded", h.Get("Content-Type"))
	require.NoError(t, src.Verify(req(h, body)))
	in, err := src.Parse(req(h, body))
	require.NoError(t, err)
	require.Len(t, in.Events, 1)

	h, body, err = ty.Sample(doc.Content[0], env, "delivered", nil)
	require.NoError(t, err)
	require.NoError(t, src.Verify(req(h, body)))
	in, err = src.Parse(req(h, body))
	require.NoError(t, err)
	require.Equal(t, "delivered", in.Receipts[0].Status)

	h, body, err = ty.Sample(doc.Content[0], env, twilio.EventMessageReceived, []byte(`{"Body":"STOP"}`))
	require.NoError(t, err)
	require.NoError(t, src.Verify(req(h, body)))
	_, err = src.Parse(req(h, body))
	require.NoError(t, err)
	require.Len(t, st.keys(), 1)

	_, _, err = ty.Sample(doc.Content[0], env, "teleported", nil)
	require.Error(t, err)
	_, _, err = ty.Sample(doc.Content[0], connectors.Env{Name: "sms"}, "", nil)
	require.ErrorContains(t, err, "server.public_url")
}
