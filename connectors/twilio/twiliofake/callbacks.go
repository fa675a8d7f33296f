package twiliofake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// CallbackOption changes one webhook the fake posts.
type CallbackOption func(*callbackOpts)

type callbackOpts struct {
	url        string
	token      string
	accountSID string
	corrupt    bool
	omit       bool
	errorCode  int
	params     url.Values
	drop       []string
}

// ToURL posts to u instead of the message's StatusCallback.
func ToURL(u string) CallbackOption { return func(o *callbackOpts) { o.url = u } }

// SignWith signs with token instead of the fake's auth token (a wrong token).
func SignWith(token string) CallbackOption { return func(o *callbackOpts) { o.token = token } }

// WithAccountSID sets AccountSid (and, in any-credentials mode, picks the
// token last used by that account).
func WithAccountSID(sid string) CallbackOption { return func(o *callbackOpts) { o.accountSID = sid } }

// CorruptSignature flips a bit of the signature after signing.
func CorruptSignature() CallbackOption { return func(o *callbackOpts) { o.corrupt = true } }

// OmitSignature sends no X-Twilio-Signature header.
func OmitSignature() CallbackOption { return func(o *callbackOpts) { o.omit = true } }

// WithErrorCode adds ErrorCode (failed and undelivered callbacks carry one).
func WithErrorCode(code int) CallbackOption { return func(o *callbackOpts) { o.errorCode = code } }

// WithParam sets a form parameter after the standard ones are filled in.
func WithParam(name, value string) CallbackOption {
	return func(o *callbackOpts) {
		if o.params == nil {
			o.params = url.Values{}
		}
		o.params.Set(name, value)
	}
}

// WithoutParam removes a form parameter before signing.
func WithoutParam(name string) CallbackOption {
	return func(o *callbackOpts) { o.drop = append(o.drop, name) }
}

// StatusParams are the form fields of a status callback for m moving to
// status, as Twilio posts them.
func StatusParams(m Message, status string, errorCode int, at time.Time) url.Values {
	v := url.Values{}
	v.Set("AccountSid", m.AccountSID)
	v.Set("ApiVersion", "2010-04-01")
	v.Set("MessageSid", m.SID)
	v.Set("SmsSid", m.SID)
	v.Set("MessageStatus", status)
	v.Set("SmsStatus", status)
	v.Set("To", m.To)
	if m.From != "" {
		v.Set("From", m.From)
	}
	if m.MessagingServiceSID != "" {
		v.Set("MessagingServiceSid", m.MessagingServiceSID)
	}
	if errorCode != 0 {
		v.Set("ErrorCode", strconv.Itoa(errorCode))
	}
	if status == "delivered" || status == "undelivered" {
		v.Set("RawDlrDoneDate", at.UTC().Format("0601021504"))
	}
	return v
}

// InboundParams are the form fields of an inbound SMS webhook, as Twilio
// posts them to the number's messaging URL.
func InboundParams(accountSID, sid, from, to, body string) url.Values {
	v := url.Values{}
	v.Set("AccountSid", accountSID)
	v.Set("ApiVersion", "2010-04-01")
	v.Set("MessageSid", sid)
	v.Set("SmsSid", sid)
	v.Set("SmsMessageSid", sid)
	v.Set("SmsStatus", "received")
	v.Set("From", from)
	v.Set("To", to)
	v.Set("Body", body)
	v.Set("NumMedia", "0")
	v.Set("NumSegments", "1")
	v.Set("FromCountry", country(from))
	v.Set("ToCountry", country(to))
	for _, k := range []string{"FromCity", "FromState", "FromZip", "ToCity", "ToState", "ToZip"} {
		v.Set(k, "")
	}
	return v
}

func country(n string) string {
	switch {
	case strings.HasPrefix(n, "+1"):
		return "US"
	case strings.HasPrefix(n, "+44"):
		return "GB"
	case strings.HasPrefix(n, "+353"):
		return "IE"
	default:
		return ""
	}
}

// SendStatus posts a signed status callback for message sid moving to
// status, to the message's StatusCallback (or ToURL), and records the
// message's new status. It does not check that the move is forward, so
// tests can send a late `sent` after `delivered`.
func (s *Server) SendStatus(ctx context.Context, sid, status string, opts ...CallbackOption) (Callback, error) {
	o := s.callbackOpts(opts)
	now := s.now().UTC()
	s.mu.Lock()
	m := s.find(sid)
	if m == nil {
		s.mu.Unlock()
		return Callback{}, fmt.Errorf("twiliofake: no message %s", sid)
	}
	m.Status, m.DateUpdated = status, now
	if o.errorCode != 0 {
		m.ErrorCode = o.errorCode
	}
	snap := *m
	s.mu.Unlock()
	if o.url == "" {
		o.url = snap.StatusCallback
	}
	if o.url == "" {
		return Callback{}, errors.New("twiliofake: the message has no StatusCallback; pass ToURL")
	}
	return s.post(ctx, o, StatusParams(snap, status, o.errorCode, now))
}

// SendInbound posts a signed inbound SMS from `from` with body to u, as
// Twilio does when someone texts the fake's number. Like Twilio, the fake
// then refuses sends to `from` with 21610 after STOP (STOPALL, UNSUBSCRIBE,
// CANCEL, END, QUIT, REVOKE, OPTOUT) until START (YES, UNSTOP).
func (s *Server) SendInbound(ctx context.Context, u, from, body string, opts ...CallbackOption) (Callback, error) {
	o := s.callbackOpts(opts)
	o.url = u
	now := s.now().UTC()
	s.mu.Lock()
	s.seq++
	m := &Message{
		SID: fmt.Sprintf("SM%032x", s.seq), AccountSID: o.accountSID, To: s.number, From: from, Body: body,
		Direction: "inbound", Status: "received", DateCreated: now, DateUpdated: now,
	}
	s.messages = append(s.messages, m)
	switch strings.ToUpper(strings.TrimSpace(body)) {
	case "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT":
		s.optedOut[from] = true
	case "START", "YES", "UNSTOP":
		delete(s.optedOut, from)
	}
	s.mu.Unlock()
	return s.post(ctx, o, InboundParams(o.accountSID, m.SID, from, s.number, body))
}

func (s *Server) callbackOpts(opts []CallbackOption) callbackOpts {
	o := callbackOpts{accountSID: s.accountSID}
	for _, opt := range opts {
		opt(&o)
	}
	if o.token == "" {
		s.mu.Lock()
		o.token = s.tokens[o.accountSID]
		s.mu.Unlock()
		if o.token == "" {
			o.token = s.authToken
		}
	}
	return o
}

func (s *Server) post(ctx context.Context, o callbackOpts, params url.Values) (Callback, error) {
	for k, vs := range o.params {
		params[k] = vs
	}
	for _, k := range o.drop {
		params.Del(k)
	}
	cb := Callback{URL: o.url, Params: params, Header: http.Header{}}
	cb.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	cb.Header.Set("User-Agent", "TwilioProxy/1.1")
	if !o.omit {
		sig := Sign(o.token, o.url, params)
		if o.corrupt {
			b := []byte(sig)
			b[0] ^= 0x01
			sig = string(b)
		}
		cb.Header.Set(SignatureHeader, sig)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.url, strings.NewReader(params.Encode()))
	if err != nil {
		return cb, err
	}
	req.Header = cb.Header.Clone()
	resp, err := s.client.Do(req)
	if err != nil {
		cb.Err = err
	} else {
		cb.Status = resp.StatusCode
		cb.Body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
	s.mu.Lock()
	s.callbacks = append(s.callbacks, cb)
	s.mu.Unlock()
	kind := params.Get("MessageStatus")
	if kind == "" {
		kind = "inbound"
	}
	s.logf("callback %s %s -> %d", params.Get("MessageSid"), kind, cb.Status)
	return cb, err
}
