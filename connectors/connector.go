// Package connectors defines what a connector type is (a source of webhooks,
// a lister for reconciliation, a sink that performs named actions) and the
// registry that maps type names to their declarations. Each system lives in
// its own package below this one, with a faithful fake of the system beside it.
package connectors

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/rs/zerolog"
)

// Event is one thing that happened in a source system.
type Event struct {
	// Source is the configured connector name; the server fills it in.
	Source string `json:"source"`
	// ID is the provider's event id, or one derived from the entity and the
	// transition where the provider has none; (Source, ID) is the dedupe key,
	// so a webhook and a reconciliation run must produce the same ID.
	ID   string `json:"id"`
	Type string `json:"type"`
	// Key is the business entity the event is about (booking uid, patient id);
	// scheduling, cancellation and ordering work per key.
	Key        string    `json:"key,omitempty"`
	OccurredAt time.Time `json:"occurred_at"`
	// Replaces is a key this event supersedes (a rescheduled booking's old uid):
	// pending scheduled deliveries for it are cancelled.
	Replaces string          `json:"replaces,omitempty"`
	Payload  json.RawMessage `json:"payload"`
}

// Request is an inbound webhook as the server received it. Body is the raw
// bytes: signatures are verified over them before anything is parsed. Body is
// the request's own (the server reads each body into a new buffer), so a
// source may keep it, as an event's Payload, without copying.
type Request struct {
	Method string
	// URL is the URL the sender used, rebuilt from server.public_url when set
	// (signature schemes such as Twilio's sign it).
	URL    *url.URL
	Header http.Header
	Body   []byte
	// Subpath is what followed /hooks/{connector} (FHIR sends PUT [endpoint]/Type/id).
	Subpath string
}

// Inbound is what a source made of a verified request.
type Inbound struct {
	Events []Event
	// Receipts update the remote status of earlier deliveries (delivery
	// callbacks such as Twilio's StatusCallback); they create no deliveries.
	Receipts []ReceiptUpdate
	// Reply, when set, replaces the server's default reply (a handshake answer).
	Reply *Reply
	// Reconcile asks for a reconcile run of this source now: the source saw
	// a gap (a missed notification number) that only its list API can fill.
	Reconcile bool
}

// ReceiptUpdate moves the receipt of the delivery whose ExternalID matches.
// Rank orders statuses: an update never replaces a higher rank, since
// callbacks arrive out of order (a late `sent` must not undo `delivered`).
type ReceiptUpdate struct {
	ExternalID string
	Status     string
	Rank       int
}

// Reply is a source-specific answer to a webhook.
type Reply struct {
	Status      int
	ContentType string
	Body        []byte
}

// Source verifies and parses webhooks.
type Source interface {
	// Verify authenticates the raw request; failures wrap ErrUnauthorized.
	Verify(r *Request) error
	// Parse turns a verified request into events; failures wrap ErrMalformed.
	Parse(r *Request) (Inbound, error)
}

// ListParams bounds a reconciliation listing.
type ListParams struct {
	// Since is the watermark minus the lookback: list what changed after it.
	Since time.Time
	// Types are the event types the routes using this source care about; a
	// lister may use them to filter server-side. Empty means all.
	Types []string
}

// Page is one page of listed events, with the newest change time it covers,
// which becomes the watermark once the whole run succeeds.
type Page struct {
	Events []Event
	Newest time.Time
}

// Lister pulls events from a source's list API for reconciliation. It calls
// yield once per page so memory stays bounded by a page, and stops at the
// first error yield returns.
type Lister interface {
	List(ctx context.Context, p ListParams, yield func(Page) error) error
}

// Action is a named operation a sink performs.
type Action struct {
	Name string
	Doc  string
	// Required are top-level fields the mapped document must produce;
	// validate checks every route's mapping against them.
	Required []string
	// Optional are the other fields the action reads (documentation).
	Optional []string
	// Idempotent says the remote dedupes by Delivery.IdempotencyKey, so a
	// retry after an ambiguous failure, or a replay, cannot act twice.
	Idempotent bool
	// Overwrites says the action replaces the target's state for the key
	// (an update or upsert): the pipeline skips (reason `stale`) a delivery
	// whose event is older than one already delivered for the same route and
	// key, so out-of-order events never overwrite newer data.
	Overwrites bool
}

// Delivery is one mapped document on its way to a sink.
type Delivery struct {
	Action   string
	Document map[string]any
	// IdempotencyKey is derived from (event id, route): the same on every
	// attempt and every replay, so a remote that dedupes by key never acts twice.
	IdempotencyKey string
	DeliveryID     string
	EventID        string
	Route          string
}

// Receipt is what the sink's system said it did.
type Receipt struct {
	ExternalID string // e.g. Twilio's message SID, Xero's PaymentID
	Status     string // the remote status, when it has one
}

// Sink performs actions in a target system.
type Sink interface {
	Do(ctx context.Context, d Delivery) (Receipt, error)
}

// State is durable storage a connector may keep (an opt-out list, the newest
// OAuth refresh token), scoped to the connector's name. Values are small;
// Put replaces atomically and is durable when it returns.
type State interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Put(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
}

// Closer is implemented by connectors that hold resources.
type Closer interface {
	Close() error
}

// Env is what a connector may use when it is built. Building must not touch
// the network: `validate` builds nothing, `run` builds everything.
type Env struct {
	// Name is the configured connector name.
	Name string
	// PublicURL is server.public_url: how senders reach this agent.
	PublicURL string
	// Dir is the config file's folder; relative paths resolve against it.
	Dir    string
	Logger zerolog.Logger
	// State is the connector's durable storage. It is nil while validating
	// (nothing is opened then): connectors that need it must check at use.
	State State
	// Now is the clock (tests move it); nil means time.Now.
	Now func() time.Time
}

// Clock returns e.Now or time.Now.
func (e Env) Clock() func() time.Time {
	if e.Now != nil {
		return e.Now
	}
	return time.Now
}
