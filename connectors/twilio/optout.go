package twilio

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// OptOutPrefix starts the State key of an opted-out number: "optout:+447700900123".
const OptOutPrefix = "optout:"

// Why a number was put on the opt-out list (the State value's "reason").
const (
	ReasonInboundStop = "inbound_stop" // the recipient texted STOP (or Twilio said OptOutType=STOP)
	ReasonError21610  = "error_21610"  // Twilio refused a send with 21610
)

// Twilio's default keywords (Advanced Opt-Out off): a message whose whole
// body, trimmed and case-folded, is one of them. REVOKE and OPTOUT joined
// Twilio's defaults in 2025.
var (
	stopWords  = []string{"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
	startWords = []string{"START", "YES", "UNSTOP"}
	helpWords  = []string{"HELP", "INFO"}
)

// Keyword classifies an inbound message body as Twilio does: "STOP",
// "START", "HELP" or "" for an ordinary message.
func Keyword(body string) string {
	b := strings.ToUpper(strings.TrimSpace(body))
	for _, set := range []struct {
		kind  string
		words []string
	}{{"STOP", stopWords}, {"START", startWords}, {"HELP", helpWords}} {
		for _, w := range set.words {
			if b == w {
				return set.kind
			}
		}
	}
	return ""
}

// OptOutKey is the State key for number. Spaces, dashes, dots and
// parentheses are dropped so "+44 7700 900123" and "+447700900123" are the
// same recipient; anything else is kept as written.
func OptOutKey(number string) string {
	var b strings.Builder
	for _, r := range strings.TrimSpace(number) {
		switch r {
		case ' ', '-', '.', '(', ')', '\t':
			continue
		}
		b.WriteRune(r)
	}
	return OptOutPrefix + b.String()
}

type optOutRecord struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// optedOut reports whether number is on the list. A nil State has no list.
func optedOut(ctx context.Context, st connectors.State, number string) (bool, error) {
	if st == nil {
		return false, nil
	}
	_, ok, err := st.Get(ctx, OptOutKey(number))
	return ok, err
}

func putOptOut(ctx context.Context, st connectors.State, number, reason string, at time.Time) error {
	if st == nil || strings.TrimSpace(number) == "" {
		return nil
	}
	v, _ := json.Marshal(optOutRecord{Reason: reason, At: at.UTC()})
	return st.Put(ctx, OptOutKey(number), v)
}

func deleteOptOut(ctx context.Context, st connectors.State, number string) error {
	if st == nil || strings.TrimSpace(number) == "" {
		return nil
	}
	return st.Delete(ctx, OptOutKey(number))
}

// StatusRank orders Twilio message statuses so a receipt never moves
// backwards when callbacks arrive out of order (a late `sent` after
// `delivered`). The store applies an update only over a lower rank, so of
// two final statuses the first to arrive stays, except `read`, which can
// only follow `delivered`.
//
//	0  unknown statuses (no receipt update is emitted for them)
//	1  accepted, scheduled     (a Messaging Service took it / it waits for SendAt)
//	2  queued
//	3  sending
//	4  sent                    (handed to the carrier)
//	5  delivered, undelivered, failed, canceled, partially_delivered (final)
//	6  read                    (WhatsApp / RCS, after delivered)
func StatusRank(status string) int {
	switch strings.ToLower(status) {
	case "accepted", "scheduled":
		return 1
	case "queued":
		return 2
	case "sending":
		return 3
	case "sent":
		return 4
	case "delivered", "undelivered", "failed", "canceled", "partially_delivered":
		return 5
	case "read":
		return 6
	default:
		return 0
	}
}
