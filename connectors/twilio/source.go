package twilio

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// EventMessageReceived is the type of the event an inbound SMS becomes.
const EventMessageReceived = "message.received"

// stateTimeout bounds the opt-out list updates an inbound webhook makes.
const stateTimeout = 5 * time.Second

// emptyTwiML is the answer to an inbound SMS: nothing to send back (Twilio
// itself answers STOP, START and HELP).
var emptyTwiML = []byte(`<?xml version="1.0" encoding="UTF-8"?><Response/>`)

func unauthorized(reason string) error {
	return fmt.Errorf("%w: %s", connectors.ErrUnauthorized, reason)
}

func malformed(reason string) error {
	return fmt.Errorf("%w: %s", connectors.ErrMalformed, reason)
}

// Verify checks X-Twilio-Signature over r.URL (the URL Twilio called, which
// the server rebuilds from server.public_url) and the form parameters.
// Failures wrap ErrUnauthorized and never contain the token, the signature
// or the body.
func (t *Connector) Verify(r *connectors.Request) error {
	sig := connectors.Header(r.Header, SignatureHeader)
	if sig == "" {
		return unauthorized("missing X-Twilio-Signature header")
	}
	if r.URL == nil {
		return unauthorized("the request URL is unknown, so the signature cannot be checked")
	}
	params := url.Values{} // a GET webhook's parameters are in the signed URL
	if r.Method != http.MethodGet {
		var err error
		if params, err = url.ParseQuery(string(r.Body)); err != nil {
			return unauthorized("the body is not form-encoded, so the signature cannot be checked")
		}
	}
	for _, vs := range params {
		// Twilio's messaging webhooks never repeat a name (media come as
		// MediaUrl0, MediaUrl1, ...), and validators disagree on how a
		// repeat is signed: refuse rather than guess.
		if len(vs) > 1 {
			return unauthorized("a form parameter is repeated")
		}
	}
	if !validSignature([]byte(t.authToken), r.URL, params, sig) {
		return unauthorized("X-Twilio-Signature does not match (check auth_token, and that server.public_url is the URL Twilio calls)")
	}
	return nil
}

// Parse turns a verified webhook into receipt updates (a status callback)
// or an event (an inbound SMS). Failures wrap ErrMalformed and never
// contain payload values.
//
// An inbound STOP (STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT,
// or Twilio's OptOutType=STOP) puts the sender on the opt-out list; START (YES, UNSTOP,
// OptOutType=START) takes them off. A failed or undelivered status callback
// with ErrorCode 21610 (a Messaging Service refusing an opted-out number
// after accepting the message) puts the recipient on it.
func (t *Connector) Parse(r *connectors.Request) (connectors.Inbound, error) {
	var params url.Values
	if r.Method == http.MethodGet {
		if r.URL != nil {
			params = r.URL.Query()
		}
	} else {
		var err error
		if params, err = url.ParseQuery(string(r.Body)); err != nil {
			return connectors.Inbound{}, malformed("the body is not form-encoded")
		}
	}
	sid := first(params, "MessageSid", "SmsSid", "SmsMessageSid")
	if sid == "" {
		return connectors.Inbound{}, malformed("not a Twilio messaging webhook: no MessageSid")
	}
	status := first(params, "MessageStatus", "SmsStatus")
	switch {
	case status == "received" || status == "receiving" || (status == "" && params.Has("Body")):
		return t.inbound(params, sid)
	case status == "":
		return connectors.Inbound{}, malformed("a status callback without MessageStatus")
	default:
		return t.statusUpdate(params, sid, status)
	}
}

func (t *Connector) statusUpdate(params url.Values, sid, status string) (connectors.Inbound, error) {
	var in connectors.Inbound
	if rank := StatusRank(status); rank > 0 {
		in.Receipts = []connectors.ReceiptUpdate{{ExternalID: sid, Status: strings.ToLower(status), Rank: rank}}
	}
	if params.Get("ErrorCode") == "21610" {
		ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
		defer cancel()
		if err := putOptOut(ctx, t.state, params.Get("To"), ReasonError21610, t.now()); err != nil {
			t.log.Warn().Str("message", sid).Msg("twilio: recording an opt-out (error 21610 in a status callback) failed")
		}
	}
	return in, nil
}

func (t *Connector) inbound(params url.Values, sid string) (connectors.Inbound, error) {
	from := params.Get("From")
	if from == "" {
		return connectors.Inbound{}, malformed("an inbound message without From")
	}
	payload := make(map[string]string, len(params)+1)
	for k, vs := range params {
		if len(vs) > 0 {
			payload[k] = vs[0]
		}
	}
	kw := strings.ToUpper(strings.TrimSpace(params.Get("OptOutType")))
	if kw == "" {
		if kw = Keyword(params.Get("Body")); kw != "" {
			payload["OptOutType"] = kw
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	var err error
	switch kw {
	case "STOP":
		err = putOptOut(ctx, t.state, from, ReasonInboundStop, t.now())
	case "START":
		err = deleteOptOut(ctx, t.state, from)
	}
	if err != nil {
		// The event is still stored: Twilio enforces the opt-out itself (21610).
		t.log.Warn().Str("message", sid).Str("keyword", kw).Msg("twilio: updating the opt-out list failed")
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return connectors.Inbound{}, malformed("the parameters cannot be encoded")
	}
	return connectors.Inbound{
		Events: []connectors.Event{{
			ID:         sid,
			Type:       EventMessageReceived,
			Key:        from,
			OccurredAt: t.now().UTC(),
			Payload:    raw,
		}},
		Reply: &connectors.Reply{Status: http.StatusOK, ContentType: "text/xml", Body: emptyTwiML},
	}, nil
}

func first(params url.Values, names ...string) string {
	for _, n := range names {
		if v := params.Get(n); v != "" {
			return v
		}
	}
	return ""
}
