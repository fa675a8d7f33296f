package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// Input builds the mapping input document for an event.
func Input(ev connectors.Event, receivedAt time.Time) (map[string]any, error) {
	var payload any
	if len(ev.Payload) > 0 {
		if err := connectors.UnmarshalJSON(ev.Payload, &payload); err != nil {
			return nil, fmt.Errorf("payload is not JSON: %w", err)
		}
	}
	return map[string]any{
		"event": map[string]any{
			"id":          ev.ID,
			"type":        ev.Type,
			"source":      ev.Source,
			"key":         ev.Key,
			"received_at": receivedAt.UTC().Format(time.RFC3339Nano),
			"occurred_at": ev.OccurredAt.UTC().Format(time.RFC3339Nano),
		},
		"payload": payload,
	}, nil
}

// Accept plans events through the routes and stores them with their
// deliveries in one transaction. Webhooks and reconciliation both come in
// here, so dedupe makes a second arrival a no-op. It returns, per event,
// whether it was new.
func (p *Pipeline) Accept(ctx context.Context, events []connectors.Event) ([]bool, error) {
	in := make([]store.Incoming, len(events))
	now := p.now()
	for i, ev := range events {
		in[i] = p.plan(ev, now)
	}
	return p.store.Accept(ctx, in)
}

// UpdateReceipts applies delivery callbacks (the server calls it).
func (p *Pipeline) UpdateReceipts(ctx context.Context, us []connectors.ReceiptUpdate) error {
	return p.store.UpdateReceipts(ctx, us)
}

// plan decides, for one event, which deliveries to create and which scheduled
// ones to cancel. Expression failures become dead deliveries with the reason,
// never a rejected webhook: the event is stored either way.
func (p *Pipeline) plan(ev connectors.Event, now time.Time) store.Incoming {
	in := store.Incoming{Event: ev}
	cfg := p.config()
	var input map[string]any
	var inputErr error
	inputOnce := func() (map[string]any, error) {
		if input == nil && inputErr == nil {
			input, inputErr = Input(ev, now)
		}
		return input, inputErr
	}
	for _, r := range cfg.routes {
		cancels, takes := r.cancelledBy(&ev), r.takes(&ev)
		if !cancels && !takes && (ev.Replaces == "" || r.At == nil || r.From != ev.Source) {
			continue
		}
		// Decoding the payload is the costly part of planning: only routes
		// with expressions need it (the worker decodes it for the mapping).
		var input map[string]any
		var err error
		if r.Key != nil || r.When != nil || r.At != nil {
			input, err = inputOnce()
		}
		key := ev.Key
		if err == nil && r.Key != nil {
			if k, kerr := r.Key.String(input); kerr == nil && k != "" {
				key = k
			} else if kerr != nil {
				err = fmt.Errorf("key: %w", kerr)
			}
		}
		if ev.Replaces != "" && r.At != nil && r.From == ev.Source {
			in.Cancels = append(in.Cancels, store.Cancel{Route: r.Name, Key: ev.Replaces, Reason: "replaced by " + ev.Type + " " + ev.ID})
		}
		if cancels && key != "" {
			in.Cancels = append(in.Cancels, store.Cancel{Route: r.Name, Key: key, Reason: "cancelled by " + ev.Type + " " + ev.ID})
		}
		if !takes {
			continue
		}
		d := store.NewDelivery{
			ID:          DeliveryID(ev.Source, ev.ID, r.Name, now),
			Route:       r.Name,
			Key:         key,
			State:       store.Pending,
			MaxAttempts: r.Retry.MaxAttempts,
		}
		switch {
		case err != nil:
			d.State, d.Reason = store.Dead, err.Error()
		case r.When != nil:
			ok, werr := r.When.Bool(input)
			if werr != nil {
				d.State, d.Reason = store.Dead, "when: "+werr.Error()
			} else if !ok {
				d.State, d.Reason = store.Skipped, "when: false"
			}
		}
		if d.State == store.Pending && r.At != nil {
			at, aerr := r.At.Time(input)
			switch {
			case aerr != nil:
				d.State, d.Reason = store.Dead, "at: "+aerr.Error()
			case at.After(now):
				d.State, d.RunAt = store.Scheduled, at
			case r.SkipLate:
				d.State, d.Reason = store.Skipped, "late"
			}
			// A new event for the same key replaces the route's pending reminder.
			if key != "" {
				in.Cancels = append(in.Cancels, store.Cancel{Route: r.Name, Key: key, Reason: "replaced by " + ev.Type + " " + ev.ID})
			}
		}
		if d.State == store.Pending || d.State == store.Scheduled {
			send := d.RunAt
			if send.IsZero() {
				send = now
			}
			if moved := r.Quiet.Defer(send); !moved.Equal(send) {
				d.State, d.RunAt = store.Scheduled, moved
			}
		}
		in.Deliveries = append(in.Deliveries, d)
	}
	return in
}
