package fhirfake_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors/fhir/fhirfake"
)

const token = "t0k3n"

type client struct {
	t    *testing.T
	base string
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func start(t *testing.T, opts ...fhirfake.Option) (*fhirfake.Server, *client) {
	t.Helper()
	fake := fhirfake.New(append([]fhirfake.Option{fhirfake.WithBearer(token)}, opts...)...)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	fake.SetBaseURL(srv.URL)
	return fake, &client{t: t, base: srv.URL}
}

func (c *client) do(method, path string, body any, hdr ...string) answer {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(c.t, err)
		rd = bytes.NewReader(b)
	}
	u := path
	if !strings.HasPrefix(path, "http") {
		u = c.base + path
	}
	req, err := http.NewRequest(method, u, rd)
	require.NoError(c.t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", fhirfake.ContentType)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		require.NoError(c.t, json.Unmarshal(b, &a.body), string(b))
	}
	return a
}

func issueCode(t *testing.T, a answer) string {
	t.Helper()
	require.Equal(t, "OperationOutcome", a.body["resourceType"])
	return a.body["issue"].([]any)[0].(map[string]any)["code"].(string)
}

func patient(mrn string) map[string]any {
	return map[string]any{"resourceType": "Patient", "identifier": []any{map[string]any{"system": "http://clinic.example/mrn", "value": mrn}},
		"name": []any{map[string]any{"family": "Example"}}}
}

func meta(a answer) (string, string) {
	m := a.body["meta"].(map[string]any)
	return m["versionId"].(string), m["lastUpdated"].(string)
}

func TestCRUDAndVersions(t *testing.T) {
	t.Parallel()
	_, c := start(t)
	a := c.do("POST", "/Patient", patient("1"))
	require.Equal(t, http.StatusCreated, a.status)
	id := a.body["id"].(string)
	require.Equal(t, c.base+"/Patient/"+id+"/_history/1", a.header.Get("Location"))
	require.Equal(t, `W/"1"`, a.header.Get("ETag"))
	require.NotEmpty(t, a.header.Get("Last-Modified"))
	v, lu := meta(a)
	require.Equal(t, "1", v)
	_, err := time.Parse(time.RFC3339Nano, lu)
	require.NoError(t, err)

	r := c.do("GET", "/Patient/"+id, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, `W/"1"`, r.header.Get("ETag"))

	upd := r.body
	upd["gender"] = "female"
	u := c.do("PUT", "/Patient/"+id, upd, "If-Match", `W/"1"`)
	require.Equal(t, http.StatusOK, u.status)
	require.Equal(t, `W/"2"`, u.header.Get("ETag"))
	v2, lu2 := meta(u)
	require.Equal(t, "2", v2)
	require.Greater(t, lu2, lu)

	stale := c.do("PUT", "/Patient/"+id, upd, "If-Match", `W/"1"`)
	require.Equal(t, http.StatusPreconditionFailed, stale.status)
	require.Equal(t, "conflict", issueCode(t, stale))

	same := c.do("PUT", "/Patient/"+id, upd)
	require.Equal(t, http.StatusOK, same.status)
	require.Equal(t, `W/"2"`, same.header.Get("ETag"), "an update that changes nothing makes no version")

	old := c.do("GET", "/Patient/"+id+"/_history/1", nil)
	require.Equal(t, http.StatusOK, old.status)
	require.Nil(t, old.body["gender"])
	require.Equal(t, http.StatusNotFound, c.do("GET", "/Patient/"+id+"/_history/9", nil).status)

	mismatch := c.do("PUT", "/Patient/other", upd)
	require.Equal(t, http.StatusBadRequest, mismatch.status)
	noID := patient("2")
	require.Equal(t, http.StatusBadRequest, c.do("PUT", "/Patient/x1", noID).status)
	noID["id"] = "x1"
	require.Equal(t, http.StatusCreated, c.do("PUT", "/Patient/x1", noID).status, "update as create")

	require.Equal(t, http.StatusNoContent, c.do("DELETE", "/Patient/"+id, nil).status)
	gone := c.do("GET", "/Patient/"+id, nil)
	require.Equal(t, http.StatusGone, gone.status)
	require.Equal(t, "deleted", issueCode(t, gone))

	wrongType := c.do("POST", "/Patient", map[string]any{"resourceType": "Observation"})
	require.Equal(t, http.StatusBadRequest, wrongType.status)
	bad := c.do("POST", "/Appointment", map[string]any{"resourceType": "Appointment", "status": "nope", "participant": []any{}})
	require.Equal(t, http.StatusBadRequest, bad.status)
	require.Equal(t, "code-invalid", issueCode(t, bad))

	minimal := c.do("POST", "/Patient", patient("3"), "Prefer", "return=minimal")
	require.Equal(t, http.StatusCreated, minimal.status)
	require.Nil(t, minimal.body)
	require.NotEmpty(t, minimal.header.Get("Location"))
}

func TestConditionalOperations(t *testing.T) {
	t.Parallel()
	fake, c := start(t)
	crit := "identifier=" + url.QueryEscape("http://clinic.example/mrn|A")
	first := c.do("POST", "/Patient", patient("A"), "If-None-Exist", crit)
	require.Equal(t, http.StatusCreated, first.status)
	again := c.do("POST", "/Patient", patient("A"), "If-None-Exist", "identifier=http://clinic.example/mrn|A")
	require.Equal(t, http.StatusOK, again.status)
	require.Equal(t, first.body["id"], again.body["id"])
	require.Equal(t, 1, fake.Count("Patient"))

	c.do("POST", "/Patient", patient("A"))
	multi := c.do("POST", "/Patient", patient("A"), "If-None-Exist", crit)
	require.Equal(t, http.StatusPreconditionFailed, multi.status)
	require.Equal(t, "multiple-matches", issueCode(t, multi))
	require.Equal(t, http.StatusBadRequest, c.do("POST", "/Patient", patient("A"), "If-None-Exist", "nonsense=1").status)

	created := c.do("PUT", "/Patient?"+url.Values{"identifier": {"http://clinic.example/mrn|B"}}.Encode(), patient("B"))
	require.Equal(t, http.StatusCreated, created.status)
	p := patient("B")
	p["gender"] = "other"
	updated := c.do("PUT", "/Patient?identifier=http://clinic.example/mrn|B", p)
	require.Equal(t, http.StatusOK, updated.status)
	require.Equal(t, created.body["id"], updated.body["id"])
	require.Equal(t, `W/"2"`, updated.header.Get("ETag"))
	require.Equal(t, http.StatusPreconditionFailed, c.do("PUT", "/Patient?identifier=A", patient("A")).status)
}

func TestSearchAndPaging(t *testing.T) {
	t.Parallel()
	fake, c := start(t)
	var times []string
	for i := range 45 {
		a := c.do("POST", "/Appointment", map[string]any{
			"resourceType": "Appointment", "status": []string{"booked", "cancelled", "pending"}[i%3],
			"participant": []any{map[string]any{"actor": map[string]any{"reference": "Patient/p" + string(rune('0'+i%2))}}},
		})
		_, lu := meta(a)
		times = append(times, lu)
	}
	// identifier token forms
	_, err := fake.Create(patient("T-1"))
	require.NoError(t, err)
	for q, n := range map[string]int{
		"identifier=http://clinic.example/mrn|T-1": 1, "identifier=T-1": 1, "identifier=http://clinic.example/mrn|": 1,
		"identifier=|T-1": 0, "identifier=other|T-1": 0,
	} {
		require.Equal(t, float64(n), c.do("GET", "/Patient?"+q, nil).body["total"], q)
	}
	require.Equal(t, float64(15), c.do("GET", "/Appointment?status=booked", nil).body["total"])
	require.Equal(t, float64(30), c.do("GET", "/Appointment?status=booked,pending", nil).body["total"])
	require.Equal(t, float64(23), c.do("GET", "/Appointment?patient=Patient/p0", nil).body["total"])
	require.Equal(t, float64(22), c.do("GET", "/Appointment?patient=p1&_count=5", nil).body["total"])

	// _lastUpdated compares with the value's precision.
	gt := c.do("GET", "/Appointment?"+url.Values{"_lastUpdated": {"gt" + times[9]}}.Encode(), nil)
	require.Equal(t, float64(35), gt.body["total"])
	ge := c.do("GET", "/Appointment?"+url.Values{"_lastUpdated": {"ge" + times[9]}}.Encode(), nil)
	require.Equal(t, float64(36), ge.body["total"])
	lt := c.do("GET", "/Appointment?"+url.Values{"_lastUpdated": {"lt" + times[9]}}.Encode(), nil)
	require.Equal(t, float64(9), lt.body["total"])
	day := c.do("GET", "/Appointment?_lastUpdated=gt"+times[0][:10], nil)
	require.Equal(t, float64(0), day.body["total"], "gt a day excludes that whole day")

	// Paging: opaque tokens, every resource once, in _lastUpdated order.
	u := "/Appointment?_sort=-_lastUpdated&_count=20"
	var seen []string
	pages := 0
	for u != "" {
		p := c.do("GET", u, nil)
		require.Equal(t, http.StatusOK, p.status)
		require.Equal(t, "searchset", p.body["type"])
		pages++
		for _, e := range p.body["entry"].([]any) {
			res := e.(map[string]any)["resource"].(map[string]any)
			_, lu := meta(answer{body: res})
			seen = append(seen, lu)
		}
		u = ""
		for _, l := range p.body["link"].([]any) {
			if l.(map[string]any)["relation"] == "next" {
				u = l.(map[string]any)["url"].(string)
				next, err := url.Parse(u)
				require.NoError(t, err)
				require.Len(t, next.Query(), 1, "only an opaque token")
				require.Regexp(t, `^[0-9a-f]{32}$`, next.Query().Get("_getpages"))
			}
		}
	}
	require.Equal(t, 3, pages)
	require.Len(t, seen, 45)
	for i := 1; i < len(seen); i++ {
		require.Less(t, seen[i], seen[i-1], "descending")
	}
	require.Equal(t, http.StatusGone, c.do("GET", "/?_getpages=nope", nil).status)

	unknown := c.do("GET", "/Appointment?colour=red", nil)
	require.Equal(t, http.StatusBadRequest, unknown.status)
	require.Equal(t, "not-supported", issueCode(t, unknown))
}

func TestHistory(t *testing.T) {
	t.Parallel()
	_, c := start(t)
	a := c.do("POST", "/Patient", patient("H"))
	id := a.body["id"].(string)
	_, since := meta(a)
	p := a.body
	p["gender"] = "male"
	c.do("PUT", "/Patient/"+id, p)
	c.do("DELETE", "/Patient/"+id, nil)
	h := c.do("GET", "/Patient/_history?"+url.Values{"_since": {since}}.Encode(), nil)
	require.Equal(t, "history", h.body["type"])
	entries := h.body["entry"].([]any)
	require.Len(t, entries, 3)
	methods := []string{}
	for _, e := range entries {
		methods = append(methods, e.(map[string]any)["request"].(map[string]any)["method"].(string))
	}
	require.Equal(t, []string{"DELETE", "PUT", "POST"}, methods, "newest first")
	require.Nil(t, entries[0].(map[string]any)["resource"])
	require.Len(t, c.do("GET", "/Patient/"+id+"/_history", nil).body["entry"], 3)
	require.Len(t, c.do("GET", "/_history", nil).body["entry"], 3)
}

func TestTransactionAndBatch(t *testing.T) {
	t.Parallel()
	fake, c := start(t)
	tx := map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": []any{
		map[string]any{"fullUrl": "urn:uuid:p", "resource": patient("TX"), "request": map[string]any{"method": "POST", "url": "Patient"}},
		map[string]any{"resource": map[string]any{"resourceType": "Observation", "status": "final", "code": map[string]any{"text": "x"},
			"subject": map[string]any{"reference": "urn:uuid:p"}}, "request": map[string]any{"method": "POST", "url": "Observation"}},
	}}
	r := c.do("POST", "/", tx)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "transaction-response", r.body["type"])
	loc := r.body["entry"].([]any)[0].(map[string]any)["response"].(map[string]any)["location"].(string)
	require.Regexp(t, `^Patient/[^/]+/_history/1$`, loc)
	require.Equal(t, 1, fake.Count("Observation"))

	// A failing entry rolls back the others.
	tx["entry"] = append(tx["entry"].([]any), map[string]any{"resource": map[string]any{"resourceType": "Observation"},
		"request": map[string]any{"method": "POST", "url": "Observation"}})
	writes := fake.Writes()
	fail := c.do("POST", "/", tx)
	require.Equal(t, http.StatusBadRequest, fail.status)
	require.Equal(t, writes, fake.Writes())
	require.Equal(t, 1, fake.Count("Patient"))

	// A batch applies what it can.
	tx["type"] = "batch"
	b := c.do("POST", "/", tx)
	require.Equal(t, http.StatusOK, b.status)
	statuses := []string{}
	for _, e := range b.body["entry"].([]any) {
		statuses = append(statuses, e.(map[string]any)["response"].(map[string]any)["status"].(string))
	}
	require.Equal(t, []string{"201 Created", "201 Created", "400 Bad Request"}, statuses)
}

func TestAuthAndFailures(t *testing.T) {
	t.Parallel()
	fake, c := start(t)
	req, _ := http.NewRequest("GET", c.base+"/Patient", nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, err = http.Get(c.base + "/metadata")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	fake.Fail(fhirfake.Failure{Status: 429, RetryAfter: "2", Method: "POST", Times: 2})
	require.Equal(t, http.StatusOK, c.do("GET", "/Patient", nil).status, "only POSTs fail")
	a := c.do("POST", "/Patient", patient("F"))
	require.Equal(t, 429, a.status)
	require.Equal(t, "2", a.header.Get("Retry-After"))
	require.Equal(t, "throttled", issueCode(t, a))
	require.Equal(t, 429, c.do("POST", "/Patient", patient("F")).status)
	require.Equal(t, http.StatusCreated, c.do("POST", "/Patient", patient("F")).status)

	fake.Script(503, 0)
	s := c.do("GET", "/Patient", nil)
	require.Equal(t, 503, s.status)
	require.Equal(t, "transient", issueCode(t, s))
}

// A classic R4 Subscription created through the API is live: it notifies
// with its channel headers, the resource PUT to [endpoint]/Type/id.
func TestClassicSubscriptionResource(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []*http.Request
	var bodies [][]byte
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, bodies = append(got, r), append(bodies, b)
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	fake, c := start(t)
	sub := c.do("POST", "/Subscription", map[string]any{
		"resourceType": "Subscription", "status": "requested", "reason": "test", "criteria": "Appointment?status=booked",
		"channel": map[string]any{"type": "rest-hook", "endpoint": hook.URL + "/hooks/ehr", "payload": "application/fhir+json",
			"header": []any{"Authorization: Bearer whk"}},
	})
	require.Equal(t, http.StatusCreated, sub.status)
	appt := func(status string) map[string]any {
		return map[string]any{"resourceType": "Appointment", "status": status, "participant": []any{map[string]any{"status": "accepted"}}}
	}
	c.do("POST", "/Appointment", appt("pending"))
	created := c.do("POST", "/Appointment", appt("booked"))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 1, "criteria filter on status")
	require.Equal(t, http.MethodPut, got[0].Method)
	require.Equal(t, "/hooks/ehr/Appointment/"+created.body["id"].(string), got[0].URL.Path)
	require.Equal(t, "Bearer whk", got[0].Header.Get("Authorization"))
	require.Contains(t, string(bodies[0]), `"versionId":"1"`)
	require.Len(t, fake.Notifications(), 1)
}
