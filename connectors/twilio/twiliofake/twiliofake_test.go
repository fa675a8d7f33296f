package twiliofake_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors/twilio/twiliofake"
)

func listen127(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func start(t *testing.T, opts ...twiliofake.Option) (*twiliofake.Server, string) {
	t.Helper()
	f := twiliofake.New(opts...)
	srv := listen127(t, f)
	t.Cleanup(f.Close)
	return f, srv.URL
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func call(t *testing.T, method, rawURL, user, pass string, form url.Values) answer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, rawURL, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return answer{resp.StatusCode, resp.Header, m}
}

func messagesURL(base, account string) string {
	return base + "/2010-04-01/Accounts/" + account + "/Messages.json"
}

func TestCreateAndErrors(t *testing.T) {
	t.Parallel()
	f, base := start(t, twiliofake.WithoutCallbacks())
	u := messagesURL(base, twiliofake.DefaultAccountSID)
	send := func(form url.Values) answer {
		return call(t, http.MethodPost, u, twiliofake.DefaultAccountSID, twiliofake.DefaultAuthToken, form)
	}

	a := send(url.Values{"To": {"+447700900123"}, "From": {twiliofake.MagicFrom}, "Body": {"hi"}})
	require.Equal(t, http.StatusCreated, a.status)
	require.Regexp(t, `^SM[0-9a-f]{32}$`, a.body["sid"])
	require.Equal(t, "queued", a.body["status"])
	require.Equal(t, "outbound-api", a.body["direction"])
	require.Equal(t, "2010-04-01", a.body["api_version"])
	require.Nil(t, a.body["messaging_service_sid"])
	_, err := time.Parse("Mon, 02 Jan 2006 15:04:05 -0700", a.body["date_created"].(string))
	require.NoError(t, err)

	a = send(url.Values{"To": {"+447700900123"}, "MessagingServiceSid": {"MG9752274e9e519418a7406176694466fa"}, "Body": {"hi"}})
	require.Equal(t, "accepted", a.body["status"])
	require.Nil(t, a.body["from"])

	for _, tc := range []struct {
		form url.Values
		code float64
	}{
		{url.Values{"From": {twiliofake.MagicFrom}, "Body": {"x"}}, 21604},
		{url.Values{"To": {"+447700900123"}, "Body": {"x"}}, 21603},
		{url.Values{"To": {"+447700900123"}, "From": {twiliofake.MagicFrom}}, 21602},
		{url.Values{"To": {"07700900123"}, "From": {twiliofake.MagicFrom}, "Body": {"x"}}, 21211},
		{url.Values{"To": {twiliofake.MagicToInvalid}, "From": {twiliofake.MagicFrom}, "Body": {"x"}}, 21211},
		{url.Values{"To": {twiliofake.MagicToUnroutable}, "From": {twiliofake.MagicFrom}, "Body": {"x"}}, 21612},
		{url.Values{"To": {twiliofake.MagicToNoIntl}, "From": {twiliofake.MagicFrom}, "Body": {"x"}}, 21408},
		{url.Values{"To": {twiliofake.MagicToBlocked}, "From": {twiliofake.MagicFrom}, "Body": {"x"}}, 21610},
		{url.Values{"To": {twiliofake.MagicToNotMobile}, "From": {twiliofake.MagicFrom}, "Body": {"x"}}, 21614},
		{url.Values{"To": {"+447700900123"}, "From": {twiliofake.MagicFromInvalid}, "Body": {"x"}}, 21212},
		{url.Values{"To": {"+447700900123"}, "From": {twiliofake.MagicFromNotOwned}, "Body": {"x"}}, 21606},
		{url.Values{"To": {"+447700900123"}, "From": {twiliofake.MagicFromQueueFull}, "Body": {"x"}}, 21611},
		{url.Values{"To": {"+447700900123"}, "From": {twiliofake.MagicFrom}, "Body": {strings.Repeat("a", 1601)}}, 21617},
		{url.Values{"To": {"+447700900123"}, "From": {twiliofake.MagicFrom}, "Body": {"x"}, "StatusCallback": {"not a url"}}, 21609},
	} {
		a := send(tc.form)
		require.Equal(t, http.StatusBadRequest, a.status, "%v", tc.form)
		require.Equal(t, tc.code, a.body["code"])
		require.Equal(t, float64(400), a.body["status"])
		require.Contains(t, a.body["more_info"], "https://www.twilio.com/docs/errors/")
		require.NotEmpty(t, a.body["message"])
	}
	require.Len(t, f.Messages(), 2)
	require.Len(t, f.Attempts(), 16)

	// Credentials.
	a = call(t, http.MethodPost, u, twiliofake.DefaultAccountSID, "wrong", url.Values{"To": {"+447700900123"}})
	require.Equal(t, http.StatusUnauthorized, a.status)
	require.Equal(t, float64(20003), a.body["code"])
	require.Contains(t, a.header.Get("WWW-Authenticate"), "Basic")
	a = call(t, http.MethodPost, u, "", "", url.Values{"To": {"+447700900123"}})
	require.Equal(t, http.StatusUnauthorized, a.status)
	a = call(t, http.MethodGet, base+"/2010-04-01/Accounts/"+twiliofake.DefaultAccountSID+"/Calls.json", twiliofake.DefaultAccountSID, twiliofake.DefaultAuthToken, nil)
	require.Equal(t, http.StatusNotFound, a.status)
	require.Equal(t, float64(20404), a.body["code"])
}

func TestScriptedFailures(t *testing.T) {
	t.Parallel()
	f, base := start(t, twiliofake.WithoutCallbacks())
	u := messagesURL(base, twiliofake.DefaultAccountSID)
	form := url.Values{"To": {"+447700900123"}, "From": {twiliofake.MagicFrom}, "Body": {"hi"}}
	f.Burst429(2)
	f.Fail(http.StatusServiceUnavailable, 20503, 3*time.Second)
	for _, want := range []struct {
		status int
		code   float64
		ra     string
	}{{429, 20429, "1"}, {429, 20429, "1"}, {503, 20503, "3"}} {
		a := call(t, http.MethodPost, u, twiliofake.DefaultAccountSID, twiliofake.DefaultAuthToken, form)
		require.Equal(t, want.status, a.status)
		require.Equal(t, want.code, a.body["code"])
		require.Equal(t, want.ra, a.header.Get("Retry-After"))
	}
	a := call(t, http.MethodPost, u, twiliofake.DefaultAccountSID, twiliofake.DefaultAuthToken, form)
	require.Equal(t, http.StatusCreated, a.status)
	require.Len(t, f.Messages(), 1)
}

func TestListAndFetch(t *testing.T) {
	t.Parallel()
	_, base := start(t, twiliofake.WithoutCallbacks())
	u := messagesURL(base, twiliofake.DefaultAccountSID)
	var sids []string
	for _, to := range []string{"+447700900001", "+447700900002", "+447700900001"} {
		a := call(t, http.MethodPost, u, twiliofake.DefaultAccountSID, twiliofake.DefaultAuthToken, url.Values{"To": {to}, "From": {twiliofake.MagicFrom}, "Body": {"hi"}})
		sids = append(sids, a.body["sid"].(string))
	}
	a := call(t, http.MethodGet, u+"?To=%2B447700900001&PageSize=50", twiliofake.DefaultAccountSID, twiliofake.DefaultAuthToken, nil)
	require.Equal(t, http.StatusOK, a.status)
	msgs := a.body["messages"].([]any)
	require.Len(t, msgs, 2)
	require.Equal(t, sids[2], msgs[0].(map[string]any)["sid"], "newest first")
	require.Nil(t, a.body["next_page_uri"])

	a = call(t, http.MethodGet, base+"/2010-04-01/Accounts/"+twiliofake.DefaultAccountSID+"/Messages/"+sids[1]+".json", twiliofake.DefaultAccountSID, twiliofake.DefaultAuthToken, nil)
	require.Equal(t, http.StatusOK, a.status)
	require.Equal(t, "+447700900002", a.body["to"])
	a = call(t, http.MethodGet, base+"/2010-04-01/Accounts/"+twiliofake.DefaultAccountSID+"/Messages/SMnope.json", twiliofake.DefaultAccountSID, twiliofake.DefaultAuthToken, nil)
	require.Equal(t, http.StatusNotFound, a.status)
}

// receiver records the webhooks it gets and checks their signatures
// against its own URL.
type receiver struct {
	t     *testing.T
	token string
	url   string
	mu    sync.Mutex
	got   []url.Values
	valid []bool
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	require.NoError(r.t, req.ParseForm())
	valid := twiliofake.Sign(r.token, r.url, req.PostForm) == req.Header.Get(twiliofake.SignatureHeader)
	r.mu.Lock()
	r.got = append(r.got, req.PostForm)
	r.valid = append(r.valid, valid)
	r.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml")
	_, _ = w.Write([]byte("<Response/>"))
}

func TestCallbacks(t *testing.T) {
	t.Parallel()
	rec := &receiver{t: t, token: "tok-of-the-sender"}
	rsrv := listen127(t, rec)
	rec.url = rsrv.URL + "/hooks/sms"

	// Any credentials: callbacks are signed with the token that sent.
	f, base := start(t, twiliofake.AcceptAnyCredentials(), twiliofake.WithCallbackDelay(0))
	account := "AC11111111111111111111111111111111"
	f.DeliverAs("+447700900999", "undelivered", 30003)
	for _, to := range []string{"+447700900123", "+447700900999"} {
		a := call(t, http.MethodPost, messagesURL(base, account), account, rec.token,
			url.Values{"To": {to}, "From": {twiliofake.MagicFrom}, "Body": {"hi"}, "StatusCallback": {rec.url}})
		require.Equal(t, http.StatusCreated, a.status)
	}
	f.Wait()
	rec.mu.Lock()
	require.Len(t, rec.got, 4)
	statuses := map[string][]string{}
	for i, p := range rec.got {
		require.True(t, rec.valid[i], "signed with the sender's token")
		require.Equal(t, account, p.Get("AccountSid"))
		require.Equal(t, p.Get("MessageSid"), p.Get("SmsSid"))
		statuses[p.Get("To")] = append(statuses[p.Get("To")], p.Get("MessageStatus"))
		if p.Get("MessageStatus") == "undelivered" {
			require.Equal(t, "30003", p.Get("ErrorCode"))
			require.Len(t, p.Get("RawDlrDoneDate"), 10)
		}
	}
	rec.mu.Unlock()
	require.Equal(t, []string{"sent", "delivered"}, statuses["+447700900123"])
	require.Equal(t, []string{"sent", "undelivered"}, statuses["+447700900999"])
	for _, m := range f.Messages() {
		require.Contains(t, []string{"delivered", "undelivered"}, m.Status)
	}

	// The simulated reply endpoint: STOP, then the fake refuses with 21610.
	resp, err := http.PostForm(base+"/_fake/inbound", url.Values{"Url": {rec.url}, "From": {"+447700900123"}, "Body": {"Stop"}, "AccountSid": {account}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	rec.mu.Lock()
	last := rec.got[len(rec.got)-1]
	require.True(t, rec.valid[len(rec.valid)-1])
	rec.mu.Unlock()
	require.Equal(t, "received", last.Get("SmsStatus"))
	require.Equal(t, "Stop", last.Get("Body"))
	a := call(t, http.MethodPost, messagesURL(base, account), account, rec.token, url.Values{"To": {"+447700900123"}, "From": {twiliofake.MagicFrom}, "Body": {"hi"}})
	require.Equal(t, float64(21610), a.body["code"])
	_, err = f.SendInbound(context.Background(), rec.url, "+447700900123", "START", twiliofake.WithAccountSID(account))
	require.NoError(t, err)
	a = call(t, http.MethodPost, messagesURL(base, account), account, rec.token, url.Values{"To": {"+447700900123"}, "From": {twiliofake.MagicFrom}, "Body": {"hi"}})
	require.Equal(t, http.StatusCreated, a.status)
}

func TestManualCallbackOptions(t *testing.T) {
	t.Parallel()
	rec := &receiver{t: t, token: twiliofake.DefaultAuthToken}
	rsrv := listen127(t, rec)
	rec.url = rsrv.URL + "/cb"
	f, base := start(t, twiliofake.WithoutCallbacks())
	a := call(t, http.MethodPost, messagesURL(base, twiliofake.DefaultAccountSID), twiliofake.DefaultAccountSID, twiliofake.DefaultAuthToken,
		url.Values{"To": {"+447700900123"}, "From": {twiliofake.MagicFrom}, "Body": {"hi"}, "StatusCallback": {rec.url}})
	sid := a.body["sid"].(string)
	ctx := context.Background()
	for _, tc := range []struct {
		opts  []twiliofake.CallbackOption
		valid bool
	}{
		{nil, true},
		{[]twiliofake.CallbackOption{twiliofake.CorruptSignature()}, false},
		{[]twiliofake.CallbackOption{twiliofake.SignWith("x")}, false},
		{[]twiliofake.CallbackOption{twiliofake.WithParam("Extra", "1")}, true},
		{[]twiliofake.CallbackOption{twiliofake.WithoutParam("SmsSid")}, true},
	} {
		cb, err := f.SendStatus(ctx, sid, "sent", tc.opts...)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, cb.Status)
		require.True(t, bytes.Contains(cb.Body, []byte("Response")))
		rec.mu.Lock()
		require.Equal(t, tc.valid, rec.valid[len(rec.valid)-1])
		rec.mu.Unlock()
	}
	cb, err := f.SendStatus(ctx, sid, "sent", twiliofake.OmitSignature())
	require.NoError(t, err)
	require.Empty(t, cb.Header.Get(twiliofake.SignatureHeader))
	_, err = f.SendStatus(ctx, "SMnope", "sent")
	require.Error(t, err)
	require.Len(t, f.Callbacks(), 6)
}
