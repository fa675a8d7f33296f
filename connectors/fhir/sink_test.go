package fhir_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/fhir"
	"github.com/clinicbridge/clinicbridge/connectors/fhir/fhirfake"
)

// asDoc turns a resource into a mapped document as the pipeline hands it over.
func asDoc(t *testing.T, v any) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(mustJSON(t, v), &m))
	return m
}

func do(t *testing.T, s connectors.Sink, action string, doc map[string]any) (connectors.Receipt, error) {
	t.Helper()
	return s.Do(ctx(t), connectors.Delivery{Action: action, Document: doc, IdempotencyKey: "idem-1", DeliveryID: "dlv-1"})
}

func TestSinkContract(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	sink := connector(t, base, nil)
	connectortest.RunSink(t, connectortest.SinkHarness{
		Sink:       sink,
		Delivery:   connectors.Delivery{Action: fhir.ActionCreate, Document: asDoc(t, patient("MRN-77", "Contract"))},
		Script:     fake.Script,
		ExternalID: true,
		Secrets:    []string{apiToken, webhookSecret},
	})
}

// create_if_none_exist twice makes one resource; the second answer is 200
// with the existing one, and both report the same external id.
func TestCreateIfNoneExist(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	sink := connector(t, base, nil)
	doc := asDoc(t, patient("MRN-1001", "Once"))

	first, err := do(t, sink, fhir.ActionCreateIfNoneExist, doc)
	require.NoError(t, err)
	require.Equal(t, "201", first.Status)
	require.Regexp(t, `^Patient/[^/]+/_history/1$`, first.ExternalID)
	second, err := do(t, sink, fhir.ActionCreateIfNoneExist, doc)
	require.NoError(t, err)
	require.Equal(t, "200", second.Status)
	require.Equal(t, first.ExternalID, second.ExternalID)
	require.Equal(t, 1, fake.Count("Patient"))
	require.Equal(t, 1, fake.Writes())

	var posts []fhirfake.Recorded
	for _, r := range fake.Requests() {
		if r.Method == http.MethodPost {
			posts = append(posts, r)
		}
	}
	require.Len(t, posts, 2)
	require.Equal(t, "identifier=http%3A%2F%2Fclinic.example%2Fmrn%7CMRN-1001", posts[0].Header.Get("If-None-Exist"))
	require.Equal(t, "application/fhir+json", posts[0].Header.Get("Content-Type"))

	// _if_none_exist wins over the identifier and is not sent in the body.
	doc2 := asDoc(t, patient("MRN-2002", "Other"))
	doc2[fhir.FieldIfNoneExist] = "identifier=http://clinic.example/mrn|MRN-1001"
	rc, err := do(t, sink, fhir.ActionCreateIfNoneExist, doc2)
	require.NoError(t, err)
	require.Equal(t, first.ExternalID, rc.ExternalID, "matched the first patient")
	last := fake.Requests()[len(fake.Requests())-1]
	require.NotContains(t, string(last.Body), fhir.FieldIfNoneExist)

	// Without an identifier (or criteria) there is nothing to be idempotent on.
	noID := asDoc(t, patient("x", "NoID"))
	delete(noID, "identifier")
	_, err = do(t, sink, fhir.ActionCreateIfNoneExist, noID)
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))

	// Two matches: 412, permanent, with the reason.
	_, err = fake.Create(patient("DUP", "A"))
	require.NoError(t, err)
	_, err = fake.Create(patient("DUP", "B"))
	require.NoError(t, err)
	_, err = do(t, sink, fhir.ActionCreateIfNoneExist, asDoc(t, patient("DUP", "C")))
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	var ce *connectors.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, http.StatusPreconditionFailed, ce.HTTPStatus)
	require.Equal(t, "multiple-matches", ce.Code)
	require.Contains(t, err.Error(), "precondition failed")
}

func TestUpdateIfMatch(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	sink := connector(t, base, nil)
	stored, err := fake.Create(patient("MRN-5", "Before"))
	require.NoError(t, err)
	id := stored["id"].(string)

	// The right version: updated, version 2.
	doc := asDoc(t, stored)
	doc["name"] = []any{map[string]any{"family": "After"}}
	rc, err := do(t, sink, fhir.ActionUpdate, doc)
	require.NoError(t, err)
	require.Equal(t, "Patient/"+id+"/_history/2", rc.ExternalID)
	last := fake.Requests()[len(fake.Requests())-1]
	require.Equal(t, `W/"1"`, last.Header.Get("If-Match"))
	require.Equal(t, "/Patient/"+id, last.Path)

	// The same delivery again (its answer was lost): the server already has
	// this content, so the 412 is a success.
	rc2, err := do(t, sink, fhir.ActionUpdate, doc)
	require.NoError(t, err)
	require.Equal(t, rc.ExternalID, rc2.ExternalID)

	// A stale version with other content: 412, permanent.
	stale := asDoc(t, stored)
	stale["name"] = []any{map[string]any{"family": "Jane Stale-Value"}}
	_, err = do(t, sink, fhir.ActionUpdate, stale)
	require.Error(t, err)
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	var ce *connectors.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, http.StatusPreconditionFailed, ce.HTTPStatus)
	require.Contains(t, err.Error(), "precondition failed")
	connectortest.NoLeak(t, err, "Jane Stale-Value", id)
	require.Equal(t, 2, fake.Versions("Patient", id))

	// _version wins over meta.versionId.
	v2 := asDoc(t, stale)
	v2[fhir.FieldVersion] = "2"
	rc, err = do(t, sink, fhir.ActionUpdate, v2)
	require.NoError(t, err)
	require.Equal(t, "Patient/"+id+"/_history/3", rc.ExternalID)
	last = fake.Requests()[len(fake.Requests())-1]
	require.Equal(t, `W/"2"`, last.Header.Get("If-Match"))
	require.NotContains(t, string(last.Body), fhir.FieldVersion)

	// Without a version: no If-Match, last write wins.
	plain := asDoc(t, stale)
	delete(plain, "meta")
	plain["gender"] = "female"
	_, err = do(t, sink, fhir.ActionUpdate, plain)
	require.NoError(t, err)
	require.Empty(t, fake.Requests()[len(fake.Requests())-1].Header.Get("If-Match"))

	// No id: permanent before anything is sent.
	delete(plain, "id")
	_, err = do(t, sink, fhir.ActionUpdate, plain)
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
}

func TestUpsert(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	sink := connector(t, base, nil)
	doc := asDoc(t, appointment("booked"))
	rc, err := do(t, sink, fhir.ActionUpsert, doc)
	require.NoError(t, err)
	require.Equal(t, "201", rc.Status)
	require.Regexp(t, `^Appointment/[^/]+/_history/1$`, rc.ExternalID)
	id := strings.Split(rc.ExternalID, "/")[1]
	last := fake.Requests()[len(fake.Requests())-1]
	require.Equal(t, http.MethodPut, last.Method)
	require.Equal(t, "/Appointment", last.Path)
	require.Equal(t, "identifier=https%3A%2F%2Fbooking.example%2Fuid%7Cbk-booked", last.Query)

	doc["status"] = "cancelled"
	rc, err = do(t, sink, fhir.ActionUpsert, doc)
	require.NoError(t, err)
	require.Equal(t, "200", rc.Status)
	require.Equal(t, "Appointment/"+id+"/_history/2", rc.ExternalID)
	require.Equal(t, 1, fake.Count("Appointment"))
	got, _ := fake.Read("Appointment", id)
	require.Equal(t, "cancelled", got["status"])

	// Replaying the same upsert changes nothing.
	rc, err = do(t, sink, fhir.ActionUpsert, doc)
	require.NoError(t, err)
	require.Equal(t, "Appointment/"+id+"/_history/2", rc.ExternalID)
	require.Equal(t, 2, fake.Versions("Appointment", id))

	// Several matches: permanent 412.
	dup := appointment("pending")
	_, err = fake.Create(dup)
	require.NoError(t, err)
	_, err = fake.Create(dup)
	require.NoError(t, err)
	_, err = do(t, sink, fhir.ActionUpsert, asDoc(t, dup))
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	var ce *connectors.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, http.StatusPreconditionFailed, ce.HTTPStatus)
}

func TestTransaction(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	sink := connector(t, base, nil)
	pat := patient("MRN-TX", "Transaction")
	appt := appointment("booked")
	appt["participant"] = []any{map[string]any{"actor": map[string]any{"reference": "urn:uuid:pat-1"}, "status": "accepted"}}
	bundle := map[string]any{
		"resourceType": "Bundle", "type": "transaction",
		"entry": []any{
			map[string]any{"fullUrl": "urn:uuid:pat-1", "resource": pat,
				"request": map[string]any{"method": "POST", "url": "Patient", "ifNoneExist": "identifier=http://clinic.example/mrn|MRN-TX"}},
			map[string]any{"fullUrl": "urn:uuid:appt-1", "resource": appt,
				"request": map[string]any{"method": "PUT", "url": "Appointment?identifier=https://booking.example/uid|bk-booked"}},
		},
	}
	rc, err := do(t, sink, fhir.ActionTransaction, asDoc(t, bundle))
	require.NoError(t, err)
	ids := strings.Split(rc.ExternalID, ",")
	require.Len(t, ids, 2)
	require.Regexp(t, `^Patient/[^/]+/_history/1$`, ids[0])
	require.Regexp(t, `^Appointment/[^/]+/_history/1$`, ids[1])
	apptID := strings.Split(ids[1], "/")[1]
	got, ok := fake.Read("Appointment", apptID)
	require.True(t, ok)
	ref := got["participant"].([]any)[0].(map[string]any)["actor"].(map[string]any)["reference"]
	require.Equal(t, strings.Join(strings.Split(ids[0], "/")[:2], "/"), ref, "urn:uuid reference rewritten")

	// Replayed, the conditional entries change nothing.
	_, err = do(t, sink, fhir.ActionTransaction, asDoc(t, bundle))
	require.NoError(t, err)
	require.Equal(t, 1, fake.Count("Patient"))
	require.Equal(t, 1, fake.Count("Appointment"))

	// One bad entry rolls everything back: permanent, and the rejected
	// value the server echoes in its diagnostics stays out of the error.
	bad := appointment("Jane-Example-bad-status")
	bundle["entry"] = []any{
		map[string]any{"fullUrl": "urn:uuid:p2", "resource": patient("MRN-TX2", "Rollback"), "request": map[string]any{"method": "POST", "url": "Patient"}},
		map[string]any{"fullUrl": "urn:uuid:a2", "resource": bad, "request": map[string]any{"method": "POST", "url": "Appointment"}},
	}
	writes := fake.Writes()
	_, err = do(t, sink, fhir.ActionTransaction, asDoc(t, bundle))
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "code-invalid at Appointment.status")
	connectortest.NoLeak(t, err, "Jane-Example-bad-status", "Rollback")
	require.Equal(t, writes, fake.Writes(), "rolled back")
	require.Equal(t, 1, fake.Count("Patient"))

	// Not a transaction Bundle: permanent before sending.
	_, err = do(t, sink, fhir.ActionTransaction, asDoc(t, pat))
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
}

// OperationOutcome issue codes refine the status: transient codes retry,
// throttled is rate limited, 412 stays permanent whatever the code.
func TestOutcomeClasses(t *testing.T) {
	t.Parallel()
	fake, base := startFake(t)
	sink := connector(t, base, nil)
	doc := asDoc(t, patient("MRN-OO", "Outcome"))
	for _, tc := range []struct {
		f     fhirfake.Failure
		class connectors.Class
		after time.Duration
	}{
		{fhirfake.Failure{Status: 400, IssueCode: "transient"}, connectors.Transient, 0},
		{fhirfake.Failure{Status: 409, IssueCode: "lock-error"}, connectors.Transient, 0},
		{fhirfake.Failure{Status: 422, IssueCode: "timeout"}, connectors.Transient, 0},
		{fhirfake.Failure{Status: 400, IssueCode: "no-store"}, connectors.Transient, 0},
		{fhirfake.Failure{Status: 503, IssueCode: "throttled", RetryAfter: "7"}, connectors.RateLimited, 7 * time.Second},
		{fhirfake.Failure{Status: 429, RetryAfter: "4"}, connectors.RateLimited, 4 * time.Second},
		{fhirfake.Failure{Status: 500, IssueCode: "-"}, connectors.Transient, 0},
		{fhirfake.Failure{Status: 412, IssueCode: "transient"}, connectors.Permanent, 0},
		{fhirfake.Failure{Status: 409, IssueCode: "conflict"}, connectors.Permanent, 0},
		{fhirfake.Failure{Status: 400, IssueCode: "transient", Severity: "warning"}, connectors.Permanent, 0},
		{fhirfake.Failure{Status: 403, IssueCode: "transient"}, connectors.Auth, 0},
	} {
		fake.Fail(tc.f)
		_, err := do(t, sink, fhir.ActionCreate, doc)
		require.Error(t, err)
		require.Equal(t, tc.class, connectors.ClassOf(err), "%+v: %v", tc.f, err)
		require.Equal(t, tc.after, connectors.RetryAfterOf(err), "%+v", tc.f)
	}
	// A transient outcome once, then success.
	fake.Fail(fhirfake.Failure{Status: 500, IssueCode: "transient"})
	_, err := do(t, sink, fhir.ActionCreate, doc)
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	_, err = do(t, sink, fhir.ActionCreate, doc)
	require.NoError(t, err)
}

// Validation errors keep the issue code and element path; the server's
// diagnostics, which echo the rejected value, are left out.
func TestValidationErrorsDoNotLeak(t *testing.T) {
	t.Parallel()
	_, base := startFake(t)
	sink := connector(t, base, nil)
	a := appointment("Jane Example's status")
	_, err := do(t, sink, fhir.ActionCreate, asDoc(t, a))
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "error code-invalid at Appointment.status")
	values := asDoc(t, a)
	delete(values, "resourceType") // the type name is in the element path, and is no patient data
	connectortest.NoLeak(t, err, append(connectortest.StringLeaves(values, 4), apiToken)...)

	_, err = do(t, sink, "delete_everything", asDoc(t, a))
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	_, err = do(t, sink, fhir.ActionCreate, map[string]any{"status": "booked"})
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
}

// A timeout after the request was sent is ambiguous; a refused connection
// is transient.
func TestTransportErrors(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	slow := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) })
	sink := build(t, `{base_url: "`+slow+`", timeout: 200ms}`, connectors.Env{})
	_, err := do(t, sink, fhir.ActionCreate, asDoc(t, patient("MRN-T", "Timeout")))
	require.Equal(t, connectors.Ambiguous, connectors.ClassOf(err))
	connectortest.NoLeak(t, err, slow, "MRN-T")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	refused := build(t, `{base_url: "http://127.0.0.1:1"}`, connectors.Env{})
	_, err = refused.Do(ctx, connectors.Delivery{Action: fhir.ActionCreate, Document: asDoc(t, patient("MRN-T", "Timeout"))})
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
}
