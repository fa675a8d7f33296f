// Package twilio is the Twilio Programmable Messaging connector: a sink that
// sends SMS (action send_sms) and a source for the webhooks Twilio posts back
// (status callbacks, which move delivery receipts, and inbound SMS, which
// become events and maintain the opt-out list).
package twilio

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	stdhttp "net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/rs/zerolog"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/twilio/twiliofake"
)

const provider = "twilio"

// ActionSendSMS is the sink's one action.
const ActionSendSMS = "send_sms"

// maxResponse bounds how much of an answer is read.
const maxResponse = 1 << 20

// Type declares the `twilio` connector type.
func Type() connectors.Type {
	return connectors.Define(connectors.Type{
		Name: "twilio",
		Doc: "Sends SMS through Twilio Programmable Messaging and receives Twilio's webhooks: status callbacks " +
			"(which update delivery receipts) and inbound SMS (events, and STOP/START opt-outs).",
		Fields: fields,
		Source: true,
		Actions: []connectors.Action{{
			Name: ActionSendSMS,
			Doc: "Send one SMS (or MMS with media_url) to `to`. The receipt's external id is the message SID, its " +
				"status Twilio's (queued, or accepted with a Messaging Service); status callbacks move it on. A " +
				"recipient on the opt-out list is skipped with reason opted_out.",
			Required:   []string{"to", "body"},
			Optional:   []string{"from", "messaging_service_sid", "media_url"},
			Idempotent: false, // Twilio has no idempotency key for Messages
		}},
		Fake: func(w io.Writer) stdhttp.Handler {
			return twiliofake.New(twiliofake.WithLog(w), twiliofake.AcceptAnyCredentials())
		},
		Sample: sample,
	}, func(c *Config, env connectors.Env) (any, error) {
		return New(c, env)
	})
}

// Connector sends SMS and verifies and parses Twilio's webhooks.
type Connector struct {
	accountSID     string
	authToken      string
	from, service  string
	endpoint       string // {base_url}/2010-04-01/Accounts/{sid}/Messages.json
	statusCallback string // "" without a public URL
	timeout        time.Duration
	client         *retryablehttp.Client
	state          connectors.State
	now            func() time.Time
	log            zerolog.Logger
}

// New builds a connector from a config. It does not touch the network.
func New(c *Config, env connectors.Env) (*Connector, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	t := &Connector{
		accountSID: c.AccountSID,
		authToken:  c.AuthToken,
		from:       c.From,
		service:    c.MessagingServiceSID,
		endpoint:   c.baseURL() + "/2010-04-01/Accounts/" + url.PathEscape(c.AccountSID) + "/Messages.json",
		timeout:    c.timeout(),
		state:      env.State,
		now:        env.Clock(),
		log:        env.Logger,
	}
	if env.PublicURL != "" && env.Name != "" {
		t.statusCallback = strings.TrimRight(env.PublicURL, "/") + "/hooks/" + url.PathEscape(env.Name)
	}
	t.client = newClient()
	return t, nil
}

// StatusCallback is the URL sends ask Twilio to post status changes to
// (server.public_url + /hooks/{connector}), or "" without a public URL.
func (t *Connector) StatusCallback() string { return t.statusCallback }

// Do sends one SMS. Errors are *connectors.Error whose message names
// Twilio's code and a fixed description of it: never the numbers, the body,
// or Twilio's own message, which quotes the number.
func (t *Connector) Do(ctx context.Context, d connectors.Delivery) (connectors.Receipt, error) {
	if d.Action != "" && d.Action != ActionSendSMS {
		return connectors.Receipt{}, permanent(fmt.Sprintf("unknown action %q", d.Action))
	}
	form, to, err := t.form(d.Document)
	if err != nil {
		return connectors.Receipt{}, err
	}
	out, err := optedOut(ctx, t.state, to)
	if err != nil {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Transient, Provider: provider, Msg: "the opt-out list could not be read; not sending"}
	}
	if out {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Skip, Provider: provider, Code: "opted_out", Msg: "the recipient opted out (replied STOP); not sent"}
	}

	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				wrote.Store(true)
			}
		},
	})
	req, err := retryablehttp.NewRequestWithContext(ctx, stdhttp.MethodPost, t.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return connectors.Receipt{}, permanent("base_url does not make a valid request URL")
	}
	req.SetBasicAuth(t.accountSID, t.authToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "clinicbridge")

	resp, err := t.client.Do(req)
	if err != nil {
		return connectors.Receipt{}, connectors.TransportError(provider, err, wrote.Load())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		var m struct {
			SID    string `json:"sid"`
			Status string `json:"status"`
		}
		// A body that cannot be read does not undo the send: Twilio took it.
		_ = json.Unmarshal(b, &m)
		return connectors.Receipt{ExternalID: m.SID, Status: m.Status}, nil
	}
	ce := classify(resp, b)
	if ce.Code == "21610" {
		// Recorded even if the send's own deadline is nearly spent.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateTimeout)
		defer cancel()
		if err := putOptOut(sctx, t.state, to, ReasonError21610, t.now()); err != nil {
			ce.Msg += " (recording the opt-out failed; Twilio will refuse again)"
		}
	}
	return connectors.Receipt{}, ce
}

// form builds the Messages request from the document and returns the To
// number. Document errors are permanent and name the field only.
func (t *Connector) form(doc map[string]any) (url.Values, string, error) {
	to, err := docText(doc, "to", false)
	if err != nil {
		return nil, "", err
	}
	to = strings.TrimSpace(to)
	if to == "" {
		return nil, "", permanent("the document has no `to` (the recipient's number)")
	}
	body, err := docText(doc, "body", true)
	if err != nil {
		return nil, "", err
	}
	media, err := docList(doc, "media_url")
	if err != nil {
		return nil, "", err
	}
	if body == "" && len(media) == 0 {
		return nil, "", permanent("the document has an empty `body` and no `media_url`")
	}
	from, err := docText(doc, "from", false)
	if err != nil {
		return nil, "", err
	}
	svc, err := docText(doc, "messaging_service_sid", false)
	if err != nil {
		return nil, "", err
	}
	if from == "" && svc == "" {
		from, svc = t.from, t.service
	}

	f := url.Values{}
	f.Set("To", to)
	if body != "" {
		f.Set("Body", body)
	}
	for _, m := range media {
		f.Add("MediaUrl", m)
	}
	if from != "" {
		f.Set("From", from)
	}
	if svc != "" {
		f.Set("MessagingServiceSid", svc)
	}
	if t.statusCallback != "" {
		f.Set("StatusCallback", t.statusCallback)
	}
	return f, to, nil
}

// docText reads a text field. Numbers and booleans are accepted where
// scalar is set (a body of "42" mapped as a number); the numbers' fields
// must be strings, since a number loses the leading +.
func docText(doc map[string]any, key string, scalar bool) (string, error) {
	switch v := doc[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case json.Number, int, int64, float64, bool:
		if scalar {
			return fmt.Sprint(v), nil
		}
	}
	return "", permanent(fmt.Sprintf("the document's `%s` must be a string", key))
}

// docList reads a string or a list of strings.
func docList(doc map[string]any, key string) ([]string, error) {
	switch v := doc[key].(type) {
	case nil:
		return nil, nil
	case string:
		if v == "" {
			return nil, nil
		}
		return []string{v}, nil
	case []string:
		return v, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, permanent(fmt.Sprintf("the document's `%s` must be a string or a list of strings", key))
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, permanent(fmt.Sprintf("the document's `%s` must be a string or a list of strings", key))
}

func permanent(msg string) *connectors.Error {
	return &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: msg}
}

// codeInfo is what clinicbridge knows about one Twilio error code: its
// class, and the fixed description errors carry instead of Twilio's message
// (which quotes the phone number).
type codeInfo struct {
	class connectors.Class
	desc  string
}

// codes refines the HTTP status table for Twilio's error codes
// (twilio.com/docs/api/errors). Unknown codes are classified by status.
var codes = map[int]codeInfo{
	20003: {connectors.Auth, "authentication failed: check account_sid and auth_token"},
	20404: {connectors.Permanent, "not found: check account_sid and base_url"},
	20429: {connectors.RateLimited, "too many concurrent requests"},
	21211: {connectors.Permanent, "the To number is not a valid phone number"},
	21212: {connectors.Permanent, "the From number is not a valid phone number, short code or sender ID"},
	21408: {connectors.Permanent, "the account may not send to the To number's region (geo permissions)"},
	21602: {connectors.Permanent, "a message body is required"},
	21603: {connectors.Permanent, "a From number or Messaging Service is required"},
	21604: {connectors.Permanent, "a To number is required"},
	21606: {connectors.Permanent, "the From number cannot send SMS to this destination or is not the account's"},
	21608: {connectors.Permanent, "trial account: the To number is not verified"},
	21609: {connectors.Permanent, "the StatusCallback URL is not valid (check server.public_url)"},
	21610: {connectors.Permanent, "the recipient opted out (replied STOP); recorded, later sends are skipped"},
	// 21611: more than ten hours of messages are queued for the sender; slow down.
	21611: {connectors.RateLimited, "the From number's queue is full"},
	21612: {connectors.Permanent, "the To number cannot be reached from the From number"},
	21614: {connectors.Permanent, "the To number cannot receive SMS"},
	21617: {connectors.Permanent, "the body is longer than 1600 characters"},
	21701: {connectors.Permanent, "the Messaging Service SID is not valid"},
}

// classify turns a non-2xx answer into an error. Twilio's JSON body gives
// the code; its `message` is dropped on purpose.
func classify(resp *stdhttp.Response, body []byte) *connectors.Error {
	var e struct {
		Code json.Number `json:"code"`
	}
	_ = json.Unmarshal(body, &e)
	code, _ := strconv.Atoi(e.Code.String())
	ce := connectors.HTTPError(provider, resp, "", stdhttp.StatusText(resp.StatusCode))
	if code != 0 {
		ce.Code = strconv.Itoa(code)
		if info, ok := codes[code]; ok {
			ce.Class, ce.Msg = info.class, info.desc
		}
	}
	if ce.Class != connectors.RateLimited && ce.Class != connectors.Transient {
		ce.RetryAfter = 0
	}
	return ce
}

// newClient is retryablehttp kept short, as in the http connector: at most
// two quick retries of dial failures, where the request certainly never
// reached Twilio. Everything else goes back to the pipeline.
func newClient() *retryablehttp.Client {
	tr := stdhttp.DefaultTransport.(*stdhttp.Transport).Clone()
	c := retryablehttp.NewClient()
	c.HTTPClient = &stdhttp.Client{
		Transport:     tr,
		CheckRedirect: func(*stdhttp.Request, []*stdhttp.Request) error { return stdhttp.ErrUseLastResponse },
	}
	c.Logger = nil
	c.RetryMax = 2
	c.RetryWaitMin = 100 * time.Millisecond
	c.RetryWaitMax = time.Second
	c.CheckRetry = func(ctx context.Context, resp *stdhttp.Response, err error) (bool, error) {
		if ctx.Err() != nil || resp != nil || err == nil {
			return false, nil
		}
		return connectors.IsDialError(err), nil
	}
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	return c
}

// Close releases idle connections.
func (t *Connector) Close() error {
	t.client.HTTPClient.CloseIdleConnections()
	return nil
}

var (
	_ connectors.Sink   = (*Connector)(nil)
	_ connectors.Source = (*Connector)(nil)
	_ connectors.Closer = (*Connector)(nil)
)
