package xero_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/stripe/stripefake"
	"github.com/clinicbridge/clinicbridge/mapping"
)

// TestDocExampleStripeToXero runs the mapping printed in docs/connectors/xero.md
// on a Stripe payment_intent.succeeded from the Stripe fake and delivers the
// result to the Xero fake: one payment against the invoice.
func TestDocExampleStripeToXero(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/connectors/xero.md")
	require.NoError(t, err)
	const marker = "# mappings/xero-payment.yaml\n"
	i := strings.Index(string(doc), marker)
	require.GreaterOrEqual(t, i, 0, "the doc shows the mapping")
	src := string(doc)[i:]
	src = src[:strings.Index(src, "```")]
	prog, err := mapping.Compile([]byte(src), "xero.md")
	require.NoError(t, err)

	b := setup(t)
	invoiceID := b.fake.SeedInvoice(tenant, "Jane Example", 150)
	obj := stripefake.SampleObject("payment_intent.succeeded")
	obj["metadata"].(map[string]any)["xero_invoice_id"] = invoiceID
	ev, err := stripefake.New().Emit(context.Background(), "payment_intent.succeeded", obj)
	require.NoError(t, err)
	var payload map[string]any
	require.NoError(t, json.Unmarshal(ev.Body, &payload))
	out, err := prog.Apply(map[string]any{
		"event":   map[string]any{"id": ev.ID, "type": ev.Type, "source": "payments"},
		"payload": payload,
	})
	require.NoError(t, err)

	rc, err := b.sink(t).Do(ctx30(t), connectors.Delivery{Action: "create_payment", Document: out, IdempotencyKey: ev.ID + ":stripe-payment-to-xero"})
	require.NoError(t, err)
	pays := b.fake.Payments(tenant)
	require.Len(t, pays, 1)
	require.Equal(t, rc.ExternalID, pays[0]["PaymentID"])
	require.Equal(t, 150.0, pays[0]["Amount"])
	require.Equal(t, "pi_3QfakeSample0001", pays[0]["Reference"])
	require.Equal(t, "PAID", b.fake.Invoices(tenant)[0]["Status"])
}
