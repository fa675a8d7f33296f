package twilio

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/twilio/twiliofake"
)

// Sample numbers (Ofcom's drama range and Twilio's magic sender).
const (
	samplePatient = "+447700900123"
	sampleClinic  = twiliofake.MagicFrom
)

// sample signs a webhook for `clinicbridge send-test` exactly as Twilio
// would post it to server.public_url + /hooks/{connector}:
//   - eventType "" or message.received: an inbound SMS (Body "Yes, see you
//     then"; send {"Body":"STOP"} as the payload to try an opt-out);
//   - a message status (sent, delivered, undelivered, failed, ...): a status
//     callback for a new message SID.
//
// A payload is a JSON object of form parameters that replace the sample's.
func sample(node *yaml.Node, env connectors.Env, eventType string, payload []byte) (http.Header, []byte, error) {
	var c Config
	if err := node.Decode(&c); err != nil {
		return nil, nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	if env.PublicURL == "" {
		return nil, nil, errors.New("server.public_url is not set: Twilio signs the URL it calls, so send-test signs " +
			"server.public_url + /hooks/" + env.Name + " (for a local agent set it to http://127.0.0.1:PORT)")
	}
	hookURL := strings.TrimRight(env.PublicURL, "/") + "/hooks/" + url.PathEscape(env.Name)
	from := c.From
	if from == "" {
		from = sampleClinic
	}
	sid := "SM" + randomHex(16)

	var params url.Values
	switch eventType {
	case "", EventMessageReceived:
		params = twiliofake.InboundParams(c.AccountSID, sid, samplePatient, from, "Yes, see you then")
		if c.MessagingServiceSID != "" {
			params.Set("MessagingServiceSid", c.MessagingServiceSID)
		}
	default:
		if StatusRank(eventType) == 0 {
			return nil, nil, fmt.Errorf("unknown event %q: use %s or a message status (queued, sent, delivered, undelivered, failed, read)", eventType, EventMessageReceived)
		}
		m := twiliofake.Message{SID: sid, AccountSID: c.AccountSID, To: samplePatient, From: c.From, MessagingServiceSID: c.MessagingServiceSID}
		code := 0
		if eventType == "undelivered" || eventType == "failed" {
			code = 30003 // unreachable destination handset
		}
		params = twiliofake.StatusParams(m, eventType, code, env.Clock()())
	}
	if payload != nil {
		var over map[string]any
		if err := json.Unmarshal(payload, &over); err != nil {
			return nil, nil, fmt.Errorf("--payload must be a JSON object of form parameters: %w", err)
		}
		for k, v := range over {
			if v == nil {
				params.Del(k)
				continue
			}
			params.Set(k, fmt.Sprint(v))
		}
	}
	h := http.Header{}
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	h.Set("User-Agent", "TwilioProxy/1.1")
	h.Set(SignatureHeader, twiliofake.Sign(c.AuthToken, hookURL, params))
	return h, []byte(params.Encode()), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
