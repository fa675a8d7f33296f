package stripefake

import "strings"

// APIVersion is the version the fake renders events in: stripe-go v82's
// release train (basil), so its webhook.ConstructEvent accepts them.
const APIVersion = "2025-08-27.basil"

// SampleObject returns a realistic Stripe object for an event type, as the
// event's data.object: a PaymentIntent for payment_intent.*, a Charge for
// charge.*, a Refund for refund.*, an Invoice for invoice.*, a Checkout
// Session for checkout.session.*, and a bare object otherwise.
func SampleObject(eventType string) map[string]any {
	meta := map[string]any{"clinic_patient_id": "P123", "booking_id": "bk_81"}
	switch {
	case strings.HasPrefix(eventType, "payment_intent."):
		status := "succeeded"
		if eventType == "payment_intent.payment_failed" {
			status = "requires_payment_method"
		}
		return map[string]any{
			"id": "pi_3QfakeSample0001", "object": "payment_intent", "amount": 15000, "amount_received": 15000,
			"currency": "gbp", "customer": "cus_fakeSample01", "description": "Consultation 2026-11-02",
			"latest_charge": "ch_3QfakeSample0001", "metadata": meta, "status": status, "livemode": false,
			"payment_method_types": []any{"card"}, "created": 1793611800,
		}
	case strings.HasPrefix(eventType, "charge."):
		return map[string]any{
			"id": "ch_3QfakeSample0001", "object": "charge", "amount": 15000, "amount_captured": 15000,
			"amount_refunded": 0, "currency": "gbp", "customer": "cus_fakeSample01",
			"payment_intent": "pi_3QfakeSample0001", "paid": true, "refunded": false, "status": "succeeded",
			"metadata": meta, "livemode": false, "created": 1793611800,
		}
	case strings.HasPrefix(eventType, "refund."):
		return map[string]any{
			"id": "re_3QfakeSample0001", "object": "refund", "amount": 5000, "currency": "gbp",
			"charge": "ch_3QfakeSample0001", "payment_intent": "pi_3QfakeSample0001", "status": "succeeded",
			"reason": "requested_by_customer", "metadata": map[string]any{}, "created": 1793611800,
		}
	case strings.HasPrefix(eventType, "invoice."):
		return map[string]any{
			"id": "in_1QfakeSample0001", "object": "invoice", "amount_due": 15000, "amount_paid": 15000,
			"amount_remaining": 0, "currency": "gbp", "customer": "cus_fakeSample01", "number": "CLINIC-0001",
			"status": "paid", "metadata": meta, "livemode": false, "created": 1793611800,
		}
	case strings.HasPrefix(eventType, "checkout.session."):
		return map[string]any{
			"id": "cs_test_fakeSample0001", "object": "checkout.session", "amount_total": 15000, "currency": "gbp",
			"customer": "cus_fakeSample01", "payment_intent": "pi_3QfakeSample0001", "payment_status": "paid",
			"status": "complete", "metadata": meta, "livemode": false, "created": 1793611800,
		}
	default:
		return map[string]any{"id": "obj_fakeSample0001", "object": strings.SplitN(eventType, ".", 2)[0], "metadata": meta}
	}
}
